from django.conf import settings
from django.db import migrations, models

# Every service's row exists from the start: a writer's ``SELECT … FOR SHARE`` must have a
# row to lock, or a pause could not wait for the writers already under way.


def create_rows(apps, schema_editor):
    ServiceGate = apps.get_model("events", "ServiceGate")
    for service in settings.SERVICES:
        ServiceGate.objects.using(schema_editor.connection.alias).get_or_create(service=service)


class Migration(migrations.Migration):
    dependencies = [("events", "0004_outbox_failure")]

    operations = [
        migrations.CreateModel(
            name="ServiceGate",
            fields=[
                ("service", models.CharField(max_length=50, primary_key=True, serialize=False)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("open", "open"),
                            ("paused", "paused (being moved)"),
                            ("moved", "moved to its own database"),
                        ],
                        default="open",
                        max_length=10,
                    ),
                ),
                ("changed_at", models.DateTimeField(auto_now=True)),
                ("note", models.CharField(blank=True, max_length=300)),
            ],
        ),
        migrations.RunPython(create_rows, migrations.RunPython.noop),
    ]
