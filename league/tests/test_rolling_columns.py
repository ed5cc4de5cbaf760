"""A column a release adds must take the writes of the release before it: during a rolling
upgrade the new image migrates while the old one still runs (docs/DEPLOY.md, "Swarm"), and
the old code inserts rows without the new column. Each such column has a database default."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from fixtures.models import TeamReplica as FixturesTeam
from teams.models import Team

pytestmark = pytest.mark.django_db

# The columns added since the release the swarm upgrade starts from (docker/PREVIOUS_RELEASE).
ADDED = [(Team, "short_name"), (FixturesTeam, "short_name")]


def insert_as_the_previous_release(instance, added: str) -> None:
    """INSERT ``instance`` naming every column but ``added``, as code that predates it does."""
    fields = [f for f in instance._meta.concrete_fields if not f.primary_key and f.name != added]
    now = timezone.now()
    for f in fields:
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            setattr(instance, f.attname, now)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    values = [f.get_db_prep_save(getattr(instance, f.attname), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {instance._meta.db_table} ({columns}) VALUES ({marks})", values)


@pytest.mark.parametrize(("model", "column"), ADDED, ids=lambda v: getattr(v, "__name__", v))
def test_a_row_written_without_the_new_column_is_stored(model, column):
    if model is Team:
        instance = Team(name="Old Release Town", name_key="old release town")
    else:
        instance = FixturesTeam(team_id=987654, name="Old Release Town", name_sequence=1, sequence=1)
    insert_as_the_previous_release(instance, column)
    assert model.objects.filter(name="Old Release Town").values_list(column, flat=True).get() == ""
