from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("teams", "0003_name_key")]

    operations = [
        migrations.AddConstraint(
            model_name="team",
            constraint=models.UniqueConstraint(
                fields=("name_key",),
                name="team_name_key_unique",
                violation_error_message="A team with this name already exists (names are compared ignoring case).",
            ),
        ),
        migrations.AddConstraint(
            model_name="player",
            constraint=models.UniqueConstraint(
                fields=("team", "name_key"),
                name="player_name_key_unique_in_team",
                violation_error_message="This team already has a player with this name (names are compared ignoring case).",
            ),
        ),
    ]
