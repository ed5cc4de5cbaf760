"""The migration that introduces name keys normalizes existing rows and
keeps every row, even two that become the same name."""

from __future__ import annotations

import unicodedata

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

NFC_CAFE = unicodedata.normalize("NFC", "Café")
NFD_CAFE = unicodedata.normalize("NFD", "Café")


@pytest.mark.django_db(transaction=True)
def test_name_key_migration_normalizes_and_keeps_colliding_rows():
    before, after = [("teams", "0002_move")], [("teams", "0004_name_key_unique")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        apps = executor.loader.project_state(before).apps
        Team, Player = apps.get_model("teams", "Team"), apps.get_model("teams", "Player")
        first = Team.objects.create(name=NFC_CAFE)
        second = Team.objects.create(name=f" {NFD_CAFE} ")
        Player.objects.create(team=first, name=unicodedata.normalize("NFD", "José"), position="GK")
        Player.objects.create(team=first, name="José", position="ST")

        executor = MigrationExecutor(connection)
        executor.migrate(after)
        apps = executor.loader.project_state(after).apps
        Team, Player = apps.get_model("teams", "Team"), apps.get_model("teams", "Player")

        assert list(Team.objects.order_by("pk").values_list("name", "name_key")) == [
            (NFC_CAFE, "café"),
            (f"{NFC_CAFE} ({second.pk})", f"café ({second.pk})"),
        ]
        names = list(Player.objects.order_by("pk").values_list("name", flat=True))
        assert len(names) == 2 and names[0] == "José" and names[1].startswith("José (")
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
