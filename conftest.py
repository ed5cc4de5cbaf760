"""Shared fixtures: API clients and users. The event-bus fixtures live in
``devtools/testing.py`` and are re-exported here."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


@pytest.fixture
def user(db):
    """A user with the roles League staff and Transfer desk: every write of the API."""
    return with_roles(get_user_model().objects.create_user(username="manager", password="pw-manager-123"))


def with_roles(user, *names: str):
    """``user`` added to the roles ``names`` (default: League staff and Transfer desk).
    The groups are made first: a transactional test's flush removed the migrations' rows."""
    from django.contrib.auth.models import Group

    from kernel import roles

    roles.ensure_roles()
    user.groups.add(*Group.objects.filter(name__in=names or (roles.LEAGUE_STAFF, roles.TRANSFER_DESK)))
    return user


@pytest.fixture
def api_client() -> APIClient:
    """Anonymous client."""
    return APIClient()


@pytest.fixture
def auth_client(user) -> APIClient:
    """Client authenticated with a DRF token."""
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


pytest_plugins = ["devtools.testing"]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.postgres`` tests need PostgreSQL. On SQLite they are skipped, unless
    REQUIRE_POSTGRES=1 (CI's Postgres run), where running on anything else is an error."""
    import os

    from django.conf import settings

    # Every test on a real emulator process is marked, so CI can run exactly those again on
    # the second emulator: BUS_EMULATOR=localstack pytest -m emulator.
    # Those, and the browser tests, start real processes: slow, left out of the default run.
    for item in items:
        if "moto_server_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.emulator)
            item.add_marker(pytest.mark.slow)
        if "browser" in item.keywords:
            item.add_marker(pytest.mark.slow)
    # LocalStack's CloudFormation is installed and started only for the run that asks for it
    # (CI: pytest -m localstack, after `python -m devtools.emulators install`).
    if "localstack" not in (config.getoption("-m") or ""):
        kept = [i for i in items if "localstack" not in i.keywords]
        if len(kept) != len(items):
            config.hook.pytest_deselected(items=[i for i in items if "localstack" in i.keywords])
            items[:] = kept
    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    if os.environ.get("REQUIRE_POSTGRES") == "1" and not on_postgres:
        raise pytest.UsageError("REQUIRE_POSTGRES=1 but DATABASE_URL does not point at PostgreSQL.")
    if on_postgres:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://...")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (CI=true) a skip is a failure: CI installs and starts everything the tests
    need, so a skip there means something is missing. The exceptions: a
    ``postgres``-marked test in the SQLite run, and an API operation without input in
    the negative fuzzing run."""
    import os

    outcome = yield
    report = outcome.get_result()
    # Not applicable rather than missing: schemathesis finds no invalid input for an
    # operation that takes none (e.g. GET /api/teams/export/).
    not_applicable = "Impossible to generate negative test cases" in str(report.longrepr)
    if os.environ.get("CI") == "true" and report.skipped and "postgres" not in item.keywords and not not_applicable:
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which must provide everything: {report.longrepr}"
