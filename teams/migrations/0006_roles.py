"""Roles: the league office's groups get teams's permissions.

The mapping is written out here, frozen as migrations must be; ``teams/roles.py`` holds the
same declaration for the running code, and a test keeps the two equal. See
kernel/roles.py for the roles and why each app grants its own permissions.
"""

from django.db import migrations

from kernel.frozen import grant_roles as grant
from kernel.frozen import revoke_roles as revoke

ROLES = {'League staff': ['add_team',
                  'change_team',
                  'delete_team',
                  'view_team',
                  'add_player',
                  'change_player',
                  'delete_player',
                  'view_player'],
 'Transfer desk': ['view_team', 'view_player'],
 'Read-only': ['view_team', 'view_player'],
 'Service accounts': ['view_team', 'view_player', 'export_team']}


def forwards(apps, schema_editor):
    grant(apps, "teams", ROLES)


def backwards(apps, schema_editor):
    revoke(apps, "teams", ROLES)


class Migration(migrations.Migration):
    dependencies = [
        ("teams", "0005_export_permission"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
