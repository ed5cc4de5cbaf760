"""Outbox, inbox and per-subject sequences.

The outbox row is written in the same transaction as the domain change it describes
(``events.publish``), so an event exists if and only if the change committed. The relay
publishes rows at least once; the inbox row, written in the same transaction as a
handler's side effects, makes handling effectively once.
"""

from __future__ import annotations

import json
import uuid

from django.db import models
from django.db.models import Q


class OutboxState(models.TextChoices):
    PENDING = "pending", "pending"
    PUBLISHED = "published", "published"
    FAILED = "failed", "failed"


class OutboxFailure(models.TextChoices):
    """Why a row is ``failed``: only errors that retrying cannot fix, or transient errors
    that lasted longer than ``OUTBOX_RETRY_FOR_SECONDS``."""

    TOPIC_MISSING = "topic_missing", "topic missing (run setup_bus)"
    ACCESS_DENIED = "access_denied", "access denied (check the IAM policy)"
    TOO_LARGE = "too_large", "message too large for SNS"
    REJECTED = "rejected", "rejected by SNS (a bad request)"
    GAVE_UP = "gave_up", "transient errors for longer than OUTBOX_RETRY_FOR_SECONDS"


class OutboxMessage(models.Model):
    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=100, db_index=True)
    subject = models.CharField(max_length=100)
    # "<aggregate>:<subject>": the unit of ordering and of the sequence.
    aggregate_key = models.CharField(max_length=200)
    sequence = models.PositiveBigIntegerField()
    envelope = models.JSONField()
    state = models.CharField(max_length=10, choices=OutboxState.choices, default=OutboxState.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    sns_message_id = models.CharField(max_length=100, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # Which relay's claim the lease belongs to; a relay renews only its own leases.
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True)
    # The trace (events/trace.py): the request id every event of a request carries, the
    # event whose handler wrote this one, and the HTTP request that wrote it (if any).
    correlation_id = models.CharField(max_length=128, blank=True)
    causation_id = models.CharField(max_length=64, blank=True)
    request = models.CharField(max_length=300, blank=True, help_text="The HTTP request that wrote the event.")
    request_at = models.DateTimeField(null=True, blank=True, help_text="When that request arrived.")
    # Set with state ``failed``: which kind of error it was (empty otherwise).
    failure = models.CharField(max_length=20, choices=OutboxFailure.choices, blank=True)
    # When the current run of transient errors began: they are retried until
    # ``OUTBOX_RETRY_FOR_SECONDS`` after it.
    retrying_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["correlation_id"], name="outbox_correlation"),
            # The relay's "due" query reads only pending rows: a partial index keeps its
            # cost independent of the published history.
            models.Index(fields=["id"], name="outbox_pending", condition=Q(state="pending")),
            # "Is an older row of this subject still unpublished?"
            models.Index(
                fields=["aggregate_key", "id"],
                name="outbox_unpublished_subject",
                condition=~Q(state="published"),
            ),
            models.Index(fields=["published_at"], name="outbox_published_at", condition=Q(state="published")),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.subject} #{self.sequence} ({self.state})"

    def body(self) -> str:
        """The envelope as the JSON text SNS carries. A row the relay claimed on PostgreSQL
        holds the text the database returned (``envelope_text``, the ``envelope`` field left
        deferred): it is sent as it is, never decoded and encoded again."""
        text = self.__dict__.get("envelope_text")
        return text if text is not None else json.dumps(self.envelope, separators=(",", ":"))

    def envelope_fields(self) -> dict:
        """The decoded envelope, for callers that need a field of it (tracing). A claimed
        row without a ``traceparent`` in its text is not decoded: an empty dict."""
        text = self.__dict__.get("envelope_text")
        if text is None:
            return self.envelope
        return json.loads(text) if '"traceparent"' in text else {}


class InboxMessage(models.Model):
    """One row per (event, handler) that was handled: the duplicate filter."""

    event_id = models.UUIDField()
    handler = models.CharField(max_length=200)
    type = models.CharField(max_length=100)
    subject = models.CharField(max_length=100)
    sequence = models.PositiveBigIntegerField(null=True)
    # The hop from the bus into this service (events/trace.py): which consumer took the
    # event, when it entered the queue (SQS SentTimestamp), when the consumer received
    # it, when the handler started, and when it finished (in the handler's transaction).
    service = models.CharField(max_length=50, blank=True)
    correlation_id = models.CharField(max_length=128, blank=True)
    causation_id = models.CharField(max_length=64, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    handled_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["event_id", "handler"], name="inbox_once_per_handler")]
        indexes = [
            models.Index(fields=["handler", "handled_at"], name="inbox_handler_time"),
            models.Index(fields=["correlation_id"], name="inbox_correlation"),
        ]

    def __str__(self) -> str:
        return f"{self.handler} <- {self.type} {self.event_id}"


class SubjectSequence(models.Model):
    """The last sequence number given to an aggregate; bumped by an atomic upsert."""

    key = models.CharField(max_length=200, primary_key=True)
    last = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.key} = {self.last}"


class GateState(models.TextChoices):
    OPEN = "open", "open"
    PAUSED = "paused", "paused (being moved)"
    MOVED = "moved", "moved to its own database"


class ServiceGate(models.Model):
    """Whether a service's writes may commit in this database (``events/gate.py``).

    One row per service, made by a migration, so that every writer can lock its row."""

    service = models.CharField(max_length=50, primary_key=True)
    state = models.CharField(max_length=10, choices=GateState.choices, default=GateState.OPEN)
    changed_at = models.DateTimeField(auto_now=True)
    note = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"{self.service}: {self.state}"
