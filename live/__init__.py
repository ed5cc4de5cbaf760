"""The league page: ``/``, server-rendered, kept live by the bus.

Where its data comes from (and why not from the services' models): ``live`` is a sibling
of ``teams``, ``transfers`` and ``fixtures`` and, like them, imports none of them
(import-linter: "The services and the league page never import each other"). Each
service publishes named read queries in ``events.queries`` from its ``AppConfig.ready``
(``teams.squads``, ``fixtures.current_season``, ``transfers.recent``), answering with
plain JSON-able data built from its own selectors; the page asks by name. So the page
depends on each service's read contract, never on its tables, in the same way the
consumers find handlers through ``events.registry``.

Deployments: in the monolith every query is answered in-process. A process that runs one
service (``LEAGUE_SERVICE=teams``) answers only that service's queries; the page then
says of each other section which service does not run here, instead of failing. Gathering
them over HTTP from the other services is not built: route ``/`` to a monolith web (or
add an HTTP-backed query) for a full page in the microservices deployment.

How it stays live: every ASGI web process runs a ``live.feed.Feed`` (started by the ASGI
lifespan, ``league/asgi.py``), a broadcast consumer with its own instance queue, and
pushes each event to the browsers connected to that process over Server-Sent Events
(``live.views.events``); the browser then re-reads the page's sections. See
``live/feed.py`` for what is promised.
"""
