"""The OpenAPI schema: generated without warnings, with every endpoint, its examples and
its error responses; served at /api/schema/ with Swagger UI at /api/docs/."""

from __future__ import annotations

import io

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command


@pytest.fixture(scope="module")
def schema() -> dict:
    out = io.StringIO()
    # --fail-on-warn: any warning or error of the generator fails the test.
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    return yaml.safe_load(out.getvalue())


KEY_PATHS = {
    "teams": {
        "/api/teams/": {"get", "post"},
        "/api/teams/{team_id}/": {"get", "patch", "delete"},
        "/api/teams/{team_id}/players/": {"get", "post"},
        "/api/teams/{team_id}/players/{player_id}/": {"get", "delete"},
        "/api/teams/export/": {"get"},
    },
    "transfers": {
        "/api/transfers/": {"get", "post"},
        "/api/transfers/{id}/": {"get"},
        "/api/transfers/teams/": {"get"},
    },
    "fixtures": {
        "/api/seasons/": {"get", "post"},
        "/api/seasons/{season_id}/": {"get"},
        "/api/seasons/{season_id}/fixtures/": {"get"},
        "/api/seasons/{season_id}/standings/": {"get"},
        "/api/fixtures/{fixture_id}/": {"get", "patch"},
        "/api/fixtures/teams/": {"get"},
    },
}


def test_schema_has_the_key_paths(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "League Manager API"
    for service in settings.ACTIVE_SERVICES:
        for path, methods in KEY_PATHS[service].items():
            assert path in schema["paths"], path
            assert methods <= set(schema["paths"][path]), (path, set(schema["paths"][path]))


def test_every_operation_documents_errors_and_examples(schema):
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method not in {"get", "post", "patch", "put", "delete"}:
                continue
            codes = set(op["responses"])
            assert any(c.startswith("2") for c in codes), (path, method)
            if "{" in path:
                assert "404" in codes, f"{method} {path}: no 404 for an unknown id"
            if method in {"post", "patch", "put", "delete"}:
                assert "401" in codes, f"{method} {path}: writes need credentials"
            if method in {"post", "patch", "put"}:
                assert "400" in codes, f"{method} {path}: no 400"
                body = op["requestBody"]["content"]["application/json"]
                assert body.get("examples"), f"{method} {path}: no request example"
            ok = next(op["responses"][c] for c in sorted(codes) if c.startswith("2"))
            if "content" in ok:
                assert ok["content"]["application/json"].get("examples"), f"{method} {path}: no response example"


def test_schema_and_swagger_ui_are_served(client, db):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/teams/" in response.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html
    # The assets come from this server (drf-spectacular-sidecar), never a CDN.
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html


def test_the_served_schema_is_a_valid_openapi_document(client, db):
    """openapi-spec-validator accepts /api/schema/ (it refused a ``default: ""`` beside
    ``minLength: 1`` on /api/fixtures/teams/'s ``search``)."""
    from openapi_spec_validator import validate

    spec = client.get("/api/schema/?format=json").json()
    validate(spec)


def test_every_error_response_is_the_problem_component(schema):
    """One error format, documented once: every error response of every operation (and
    its ``default``) is ``application/problem+json`` with the ``Problem`` component, and
    its examples are problem documents."""
    problem = schema["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert problem["properties"]["errors"]["items"] == {"$ref": "#/components/schemas/ProblemFieldError"}
    for path, item in schema["paths"].items():
        for method, op in item.items():
            assert "default" in op["responses"], (method, path)
            for code, response in op["responses"].items():
                if code != "default" and int(code) < 400:
                    continue
                assert set(response["content"]) == {"application/problem+json"}, (method, path, code)
                media = response["content"]["application/problem+json"]
                assert media["schema"] == {"$ref": "#/components/schemas/Problem"}, (method, path, code)
                for example in media.get("examples", {}).values():
                    assert example["value"]["status"] == int(code), (method, path, code)
                    assert example["value"]["type"] == "about:blank"


def test_nullable_and_partial_fields_are_documented_as_served(schema):
    components = schema["components"]["schemas"]
    assert components["FixturesTeamReplica"]["properties"]["deleted_at"]["nullable"] is True
    # PATCH is a partial update: nothing is required (and the views accept that).
    for name in ("PatchedTeamUpdateInputRequest", "PatchedFixtureResultInputRequest"):
        assert not components[name].get("required"), name


def test_pagination_parameters_are_bounded(schema):
    for path, item in schema["paths"].items():
        for parameter in item.get("get", {}).get("parameters", []):
            if parameter["name"] == "limit":
                assert (parameter["schema"]["minimum"], parameter["schema"]["maximum"]) == (1, 1000), path
            if parameter["name"] == "offset":
                assert parameter["schema"]["minimum"] == 0 and parameter["schema"]["maximum"] > 0, path


# The statuses a well-formed write can meet besides success (kernel/api.py): 409 when the
# current state refuses it, 422 when it contradicts itself.
RULE_STATUSES = {
    ("post", "/api/teams/"): {"409", "422"},
    ("patch", "/api/teams/{team_id}/"): {"409"},
    ("post", "/api/teams/{team_id}/players/"): {"409"},
    ("post", "/api/transfers/"): {"409"},
    ("post", "/api/transfers/{id}/cancel/"): {"409"},
    ("post", "/api/seasons/"): {"409", "422"},
    ("patch", "/api/fixtures/{fixture_id}/"): {"409"},
}


def test_each_write_documents_its_conflicts_with_an_example(schema):
    for (method, path), statuses in RULE_STATUSES.items():
        if path not in schema["paths"]:
            continue  # a service not in this deployment
        responses = schema["paths"][path][method]["responses"]
        assert statuses <= set(responses), (method, path, set(responses))
        for status in statuses:
            [example] = responses[status]["content"]["application/problem+json"]["examples"].values()
            assert example["value"]["status"] == int(status), (method, path, status)
    # No other write says it can answer 422 (besides a reused Idempotency-Key on a POST).
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if "422" in op.get("responses", {}) and method != "post":
                assert (method, path) in RULE_STATUSES and "422" in RULE_STATUSES[method, path], (method, path)


def test_a_short_name_has_the_format_the_fuzzer_draws_valid_short_names_for(schema):
    """A team's short name has the format ``league-short-name`` on create and on PATCH; the
    fuzzer's strategy for it draws only short names ``clean_short_name`` accepts."""
    from hypothesis import given, settings

    from kernel.names import clean_short_name
    from league.tests import schemathesis_hooks  # noqa: F401  (registers the format)

    for component in ("TeamCreateInputRequest", "PatchedTeamUpdateInputRequest"):
        field = schema["components"]["schemas"][component]["properties"]["short_name"]
        assert (field["format"], field["minLength"], field["maxLength"]) == ("league-short-name", 2, 5)
    assert schema["components"]["schemas"]["Team"]["properties"]["short_name"]["maxLength"] == 5
    import schemathesis.specs.openapi.formats as formats

    @settings(max_examples=200, deadline=None)
    @given(formats.STRING_FORMATS["league-short-name"])
    def accepted(short_name):
        clean_short_name(short_name)

    accepted()


def test_a_name_has_the_format_the_fuzzer_draws_valid_names_for(schema):
    """The schema gives a name the format ``league-name``; the fuzzer's strategy for it
    (league/tests/schemathesis_hooks.py) draws only names ``clean_name`` accepts."""
    from hypothesis import given, settings

    from kernel.names import clean_name
    from league.tests import schemathesis_hooks  # registers the format

    field = schema["components"]["schemas"]["TeamCreateInputRequest"]["properties"]["name"]
    assert (field["format"], field["minLength"], field["maxLength"]) == ("league-name", 1, 100)
    import schemathesis.specs.openapi.formats as formats

    @settings(max_examples=200, deadline=None)
    @given(formats.STRING_FORMATS["league-name"])
    def accepted(name):
        clean_name(name)

    accepted()
    assert schemathesis_hooks.HEADER == "Idempotency-Key"
