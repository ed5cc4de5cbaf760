"""The front door: one URL for clients in every deployment, a reverse proxy (nginx) that
routes by path prefix to whichever process serves each service now.

Plain Python: no Django models, no import of any app of the project. ``routes`` holds the
service -> path-prefix table, ``nginx`` renders the proxy's configuration from it and runs a
local nginx (start, graceful reload, stop)."""
