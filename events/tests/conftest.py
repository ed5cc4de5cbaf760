from __future__ import annotations

import pytest

from devtools.testing import BusDriver
from events import registry, topology


@pytest.fixture
def recorder():
    """A throwaway service 'probe' whose handler records the events it gets."""
    seen = []
    fail_subjects: set[str] = set()

    def record(event):
        if event.subject in fail_subjects:
            raise RuntimeError(f"poison subject {event.subject}")
        seen.append(event)

    handlers = [registry.Handler(service="probe", event_type=t, func=record) for t in ("team.created", "team.renamed")]
    registry._handlers.extend(handlers)
    record.seen = seen
    record.fail_subjects = fail_subjects
    yield record
    # Tests may swap the probe's handlers: drop every probe handler.
    registry._handlers[:] = [h for h in registry._handlers if h.service != "probe"]


@pytest.fixture
def probe_bus(aws_mock, db, recorder) -> BusDriver:
    topology.ensure(["probe"])
    return BusDriver(services=["probe"])
