"""The read side of the bus: named queries a service answers for the project's pages.

A page that shows several services' data (the league page, ``live``) may not import
them: the services are independent of each other and of the pages (import-linter). As
with handlers, ``events`` keeps the registry and imports no service; each service
registers its public read functions from its ``AppConfig.ready``::

    @query("teams.squads", service="teams")
    def squads() -> list[dict]: ...

and a page asks by name: ``queries.ask("teams.squads")``.

Promises:
- A query answers with plain JSON-able data (dicts, lists, str, int, None): it is the
  service's published read contract, the same shape an HTTP endpoint would serve, never
  its model instances, so the page cannot reach into another service's tables.
- A query only reads (a service's selectors), so it may run in any request.
- Asking for a query no installed service answers (in a deployment where that service
  runs elsewhere) raises ``QueryUnavailable``, which names the service; the caller shows
  the gap instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import gate

QueryFunc = Callable[..., Any]


class QueryUnavailable(LookupError):
    """No service in this process answers the query."""


@dataclass(frozen=True)
class Query:
    name: str
    service: str
    func: QueryFunc


_queries: dict[str, Query] = {}


def query(name: str, *, service: str) -> Callable[[QueryFunc], QueryFunc]:
    """Register ``func`` as ``service``'s answer to the query ``name`` (``<service>.<what>``)."""
    if not name.startswith(f"{service}."):
        raise ValueError(f"Query {name!r} must be named '{service}.<what>': a service answers only its own queries.")

    def register(func: QueryFunc) -> QueryFunc:
        existing = _queries.get(name)
        if existing is not None and existing.func is not func and existing.func.__qualname__ != func.__qualname__:
            raise ValueError(
                f"Query {name!r} is already answered by {existing.func.__module__}.{existing.func.__qualname__}."
            )
        _queries[name] = Query(name=name, service=service, func=func)
        return func

    return register


def available(name: str) -> bool:
    return name in _queries


def ask(name: str, **kwargs: Any) -> Any:
    """Run the query ``name``; ``QueryUnavailable`` when no installed service answers it, or
    when its service has moved out of this database (its gate is ``moved``: its tables here
    are leftovers, e.g. while ``split_service --back`` runs it here again before the switch)."""
    try:
        q = _queries[name]
    except KeyError:
        service = name.split(".", 1)[0]
        raise QueryUnavailable(
            f"No installed service answers {name!r}: the {service} service does not run in this process."
        ) from None
    if gate.current(q.service) == gate.MOVED:
        raise QueryUnavailable(f"The {q.service} service runs on its own database, not in this process.")
    return q.func(**kwargs)


def names() -> list[str]:
    return sorted(_queries)
