"""Admin for the bus: the outbox and the inbox (read-only), and the event-bus overview page.

The overview (``/admin/events/bus/``, linked from the admin index as "Event bus overview")
shows the outbox by state and type, the age of the oldest pending row, the failed rows
with their error and a requeue button, the inbox per handler, and each queue's depth as
SQS reports it. SQS being unreachable is shown on the page, not raised as a 500.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, Min, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from . import aws, relay, topology
from .models import InboxMessage, OutboxMessage, OutboxState, ServiceGate

FAILED_ROWS_SHOWN = 100


def _can_requeue(request: HttpRequest) -> bool:
    return request.user.has_perm("events.change_outboxmessage")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the bus itself: viewed here, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TraceLinkMixin:
    """Every outbox and inbox row links to its trace: a "trace" column and field, to
    ``/admin/events/trace/<correlation id>/`` (events/trace.py)."""

    def get_list_display(self, request: HttpRequest) -> Any:
        return (*super().get_list_display(request), "trace_link")  # type: ignore[misc]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return (*super().get_fields(request, obj), "trace_link")  # type: ignore[misc]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return (*super().get_readonly_fields(request, obj), "trace_link")  # type: ignore[misc]

    @admin.display(description="trace")
    def trace_link(self, obj: OutboxMessage | InboxMessage) -> str:
        if not obj.correlation_id:
            return "-"
        return format_html(
            '<a class="trace-link" href="{}">trace</a>', reverse("admin:events_trace", args=[obj.correlation_id])
        )


def _stamp(moment: Any) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _search_ids(queryset: QuerySet, search_term: str) -> QuerySet:
    """Rows whose event id (any UUID spelling) or correlation id is the term."""
    term = search_term.strip()
    match = Q(envelope__correlationid=term) if queryset.model is OutboxMessage else Q(pk__in=[])
    try:
        match |= Q(event_id=uuid.UUID(term))
    except ValueError:
        pass
    return queryset.model.objects.filter(match)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(TraceLinkMixin, ReadOnlyAdmin):
    list_display = ("type", "aggregate", "sequence", "state", "failure", "attempts", "created", "published")
    list_filter = ("state", "failure", "type")
    search_fields = ("subject",)
    search_help_text = "Subject, event id or correlation id."
    date_hierarchy = "created_at"
    actions = ("requeue_failed",)
    change_list_template = "admin/events/outboxmessage/change_list.html"
    fields = (
        "event_id",
        "type",
        "subject",
        "aggregate_key",
        "sequence",
        "state",
        "failure",
        "attempts",
        "retrying_since",
        "last_error",
        "created_at",
        "published_at",
        "next_attempt_at",
        "claimed_until",
        "sns_message_id",
        "pretty_envelope",
    )
    readonly_fields = ("pretty_envelope",)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if search_term:
            found |= queryset & _search_ids(queryset, search_term)
        return found, may_have_duplicates

    @admin.display(description="subject", ordering="aggregate_key")
    def aggregate(self, obj: OutboxMessage) -> str:
        """``team 12``, not a bare ``12``: the subject with its aggregate."""
        return obj.aggregate_key.replace(":", " ", 1)

    # Compact timestamps: the list fits a 1,400 px window with the filter sidebar.
    @admin.display(description="created", ordering="created_at")
    def created(self, obj: OutboxMessage) -> str:
        return _stamp(obj.created_at)

    @admin.display(description="published", ordering="published_at")
    def published(self, obj: OutboxMessage) -> str:
        return _stamp(obj.published_at)

    @admin.display(description="envelope")
    def pretty_envelope(self, obj: OutboxMessage) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.envelope, indent=2, sort_keys=True))

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return _can_requeue(request)

    @admin.action(description="Requeue selected failed rows", permissions=["requeue"])
    def requeue_failed(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        count = relay.requeue(queryset)
        self.message_user(request, f"{count} failed row(s) put back to pending.", messages.SUCCESS)


@admin.register(InboxMessage)
class InboxMessageAdmin(TraceLinkMixin, ReadOnlyAdmin):
    list_display = ("handler", "type", "subject", "sequence", "event_id", "handled_at")
    list_filter = ("handler", "type")
    search_fields = ("subject",)
    search_help_text = "Subject or event id."
    date_hierarchy = "handled_at"

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if search_term:
            found |= queryset & _search_ids(queryset, search_term)
        return found, may_have_duplicates


# ----------------------------------------------------------------------------- overview
@dataclass
class QueueDepth:
    service: str
    name: str
    dlq_name: str
    visible: int | None = None
    in_flight: int | None = None
    delayed: int | None = None
    dlq: int | None = None
    error: str = ""


def outbox_by_type() -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One row per event type with its count in each state, and the totals."""
    states = [s.value for s in OutboxState]
    rows: dict[str, dict[str, Any]] = {}
    for r in OutboxMessage.objects.values("type", "state").annotate(n=Count("id")).order_by():
        row = rows.setdefault(r["type"], {"type": r["type"], **{s: 0 for s in states}})
        row[r["state"]] = r["n"]
    totals = {s: sum(row[s] for row in rows.values()) for s in states}
    return [rows[t] for t in sorted(rows)], totals


def queue_depths() -> tuple[list[QueueDepth], str]:
    """Each consuming service's queue and DLQ depth from SQS; when SQS cannot be reached
    the rows stay empty and the error is returned (one failed call, not one per queue)."""
    depths = [QueueDepth(service=s.service, name=s.name, dlq_name=s.dlq_name) for s in topology.queue_specs()]
    try:
        sqs = aws.quick_client("sqs")
    except Exception as exc:
        return depths, f"{type(exc).__name__}: {exc}"
    attrs = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    for depth in depths:
        try:
            try:
                url = sqs.get_queue_url(QueueName=depth.name)["QueueUrl"]
            except sqs.exceptions.QueueDoesNotExist:
                depth.error = "queue missing: run `manage.py setup_bus`"
                continue
            a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=attrs)["Attributes"]
            depth.visible = int(a.get("ApproximateNumberOfMessages", 0))
            depth.in_flight = int(a.get("ApproximateNumberOfMessagesNotVisible", 0))
            depth.delayed = int(a.get("ApproximateNumberOfMessagesDelayed", 0))
            try:
                dlq_url = sqs.get_queue_url(QueueName=depth.dlq_name)["QueueUrl"]
            except sqs.exceptions.QueueDoesNotExist:
                depth.error = "dead-letter queue missing: run `manage.py setup_bus`"
                continue
            d = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
            depth.dlq = int(d["Attributes"].get("ApproximateNumberOfMessages", 0))
        except Exception as exc:  # endpoint down, credentials, throttling: say so, do not 500
            return depths, f"{type(exc).__name__}: {exc}"
    return depths, ""


def _requeue_from_post(request: HttpRequest) -> None:
    if not _can_requeue(request):
        raise PermissionDenied
    failed = OutboxMessage.objects.filter(state=OutboxState.FAILED)
    if "requeue_all" in request.POST:
        count = relay.requeue(failed)
    else:
        ids = [int(i) for i in request.POST.getlist("ids") if i.isdigit()]
        count = relay.requeue(failed.filter(pk__in=ids))
    messages.success(request, f"{count} failed row(s) put back to pending; the relay publishes them next.")


def bus_overview(request: HttpRequest) -> HttpResponse:
    """The event-bus page (admin site URL ``admin:events_bus``)."""
    if not request.user.has_perm("events.view_outboxmessage"):
        raise PermissionDenied
    if request.method == "POST":
        _requeue_from_post(request)
        return HttpResponseRedirect(reverse("admin:events_bus"))

    now = timezone.now()
    by_type, totals = outbox_by_type()
    oldest = OutboxMessage.objects.filter(state=OutboxState.PENDING).aggregate(t=Min("created_at"))["t"]
    failed = OutboxMessage.objects.filter(state=OutboxState.FAILED).order_by("id")
    inbox = (
        InboxMessage.objects.values("handler").annotate(handled=Count("id"), last=Max("handled_at")).order_by("handler")
    )
    depths, sqs_error = queue_depths()
    context = {
        **admin.site.each_context(request),
        "title": "Event bus",
        "subtitle": None,
        "by_type": by_type,
        "totals": totals,
        "oldest_pending": oldest,
        "oldest_pending_seconds": (now - oldest).total_seconds() if oldest else None,
        "failed_rows": failed[:FAILED_ROWS_SHOWN],
        "failed_count": totals.get(OutboxState.FAILED, 0),
        "failed_shown": FAILED_ROWS_SHOWN,
        "inbox": inbox,
        "queues": depths,
        "sqs_error": sqs_error,
        "sqs_endpoint": aws.endpoint_label(),
        "can_requeue": _can_requeue(request),
        "outbox_url": reverse("admin:events_outboxmessage_changelist"),
        "inbox_url": reverse("admin:events_inboxmessage_changelist"),
    }
    return render(request, "admin/events/bus_overview.html", context)


@admin.register(ServiceGate)
class ServiceGateAdmin(ReadOnlyAdmin):
    """Which services take writes in this database (events/gate.py). Changed only by
    ``manage.py split_service``, never by hand: a gate opened mid-move could lose writes."""

    list_display = ("service", "state", "changed_at", "note")
