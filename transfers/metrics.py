"""Metrics of the transfer saga, served at ``/metrics`` with the bus's.

- ``league_transfers_overdue{state}``: transfers in flight past their deadline, read from
  the database at scrape time (any web process answers the same). Non-zero for longer
  than a sweep means teams is not answering: look at its queue and DLQ.
- ``league_transfers_expired_total``: transfers the sweeper found past their deadline and
  asked teams to cancel (counted in the process that runs the sweeper).
- ``league_replica_repairs_total{service="transfers",cause}`` (events/antientropy.py): teams
  of the replica that healing found wrong and repaired (``cause``: ``gap``, ``unknown``,
  ``reconciliation``; transfers/replica.py). Anything above zero means an event was lost or
  not applied: look at the DLQ. ``league_replica_reconciliations_total{service,result}``:
  reconciliation runs, by ``clean``, ``repaired`` or ``failed`` (the teams service did not answer).
- ``league_replica_heal_wanted``: teams marked for a fetch and not fetched yet (at scrape
  time, from the database). Staying above zero means the teams service is not answering.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("transfers.metrics")

TRANSFERS_EXPIRED = Counter(
    "league_transfers_expired_total", "Transfers past their deadline that transfers asked teams to cancel."
)


def transfer_expired() -> None:
    try:
        TRANSFERS_EXPIRED.inc()
    except Exception:  # a metric must never fail the sweep
        log.exception("metrics: transfer_expired failed")


class OverdueCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Count
        from django.utils import timezone

        from .models import IN_FLIGHT, Transfer

        gauge = GaugeMetricFamily(
            "league_transfers_overdue",
            "Transfers in flight (requested or cancelling) past their deadline.",
            labels=["state"],
        )
        counts = dict(
            Transfer.objects.overdue(timezone.now()).values("state").annotate(n=Count("id")).values_list("state", "n")
        )
        for state in IN_FLIGHT:
            gauge.add_metric([str(state)], counts.get(state, 0))
        yield gauge

        from .models import TeamReplica

        wanted = GaugeMetricFamily(
            "league_replica_heal_wanted", "Teams of the replica marked for a fetch from the teams service."
        )
        wanted.add_metric([], TeamReplica.objects.live().filter(heal_wanted_at__isnull=False).count())
        yield wanted
