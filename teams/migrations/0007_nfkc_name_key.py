"""Name keys under NFKC_Casefold (kernel.names.name_key): fullwidth "ＡＢＣ" and "ABC" are
the same name. Every key is computed again; two existing rows whose names now collide keep
their rows: the later one (higher id) is renamed "<name> (<id>)" and reported on stdout.
The unique constraints are lifted while the keys change, so no row trips over another's
old key."""

from django.db import migrations, models

from kernel.frozen import name_key_nfkc_casefold as name_key

TEAM_UNIQUE = models.UniqueConstraint(
    fields=("name_key",),
    name="team_name_key_unique",
    violation_error_message="A team with this name already exists (names are compared ignoring case).",
)
PLAYER_UNIQUE = models.UniqueConstraint(
    fields=("team", "name_key"),
    name="player_name_key_unique_in_team",
    violation_error_message="This team already has a player with this name (names are compared ignoring case).",
)


def rekey(rows, scope):
    seen = set()
    for row in rows:
        name = row.name
        key = (scope(row), name_key(name))
        if key in seen:
            name = f"{name} ({row.pk})"
            key = (scope(row), name_key(name))
            print(f"\n  renamed {row._meta.model_name} {row.pk} to {name!r}: its name collided under the new key")
        seen.add(key)
        if (row.name, row.name_key) != (name, key[1]):
            row.name, row.name_key = name, key[1]
            row.save(update_fields=["name", "name_key"])


def forwards(apps, schema_editor):
    rekey(apps.get_model("teams", "Team").objects.order_by("pk"), scope=lambda row: None)
    rekey(apps.get_model("teams", "Player").objects.order_by("team_id", "pk"), scope=lambda row: row.team_id)


class Migration(migrations.Migration):
    dependencies = [("teams", "0006_roles")]

    operations = [
        migrations.RemoveConstraint(model_name="team", name="team_name_key_unique"),
        migrations.RemoveConstraint(model_name="player", name="player_name_key_unique_in_team"),
        migrations.RunPython(forwards, migrations.RunPython.noop),
        migrations.AddConstraint(model_name="team", constraint=TEAM_UNIQUE),
        migrations.AddConstraint(model_name="player", constraint=PLAYER_UNIQUE),
    ]
