"""Idempotency keys for the API's POSTs: a retried POST is answered, not done again
(``idempotency/middleware.py`` keeps the guarantee). Its own app because every deployment
(the monolith and each service) installs it and keeps its keys in its own database; it is
neither bus logic (``events``) nor the project's wiring (``league``)."""
