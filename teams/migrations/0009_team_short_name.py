from django.db import migrations, models

from kernel import frozen


def derive(apps, schema_editor):
    Team = apps.get_model("teams", "Team")
    for team in Team.objects.filter(short_name="").only("id", "name").iterator():
        Team.objects.filter(pk=team.pk).update(short_name=frozen.short_name_v1(team.name))


class Migration(migrations.Migration):
    dependencies = [("teams", "0008_move_asked_at")]

    operations = [
        migrations.AddField(
            model_name="team",
            name="short_name",
            field=models.CharField(
                blank=True,
                db_default="",
                default="",
                help_text="2 to 5 letters or digits (upper-cased), e.g. RED; left empty, it is derived from the name.",
                max_length=5,
            ),
        ),
        migrations.RunPython(derive, migrations.RunPython.noop),
    ]
