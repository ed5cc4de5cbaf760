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


@pytest.mark.django_db(transaction=True)
def test_nfkc_key_migration_rekeys_and_keeps_rows_that_now_collide():
    """Fullwidth "ＡＢＣ" and "ABC" were two teams under the old key; under NFKC_Casefold
    they collide: the later one is renamed, no row is lost, every key is the new one."""
    before, after = [("teams", "0006_roles")], [("teams", "0007_nfkc_name_key")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        apps = executor.loader.project_state(before).apps
        Team, Player = apps.get_model("teams", "Team"), apps.get_model("teams", "Player")
        # Keys as the old rule wrote them (NFC, case-folded).
        first = Team.objects.create(name="ABC", name_key="abc")
        second = Team.objects.create(name="\uff21\uff22\uff23", name_key="\uff41\uff42\uff43")
        Player.objects.create(team=first, name="Team \u2460", name_key="team \u2460", position="GK")
        Player.objects.create(team=first, name="team 1", name_key="team 1", position="ST")

        executor = MigrationExecutor(connection)
        executor.migrate(after)
        apps = executor.loader.project_state(after).apps
        Team, Player = apps.get_model("teams", "Team"), apps.get_model("teams", "Player")

        assert list(Team.objects.order_by("pk").values_list("name", "name_key")) == [
            ("ABC", "abc"),
            (f"\uff21\uff22\uff23 ({second.pk})", f"abc ({second.pk})"),
        ]
        assert [key for key in Player.objects.order_by("pk").values_list("name_key", flat=True)][0] == "team 1"
        assert Player.objects.count() == 2
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_short_name_migration_gives_every_team_the_derived_short_name():
    """Teams from before short names get the one a v1 event's upcaster gives them, so the
    teams service and the replicas that read its old events agree."""
    from events.catalogue import derive_short_name

    before, after = [("teams", "0008_move_asked_at")], [("teams", "0009_team_short_name")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        apps = executor.loader.project_state(before).apps
        Team = apps.get_model("teams", "Team")
        for name in ("Reds", "Queens Park Rangers", "Real Madrid"):
            Team.objects.create(name=name, name_key=name.casefold())

        executor = MigrationExecutor(connection)
        executor.migrate(after)
        Team = executor.loader.project_state(after).apps.get_model("teams", "Team")

        rows = list(Team.objects.order_by("pk").values_list("name", "short_name"))
        assert rows == [("Reds", "RED"), ("Queens Park Rangers", "QPR"), ("Real Madrid", "RMA")]
        assert all(short == derive_short_name(name) for name, short in rows)
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
