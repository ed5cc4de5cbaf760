"""The route table against what the apps really mount: every URL of a service's urlconf and
every admin page of its models falls under that service's prefixes and no other's; every
other URL goes to the monolith. So a new URL cannot silently route to the wrong process."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib import admin
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from frontdoor import routes


def sample(route: str) -> str:
    """A concrete path for a ``path()`` route: every converter becomes 1."""
    return re.sub(r"<(?:[^>:]+:)?[^>]+>", "1", route)


def walk(patterns, prefix: str = "", owner: str | None = None):
    """(path, service or None) for every URL pattern below ``patterns``."""
    for p in patterns:
        if isinstance(p, URLResolver):
            module = getattr(p.urlconf_module, "__name__", "")
            service = module.split(".")[0] if module in {f"{s}.urls" for s in settings.SERVICES} else owner
            yield from walk(p.url_patterns, prefix + str(p.pattern), service)
        elif isinstance(p, URLPattern):
            yield "/" + sample(prefix + str(p.pattern)), owner


def mounted() -> list[tuple[str, str | None]]:
    assert settings.ACTIVE_SERVICES == settings.SERVICES, "run with LEAGUE_SERVICE=all"
    return [(path, owner) for path, owner in walk(get_resolver().url_patterns) if "(?P" not in path]


def test_every_service_url_routes_to_its_own_service():
    found = {s: 0 for s in settings.SERVICES}
    for path, owner in mounted():
        if owner is None:
            continue
        found[owner] += 1
        assert routes.service_for(path) == owner, (
            f"{path} is mounted by {owner} but routes to {routes.service_for(path)}"
        )
        others = [
            s for s, prefixes in routes.ROUTES.items() if s != owner and any(routes.matches(x, path) for x in prefixes)
        ]
        assert not others, f"{path} ({owner}) also falls under {others}'s prefixes"
        assert resolve(path).func.__module__.split(".")[0] == owner, path
    assert all(found.values()), found


def test_every_admin_page_of_a_service_model_routes_to_that_service():
    pages = 0
    for model in admin.site._registry:
        label = model._meta.app_label
        path = f"/admin/{label}/{model._meta.model_name}/1/change/"
        if label in settings.SERVICES:
            pages += 1
            assert routes.service_for(path) == label, path
        else:
            assert routes.service_for(path) == routes.DEFAULT, (
                f"{path}: {label} is not a service; the monolith serves it"
            )
    assert pages >= 3


def test_everything_else_goes_to_the_monolith():
    others = [path for path, owner in mounted() if owner is None]
    assert {"/", "/healthz", "/metrics", "/api/schema/", "/live/events"} <= set(others)
    for path in others:
        if not path.startswith("/admin/"):
            assert routes.service_for(path) == routes.DEFAULT, path


@pytest.mark.parametrize(
    "path, service",
    [
        ("/api/teams", "teams"),
        ("/api/teams/", "teams"),
        ("/api/teamsheet", "monolith"),
        ("/api/transfers/teams/", "transfers"),
        ("/api/fixtures/teams/", "fixtures"),
        ("/api/seasons/1/standings/", "fixtures"),
        ("/admin/", "monolith"),
        ("/admin/teams/team/", "teams"),
        ("/admin/events/outboxevent/", "monolith"),
        ("/live/events", "monolith"),
    ],
)
def test_service_for(path, service):
    assert routes.service_for(path) == service


def test_no_prefix_is_shared():
    every = [p for prefixes in routes.ROUTES.values() for p in prefixes]
    assert len(every) == len(set(every))
    assert set(routes.ROUTES) == set(settings.SERVICES)


def test_the_stream_prefix_is_where_the_live_page_streams():
    assert resolve("/live/events").url_name == "events" and routes.STREAM_PREFIX == "/live/"
    assert routes.service_for(routes.STREAM_PREFIX) == routes.DEFAULT
