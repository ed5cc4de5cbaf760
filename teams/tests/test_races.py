"""Stale requests and concurrent writers: every teams service locks the rows it decides on
and re-checks them inside its transaction, so a request that lost a race gets a clear 404
and nothing is written (no resurrected team, no player deleted from the wrong squad, no
foreign-key failure at COMMIT)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections, transaction
from rest_framework.test import APIClient

from events.models import OutboxMessage
from teams import services
from teams.factories import PlayerFactory, TeamFactory
from teams.models import Player, Team


def types() -> list[str]:
    return list(OutboxMessage.objects.order_by("id").values_list("type", flat=True))


# --- stale requests (any database) --------------------------------------------------------


@pytest.mark.django_db
def test_removing_a_player_from_a_team_he_left_is_404_and_removes_nobody():
    player = PlayerFactory()
    other = TeamFactory()

    with pytest.raises(services.PlayerNotFound, match=f"Player {player.id} is not in team {other.id}."):
        services.player_remove(team_id=other.id, player_id=player.id)

    assert Player.objects.filter(pk=player.pk, team=player.team).exists()
    assert types() == []


@pytest.mark.django_db
def test_renaming_a_team_deleted_meanwhile_does_not_bring_it_back():
    """The caller loaded the team before another request deleted it: a plain save() would
    INSERT the row again and publish ``team.renamed`` for a deleted team."""
    team = services.team_create(name="Ashford")
    stale = Team.objects.get(pk=team.pk)
    services.team_delete(team=team)

    with pytest.raises(services.TeamNotFound, match=f"Team {team.pk} does not exist."):
        services.team_rename(team=stale, name="Ashford Town")

    assert not Team.objects.filter(pk=team.pk).exists()
    assert types() == ["team.created", "team.deleted"]


@pytest.mark.django_db
def test_deleting_a_team_twice_publishes_one_event():
    team = services.team_create(name="Bexley")
    stale = Team.objects.get(pk=team.pk)
    services.team_delete(team=team)

    with pytest.raises(services.TeamNotFound):
        services.team_delete(team=stale)

    assert types() == ["team.created", "team.deleted"]


@pytest.mark.django_db
def test_adding_a_player_to_a_team_deleted_meanwhile_is_refused():
    team = services.team_create(name="Crayford")
    stale = Team.objects.get(pk=team.pk)
    services.team_delete(team=team)

    with pytest.raises(services.TeamNotFound):
        services.player_add(team=stale, name="Dee", position="GK")

    assert not Player.objects.exists()
    assert types() == ["team.created", "team.deleted"]


@pytest.mark.django_db
def test_a_stale_delete_after_a_transfer_is_404_and_no_replica_keeps_a_ghost(bus, auth_client, monkeypatch):
    """DELETE /api/teams/A/players/P/ while the saga moves P from A to B: the request is
    about P in A, which no longer holds. It answers 404, P stays in B, and the transfers
    replica agrees with the teams service."""
    reds = services.team_create(name="Reds", players=[{"name": "Ann Smith", "position": "GK"}])
    blues = services.team_create(name="Blues")
    ann = reds.players.get()
    bus.drain()

    remove = services.player_remove

    def moved_meanwhile(**kwargs):
        # The view has parsed the request; the saga moves the player before the delete runs.
        with transaction.atomic():
            services.move_apply(transfer_id=7, player_id=ann.id, from_team_id=reds.id, to_team_id=blues.id)
        return remove(**kwargs)

    monkeypatch.setattr(services, "player_remove", moved_meanwhile)

    response = auth_client.delete(f"/api/teams/{reds.id}/players/{ann.id}/")

    assert response.status_code == 404, response.content
    assert response.json()["detail"] == f"Player {ann.id} is not in team {reds.id}."
    assert Player.objects.get(pk=ann.id).team_id == blues.id
    assert "player.removed" not in types()
    bus.drain()
    replica = {t["id"]: t for t in auth_client.get("/api/transfers/teams/").json()["results"]}
    assert [p["id"] for p in replica[blues.id]["players"]] == [ann.id]
    assert replica[reds.id]["players"] == []


# --- real concurrent transactions (PostgreSQL) ---------------------------------------------


class Holder(threading.Thread):
    """Runs ``work`` in a transaction on its own connection and keeps the transaction
    open (its locks held) until ``release()``."""

    def __init__(self, work) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.inside = threading.Event()
        self._release = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with transaction.atomic():
                self.work()
                self.inside.set()
                self._release.wait(30)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self.inside.set()
        finally:
            connections.close_all()

    def release(self) -> None:
        self._release.set()
        self.join(30)


class Caller(threading.Thread):
    """Runs ``work`` (autocommit around it, like a request) on its own connection."""

    def __init__(self, work) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.result = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            connections.close_all()


def wait_until_blocked(timeout: float = 10) -> None:
    """Until another connection of this database waits for a row lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.02)
    raise AssertionError("the second transaction never waited for the first one's lock")


def token_client(django_user_model) -> APIClient:
    from rest_framework.authtoken.models import Token

    user = django_user_model.objects.create_superuser(username="racer", password="pw-racer-123")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_adding_a_player_while_the_team_is_being_deleted_is_404(django_user_model):
    """team_delete holds the team; POST /api/teams/T/players/ waits for it, then finds the
    team gone: 404, not a foreign-key failure at COMMIT (500)."""
    client = token_client(django_user_model)
    team = services.team_create(name="Dartford")
    holder = Holder(lambda: services.team_delete(team=Team.objects.get(pk=team.pk)))
    holder.start()
    holder.inside.wait(10)
    caller = Caller(lambda: client.post(f"/api/teams/{team.pk}/players/", {"name": "Eve", "position": "MID"}))
    caller.start()
    wait_until_blocked()
    holder.release()
    caller.join(30)

    assert holder.error is None and caller.error is None, (holder.error, caller.error)
    assert caller.result.status_code == 404, caller.result.content
    assert caller.result.json()["detail"] == f"Team {team.pk} does not exist."
    assert not Player.objects.exists()
    assert types() == ["team.created", "team.deleted"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_deleting_a_team_while_a_player_is_being_added_takes_the_new_player_too(django_user_model):
    """player_add holds the team; DELETE /api/teams/T/ waits, then deletes the team with the
    player that just joined (on main the delete failed its deferred FK check: 500)."""
    client = token_client(django_user_model)
    team = services.team_create(name="Erith")
    holder = Holder(lambda: services.player_add(team=Team.objects.get(pk=team.pk), name="Fay", position="DEF"))
    holder.start()
    holder.inside.wait(10)
    caller = Caller(lambda: client.delete(f"/api/teams/{team.pk}/"))
    caller.start()
    wait_until_blocked()
    holder.release()
    caller.join(30)

    assert holder.error is None and caller.error is None, (holder.error, caller.error)
    assert caller.result.status_code == 204, caller.result.content
    assert not Team.objects.exists() and not Player.objects.exists()
    assert types() == ["team.created", "player.added", "team.deleted"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_transfer_into_a_team_being_deleted_is_refused():
    source = services.team_create(name="Faversham", players=[{"name": "Gil", "position": "ST"}])
    target = services.team_create(name="Gravesend")
    gil = source.players.get()
    holder = Holder(lambda: services.team_delete(team=Team.objects.get(pk=target.pk)))
    holder.start()
    holder.inside.wait(10)

    def apply():
        with transaction.atomic():
            return services.move_apply(
                transfer_id=3, player_id=gil.id, from_team_id=source.pk, to_team_id=target.pk
            )

    caller = Caller(apply)
    caller.start()
    wait_until_blocked()
    holder.release()
    caller.join(30)

    assert holder.error is None and caller.error is None, (holder.error, caller.error)
    assert Player.objects.get(pk=gil.id).team_id == source.pk
    assert types()[-2] == "team.deleted"
    refused = OutboxMessage.objects.order_by("id").last()
    assert refused.envelope["data"]["reason"] == f"Team {target.pk} does not exist."


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_removing_a_player_while_the_saga_moves_him_is_404(django_user_model):
    """move_apply holds both teams and moves P from A to B; DELETE
    /api/teams/A/players/P/ waits, then finds P no longer in A: 404, P stays in B."""
    client = token_client(django_user_model)
    source = services.team_create(name="Hythe", players=[{"name": "Hal", "position": "GK"}])
    target = services.team_create(name="Ilford")
    hal = source.players.get()
    holder = Holder(
        lambda: services.move_apply(transfer_id=5, player_id=hal.id, from_team_id=source.pk, to_team_id=target.pk)
    )
    holder.start()
    holder.inside.wait(10)
    caller = Caller(lambda: client.delete(f"/api/teams/{source.pk}/players/{hal.id}/"))
    caller.start()
    wait_until_blocked()
    holder.release()
    caller.join(30)

    assert holder.error is None and caller.error is None, (holder.error, caller.error)
    assert caller.result.status_code == 404, caller.result.content
    assert Player.objects.get(pk=hal.id).team_id == target.pk
    assert "player.removed" not in types()
