from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from transfers.factories import PlayerReplicaFactory, TeamReplicaFactory, TransferFactory
from transfers.models import TransferState

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    return client


def test_transfer_changelist_filters_and_search(admin_client):
    TeamReplicaFactory(team_id=1, name="Reds")
    TeamReplicaFactory(team_id=2, name="Blues")
    TransferFactory(player_name="Ann", from_team_id=1, to_team_id=2)
    TransferFactory(player_name="Bob", from_team_id=2, to_team_id=1, state=TransferState.COMPLETED)
    url = "/admin/transfers/transfer/"
    page = admin_client.get(url)
    assert page.status_code == 200 and b"Reds (#1)" in page.content

    def listed(query: str) -> list[str]:
        # The changelist's rows, not the page's bytes: a random token on the page (CSRF)
        # can spell a player's name.
        return sorted(t.player_name for t in admin_client.get(url + query).context["cl"].result_list)

    assert listed("?state__exact=requested") == ["Ann"]
    assert listed("?from_team=2") == ["Bob"]
    assert listed("?to_team=2") == ["Ann"]
    assert listed("?q=Bob") == ["Bob"]
    assert "Ann" in listed("?q=Reds")


def test_team_replica_is_read_only_with_its_players(admin_client):
    team = TeamReplicaFactory(name="Reds")
    PlayerReplicaFactory(team=team, name="Ann")
    assert admin_client.get("/admin/transfers/teamreplica/").status_code == 200
    page = admin_client.get(f"/admin/transfers/teamreplica/{team.pk}/change/")
    assert page.status_code == 200 and b"Ann" in page.content
    assert b'name="_save"' not in page.content
    assert admin_client.get("/admin/transfers/teamreplica/add/").status_code == 403
    assert admin_client.get("/admin/transfers/teamssync/").status_code == 200
