"""Roles: the league office's groups get transfers's permissions.

The mapping is written out here, frozen as migrations must be; ``transfers/roles.py`` holds the
same declaration for the running code, and a test keeps the two equal. See
kernel/roles.py for the roles and why each app grants its own permissions.
"""

from django.db import migrations

from kernel.frozen import grant_roles as grant
from kernel.frozen import revoke_roles as revoke

ROLES = {'League staff': ['view_transfer', 'view_teamreplica', 'view_playerreplica', 'view_teamssync'],
 'Transfer desk': ['view_transfer',
                   'view_teamreplica',
                   'view_playerreplica',
                   'view_teamssync',
                   'add_transfer',
                   'change_transfer',
                   'cancel_transfer'],
 'Read-only': ['view_transfer', 'view_teamreplica', 'view_playerreplica', 'view_teamssync']}


def forwards(apps, schema_editor):
    grant(apps, "transfers", ROLES)


def backwards(apps, schema_editor):
    revoke(apps, "transfers", ROLES)


class Migration(migrations.Migration):
    dependencies = [
        ("transfers", "0002_saga_deadline"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
