"""The roles of a league office (Django groups with model permissions,
created by data migrations), enforced alike in the API (403 naming the missing
permission and the role) and the admin; anonymous users still read."""

from __future__ import annotations

import importlib
import io
import re
from datetime import date

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from fixtures.factories import ScheduledSeasonFactory, TeamReplicaFactory
from kernel import roles
from teams.factories import TeamFactory
from teams.models import Team

ROLE_MIGRATIONS = {
    "teams": ["teams.migrations.0006_roles"],
    "fixtures": ["fixtures.migrations.0004_roles"],
    "transfers": ["transfers.migrations.0003_roles"],
}


def member(role: str | None, *, staff: bool = False, username: str | None = None):
    roles.ensure_roles()  # a flushed database (transactional tests) lost the migration's groups
    user = get_user_model().objects.create_user(username=username or f"user-{role or 'none'}", is_staff=staff)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.mark.parametrize("app", sorted(ROLE_MIGRATIONS))
def test_the_migrations_grant_what_each_app_declares(app):
    """An app's roles.py and its role migrations say the same (a change of roles.py
    without a migration fails here)."""
    declared = importlib.import_module(f"{app}.roles").ROLES
    granted: dict[str, set[str]] = {}
    for module in ROLE_MIGRATIONS[app]:
        for role, codenames in importlib.import_module(module).ROLES.items():
            granted.setdefault(role, set()).update(codenames)
    assert granted == {role: set(codenames) for role, codenames in declared.items()}


@pytest.mark.django_db
def test_the_role_migrations_create_the_groups_with_their_permissions():
    from django.apps import apps

    Group.objects.all().delete()  # as before the migrations (or after a flush)
    for modules in ROLE_MIGRATIONS.values():
        for module in modules:
            importlib.import_module(module).forwards(apps, None)
    groups = {g.name: {f"{p.content_type.app_label}.{p.codename}" for p in g.permissions.all()} for g in Group.objects.all()}
    assert set(roles.ROLE_NAMES) <= set(groups)
    assert {"teams.add_team", "teams.delete_player", "fixtures.add_season", "fixtures.change_fixture"} <= groups[
        "League staff"
    ]
    assert "transfers.add_transfer" not in groups["League staff"]
    assert {"transfers.add_transfer", "transfers.cancel_transfer", "teams.view_team"} <= groups["Transfer desk"]
    assert not any(p.split(".")[1].startswith(("add_", "change_", "delete_")) for p in groups["Transfer desk"] if p.startswith("teams."))
    assert all(p.split(".")[1].startswith("view_") for p in groups["Read-only"])
    assert "teams.export_team" in groups["Service accounts"]


# ---------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_users_still_read(api_client):
    TeamFactory()
    for path in ("/api/teams/", "/api/seasons/", "/api/transfers/", "/api/transfers/teams/", "/api/fixtures/teams/"):
        assert api_client.get(path).status_code == 200, path


@pytest.mark.django_db
def test_a_user_without_a_role_gets_a_403_naming_the_permission_and_the_role():
    response = client_for(member(None)).post("/api/teams/", {"name": "Reds"}, format="json")
    assert response.status_code == 403
    assert "teams.add_team" in str(response.json())
    assert "League staff" in str(response.json())
    assert not Team.objects.exists()


@pytest.mark.django_db
def test_the_transfer_desk_requests_transfers_but_cannot_touch_teams_or_results():
    desk = client_for(member(roles.TRANSFER_DESK))
    team = TeamFactory()
    for method, path, body, perm in [
        ("post", "/api/teams/", {"name": "Reds"}, "teams.add_team"),
        ("patch", f"/api/teams/{team.id}/", {"name": "Blues"}, "teams.change_team"),
        ("delete", f"/api/teams/{team.id}/", None, "teams.delete_team"),
        ("post", f"/api/teams/{team.id}/players/", {"name": "Ann", "position": "GK"}, "teams.add_player"),
        ("post", "/api/seasons/", {"name": "S", "starts_on": "2026-08-01"}, "fixtures.add_season"),
    ]:
        response = getattr(desk, method)(path, body, format="json")
        assert response.status_code == 403, (path, response.content)
        assert perm in str(response.json())
    response = desk.post("/api/transfers/", {"player_id": 1, "from_team_id": 1, "to_team_id": 1, "fee": "1"}, format="json")
    assert response.status_code == 409  # allowed: refused by a rule, not by permission
    assert Team.objects.get().name == team.name


@pytest.mark.django_db
def test_league_staff_run_teams_seasons_and_results_but_not_transfers():
    staff = client_for(member(roles.LEAGUE_STAFF))
    assert staff.post("/api/teams/", {"name": "Reds"}, format="json").status_code == 201
    TeamReplicaFactory(team_id=1)
    TeamReplicaFactory(team_id=2)
    season = ScheduledSeasonFactory(name="S1", team_ids=[1, 2], starts_on=date(2026, 8, 1))
    fixture = season.fixtures.first()
    response = staff.patch(f"/api/fixtures/{fixture.id}/", {"home_goals": 1, "away_goals": 0}, format="json")
    assert response.status_code == 200, response.content
    response = staff.post("/api/transfers/", {"player_id": 1, "from_team_id": 1, "to_team_id": 2, "fee": "1"}, format="json")
    assert response.status_code == 403
    assert "transfers.add_transfer" in str(response.json()) and "Transfer desk" in str(response.json())


@pytest.mark.django_db
def test_read_only_users_write_nothing():
    reader = client_for(member(roles.READ_ONLY))
    assert reader.get("/api/teams/").status_code == 200
    assert reader.post("/api/teams/", {"name": "Reds"}, format="json").status_code == 403
    assert reader.post("/api/transfers/", {}, format="json").status_code == 403


@pytest.mark.django_db
def test_writes_without_credentials_are_still_401(api_client):
    assert api_client.post("/api/teams/", {"name": "Reds"}, format="json").status_code == 401


# ---------------------------------------------------------------------------------------
# The admin
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_transfer_desk_user_cannot_edit_teams_in_the_admin(client):
    team = TeamFactory(name="Reds")
    client.force_login(member(roles.TRANSFER_DESK, staff=True))
    assert client.get("/admin/teams/team/").status_code == 200  # may look
    assert client.get("/admin/teams/team/add/").status_code == 403
    assert client.post("/admin/teams/team/add/", {"name": "Blues"}).status_code == 403
    response = client.post(f"/admin/teams/team/{team.id}/change/", {"name": "Renamed"})
    assert response.status_code == 403
    assert client.post(f"/admin/teams/team/{team.id}/delete/", {"post": "yes"}).status_code == 403
    assert list(Team.objects.values_list("name", flat=True)) == ["Reds"]


@pytest.mark.django_db
def test_league_staff_edit_teams_in_the_admin(client):
    client.force_login(member(roles.LEAGUE_STAFF, staff=True))
    data = {
        "name": "Blues",
        "players-TOTAL_FORMS": 0,
        "players-INITIAL_FORMS": 0,
        "players-2-TOTAL_FORMS": 0,
        "players-2-INITIAL_FORMS": 0,
    }
    response = client.post("/admin/teams/team/add/", data)
    assert response.status_code == 302, response.content.decode()[:1000]
    assert Team.objects.get().name == "Blues"


@pytest.mark.django_db
def test_roles_are_assignable_in_the_admin(admin_client):
    user = member(None, staff=True, username="newcomer")
    page = admin_client.get(f"/admin/auth/user/{user.id}/change/").content.decode()
    for role in roles.ROLE_NAMES:
        assert role in page
    desk = Group.objects.get(name=roles.TRANSFER_DESK)
    response = admin_client.post(
        f"/admin/auth/user/{user.id}/change/",
        {
            "username": "newcomer",
            "is_active": "on",
            "is_staff": "on",
            "groups": [desk.id],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2026-01-01",
            "initial-date_joined_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert list(user.groups.values_list("name", flat=True)) == [roles.TRANSFER_DESK]


# ---------------------------------------------------------------------------------------
# runstack and the service account
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_runstack_prints_the_role_of_its_token():
    from league.management.commands.runstack import Command

    out = io.StringIO()
    command = Command(stdout=out)
    token = command.ensure_admin()
    command.banner("http://127.0.0.1:8000", token)
    text = out.getvalue()
    assert re.search(rf"API token\s+{token}\n", text), text
    assert re.search(r"Token role\s+admin \(superuser: every permission\)", text), text


@pytest.mark.django_db
def test_service_account_command_makes_a_machine_user_with_the_export_permission():
    from django.core.management import CommandError, call_command

    key = "a" * 40
    out = io.StringIO()
    call_command("service_account", "transfers-service", "--token", key, stdout=out)
    call_command("service_account", "transfers-service", "--token", key, stdout=io.StringIO())  # idempotent
    assert out.getvalue().strip() == "transfers-service (roles: Service accounts) token: (the --token given)"
    user = Token.objects.get(key=key).user
    assert not user.has_usable_password() and not user.is_staff
    assert user.has_perm("teams.export_team") and not user.has_perm("teams.add_team")
    with pytest.raises(CommandError, match="32 to 40 characters"):
        call_command("service_account", "transfers-service", "--token", "short")


@pytest.mark.django_db
def test_a_method_no_operation_declares_is_a_405_for_anonymous_clients_too(api_client):
    """Whether a method exists does not depend on who asks: 405 with ``Allow``, not a 401
    that sends the client off to log in for something that can never work."""
    import yaml

    schema = yaml.safe_load(api_client.get("/api/schema/").content)
    checked = 0
    for template, operations in schema["paths"].items():
        path = re.sub(r"\{[^}]+\}", "1", template)
        for method in ("post", "put", "patch", "delete"):
            if method in operations:
                continue
            response = getattr(api_client, method)(path, {}, format="json")
            assert response.status_code == 405, (method, path, response.content[:200])
            assert method.upper() not in response["Allow"]
            checked += 1
    assert checked > 10
