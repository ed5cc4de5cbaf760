"""The team replica on the shared shape (kernel/replica.py): ``deleted`` (a flag) becomes
``deleted_at`` (when). A tombstone keeps being one: its ``deleted_at`` is its last change
(``updated_at``), the best time this replica knows; no row is dropped. The flag goes in 0005 (its own transaction)."""

from django.db import migrations, models


def deleted_at_from_flag(apps, schema_editor):
    TeamReplica = apps.get_model("transfers", "TeamReplica")
    TeamReplica.objects.filter(deleted=True).update(deleted_at=models.F("updated_at"))


def flag_from_deleted_at(apps, schema_editor):
    TeamReplica = apps.get_model("transfers", "TeamReplica")
    TeamReplica.objects.filter(deleted_at__isnull=False).update(deleted=True)


class Migration(migrations.Migration):

    dependencies = [
        ("transfers", "0003_roles"),
    ]

    operations = [
        migrations.AddField(
            model_name="teamreplica",
            name="deleted_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(deleted_at_from_flag, flag_from_deleted_at),
    ]
