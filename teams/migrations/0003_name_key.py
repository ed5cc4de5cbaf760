"""Names compared on their normalized, case-folded key.

Adds ``name_key`` to teams and players, normalizes every existing name the way
``kernel.names.clean_name`` does (NFC, white space collapsed) and fills its key; the
unique constraints on the key follow in 0003. Control and format characters already
stored are kept (removing them would change a name people see): only new names refuse
them. Two existing rows that become the same name after normalization keep their rows:
the later one (higher id) is renamed "<name> (<id>)" and reported on stdout; no data is
dropped.
"""

import unicodedata

from django.db import migrations, models

from kernel.frozen import name_key_nfc_casefold as name_key


def _normalize(name):
    return " ".join(unicodedata.normalize("NFC", name).split()) or name


def _dedupe(rows, scope):
    """Normalize and key each row; rename the later of two rows whose keys collide within
    the same ``scope(row)``."""
    seen = set()
    for row in rows:
        name = _normalize(row.name)
        key = (scope(row), name_key(name))
        if key in seen:
            name = f"{name} ({row.pk})"
            key = (scope(row), name_key(name))
            print(f"\n  renamed {row._meta.model_name} {row.pk} to {name!r}: its name collided after normalization")
        seen.add(key)
        row.name = name
        row.name_key = key[1]
        row.save(update_fields=["name", "name_key"])


def forwards(apps, schema_editor):
    Team = apps.get_model("teams", "Team")
    Player = apps.get_model("teams", "Player")
    _dedupe(Team.objects.order_by("pk"), scope=lambda row: None)
    _dedupe(Player.objects.order_by("team_id", "pk"), scope=lambda row: row.team_id)


class Migration(migrations.Migration):
    dependencies = [("teams", "0002_move")]

    operations = [
        migrations.RemoveConstraint(model_name="team", name="team_name_unique_ci"),
        migrations.RemoveConstraint(model_name="player", name="player_name_unique_in_team_ci"),
        migrations.AddField(
            model_name="team",
            name="name_key",
            field=models.CharField(default="", editable=False, max_length=300),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="player",
            name="name_key",
            field=models.CharField(default="", editable=False, max_length=300),
            preserve_default=False,
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
