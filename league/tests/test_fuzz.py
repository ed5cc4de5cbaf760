"""API fuzzing with schemathesis against the OpenAPI schema the app serves (/api/schema/),
in-process through the WSGI app: for every operation, anonymous and with a token, generated
requests never get a server error (5xx) and every response conforms to the schema (status
code, content type, body). A bounded number of examples per operation keeps it in CI."""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_EXAMPLES = 25


@pytest.fixture(autouse=True)
def _no_outbound_calls(transactional_db, monkeypatch, settings):
    """Transactional: a transfer request fetches an unknown team over HTTP, which refuses to
    run inside a transaction (as a test's ``db`` transaction would be).

    The one outbound call (transfers -> teams on a replica miss) answers "no such team"
    at once instead of waiting for a teams server that is not running in this test."""
    from django.conf import settings as django_settings

    if "transfers" in django_settings.ACTIVE_SERVICES:
        from transfers import teams_client

        def not_found(team_id: int):
            raise teams_client.TeamNotFound(f"Team {team_id} does not exist.")

        monkeypatch.setattr(teams_client, "fetch_team", not_found)
    settings.OUTBOX_KICK = False
    # The WSGI app runs in this process: keep it from closing the test's database
    # connection at the end of each request (as the test client does).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def _load_schema(mode: GenerationMode):
    from league.wsgi import application

    loaded = schemathesis.openapi.from_wsgi("/api/schema/", application)
    loaded.config.generation.update(modes=[mode])
    return loaded


# Valid requests: every response (success or error) must be one the schema documents.
schema = _load_schema(GenerationMode.POSITIVE)
# Invalid requests (wrong types, missing fields, bad path values): never a server error.
negative_schema = _load_schema(GenerationMode.NEGATIVE)

FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@schema.parametrize()
@FUZZ
def test_api_anonymous(case):
    case.call_and_validate(checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_api_with_a_token(case, django_user_model):
    user, _ = django_user_model.objects.get_or_create(username="fuzzer")
    token, _ = Token.objects.get_or_create(user=user)
    case.call_and_validate(headers={"Authorization": f"Token {token.key}"}, checks=CHECKS)


@negative_schema.parametrize()
@FUZZ
def test_api_invalid_requests_never_get_a_server_error(case, django_user_model):
    user, _ = django_user_model.objects.get_or_create(username="fuzzer")
    token, _ = Token.objects.get_or_create(user=user)
    case.call_and_validate(headers={"Authorization": f"Token {token.key}"}, checks=[not_a_server_error])


# The regressions the fuzzer found (errors before a DRF view ran were HTML) are tested in
# league/tests/test_api_errors.py, with the one error format.
