"""The crash-injection suite: ``python -m faults.run [--quick] [--keep-logs]``.

Starts the whole stack as real processes (a fresh Postgres database, ``moto_server``,
gunicorn, ``relay_outbox``, one ``consume`` per service plus the probe service), writes
through the REST API with a token, injects one kind of fault per scenario, waits until
the bus has drained, and checks that every event was handled by every subscribed handler
exactly once (faults/checks.py). Prints a table; exits 1 if any event was lost or
applied twice, a replica disagrees, something is stuck, or a DLQ misses what it must hold.

The package: ``main`` is the command line and the order of the scenarios; ``boot`` starts
the stack a run works on (its processes: faults/stack.py); ``engine`` runs one scenario and
measures it (waits for the bus to drain, checks, reports); ``traffic`` writes through the
API; ``scenarios`` holds the faults injected, by kind; ``plan`` their sizes.
"""
