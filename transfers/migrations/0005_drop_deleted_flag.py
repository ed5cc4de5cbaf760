import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("transfers", "0004_replicated_team"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="teamreplica",
            name="deleted",
        ),
        migrations.AlterField(
            model_name="teamreplica",
            name="team_id",
            field=models.PositiveBigIntegerField(
                help_text="The team's id in the teams service.",
                unique=True,
                validators=[django.core.validators.MinValueValidator(1)],
            ),
        ),
    ]
