"""The crash-injection suite: the whole stack as real processes (Postgres, moto_server,
relays, consumers, gunicorn), writes through the REST API, faults injected, and a check
after each scenario that every event was handled by every subscribed handler exactly
once. Entry point: ``python -m faults.run [--quick]``; see docs/RELIABILITY.md."""
