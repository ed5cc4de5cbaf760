"""The bus in the admin: the overview page, and the read-only outbox and inbox."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

import events
from devtools.netutil import free_port
from events.models import InboxMessage, OutboxMessage, OutboxState

BUS_URL = "/admin/events/bus/"


def _publish(subject: int, name: str = "Ajax") -> OutboxMessage:
    with transaction.atomic():
        return events.publish("team.created", subject=subject, data={"id": subject, "name": name, "short_name": "TM"})


def _fail(row: OutboxMessage, error: str = "AuthorizationError: no publish on topic") -> OutboxMessage:
    OutboxMessage.objects.filter(pk=row.pk).update(state=OutboxState.FAILED, attempts=10, last_error=error)
    row.refresh_from_db()
    return row


def test_the_admin_index_links_the_bus_page(admin_client):
    response = admin_client.get("/admin/")
    assert response.status_code == 200
    assert reverse("admin:events_bus") == BUS_URL
    assert f'href="{BUS_URL}"' in response.text and "Event bus overview" in response.text


def test_bus_page_shows_outbox_inbox_and_queue_depths(admin_client, bus):
    _publish(1)
    _publish(2, "PSV")
    bus.drain()  # published, and handled by every consuming service
    _publish(3, "Feyenoord")  # left pending, written 90 s ago
    OutboxMessage.objects.filter(subject="3").update(created_at=timezone.now() - timedelta(seconds=90))
    _fail(_publish(4, "Twente"))

    response = admin_client.get(BUS_URL)

    assert response.status_code == 200
    ctx = response.context
    assert ctx["totals"] == {"pending": 1, "published": 2, "failed": 1}
    assert ctx["by_type"] == [{"type": "team.created", "pending": 1, "published": 2, "failed": 1}]
    assert 90 <= ctx["oldest_pending_seconds"] < 90 + 60
    assert [r.subject for r in ctx["failed_rows"]] == ["4"]
    assert "AuthorizationError: no publish on topic" in response.text
    inbox = {row["handler"]: row["handled"] for row in ctx["inbox"]}
    assert inbox and all(n == 2 for n in inbox.values())
    assert ctx["sqs_error"] == ""
    queues = ctx["queues"]
    assert queues and all(q.visible == 0 and q.in_flight == 0 and q.dlq == 0 and not q.error for q in queues)


def test_bus_page_reports_queue_backlog_and_dead_letters(admin_client, bus):
    from events import aws

    _publish(1)
    bus.relay()  # published, not consumed yet: it waits in each subscribed queue
    spec = next(q for q in admin_client.get(BUS_URL).context["queues"] if q.service == "transfers")
    assert spec.visible == 1
    aws.client("sqs").send_message(QueueUrl=aws.queue_url(spec.dlq_name), MessageBody="{}")
    spec = next(q for q in admin_client.get(BUS_URL).context["queues"] if q.service == "transfers")
    assert spec.dlq == 1


def test_bus_page_says_so_when_sqs_is_unreachable(admin_client, db, settings):
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings.HEALTH_CHECK_TIMEOUT = 0.5

    response = admin_client.get(BUS_URL)

    assert response.status_code == 200
    assert "SQS is unreachable" in response.text
    assert response.context["sqs_error"]
    assert all(q.visible is None for q in response.context["queues"])


def test_requeue_from_the_bus_page(admin_client, db):
    failed = [_fail(_publish(i)) for i in (1, 2, 3)]

    response = admin_client.post(BUS_URL, {"ids": [failed[0].pk], "requeue": "1"})
    assert response.status_code == 302
    assert OutboxMessage.objects.get(pk=failed[0].pk).state == OutboxState.PENDING
    assert OutboxMessage.objects.filter(state=OutboxState.FAILED).count() == 2

    admin_client.post(BUS_URL, {"requeue_all": "1"})
    row = OutboxMessage.objects.get(pk=failed[2].pk)
    assert row.state == OutboxState.PENDING and row.attempts == 0 and row.next_attempt_at is None


def test_bus_page_needs_the_outbox_view_permission(client, db):
    staff = get_user_model().objects.create_user("ops", password="pw-ops-12345", is_staff=True)
    client.force_login(staff)
    assert client.get(BUS_URL).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_outboxmessage"))
    staff = get_user_model().objects.get(pk=staff.pk)
    client.force_login(staff)
    response = client.get(BUS_URL)
    assert response.status_code == 200
    assert not response.context["can_requeue"]
    # Viewing is not requeueing.
    row = _fail(_publish(1))
    assert client.post(BUS_URL, {"requeue_all": "1"}).status_code == 403
    assert OutboxMessage.objects.get(pk=row.pk).state == OutboxState.FAILED


def test_anonymous_users_are_sent_to_the_login(client, db):
    response = client.get(BUS_URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_outbox_changelist_filters_searches_and_is_read_only(admin_client, db):
    a = _publish(1)
    b = _fail(_publish(2))
    url = reverse("admin:events_outboxmessage_changelist")

    response = admin_client.get(url)
    assert response.status_code == 200
    for column in ("Type", "Subject", "Sequence", "State", "Attempts", "Created", "Published"):
        assert column in response.text
    assert '<td class="field-aggregate">team 1</td>' in response.text  # the aggregate, not a bare 1
    assert "Event bus overview" in response.text
    assert list(admin_client.get(url, {"state": "failed"}).context["cl"].result_list) == [b]
    assert list(admin_client.get(url, {"type": "team.created"}).context["cl"].result_list) == [b, a]
    assert list(admin_client.get(url, {"q": str(a.event_id)}).context["cl"].result_list) == [a]
    assert list(admin_client.get(url, {"q": a.event_id.replace("-", "")}).context["cl"].result_list) == [a]
    assert list(admin_client.get(url, {"q": "2"}).context["cl"].result_list) == [b]

    detail = admin_client.get(reverse("admin:events_outboxmessage_change", args=[a.pk]))
    assert detail.status_code == 200
    assert "&quot;type&quot;: &quot;team.created&quot;" in detail.text  # the envelope, pretty-printed
    assert 'name="_save"' not in detail.text
    assert admin_client.get(reverse("admin:events_outboxmessage_add")).status_code == 403


def test_outbox_search_by_correlation_id(admin_client, db):
    from events import context

    with context.bound(correlation="req-42"):
        row = _publish(1)
    _publish(2)
    url = reverse("admin:events_outboxmessage_changelist")
    assert list(admin_client.get(url, {"q": "req-42"}).context["cl"].result_list) == [row]


def test_requeue_action_on_the_outbox_changelist(admin_client, db):
    pending = _publish(1)
    failed = _fail(_publish(2))
    url = reverse("admin:events_outboxmessage_changelist")

    response = admin_client.post(
        url, {"action": "requeue_failed", "_selected_action": [pending.pk, failed.pk]}, follow=True
    )

    assert response.status_code == 200
    assert "1 failed row(s) put back to pending." in response.text
    assert OutboxMessage.objects.filter(state=OutboxState.PENDING).count() == 2


@pytest.mark.parametrize("perm, has_action", [("view_outboxmessage", False), ("change_outboxmessage", True)])
def test_requeue_action_needs_the_change_permission(client, db, perm, has_action):
    staff = get_user_model().objects.create_user("ops", password="pw-ops-12345", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename=perm))
    client.force_login(staff)
    _fail(_publish(1))
    response = client.get(reverse("admin:events_outboxmessage_changelist"))
    assert response.status_code == 200
    assert ("requeue_failed" in response.text) is has_action


def test_inbox_changelist(admin_client, bus):
    row = _publish(1)
    bus.drain()
    url = reverse("admin:events_inboxmessage_changelist")
    response = admin_client.get(url)
    assert response.status_code == 200
    handled = list(response.context["cl"].result_list)
    assert handled and all(str(m.event_id) == str(row.event_id) for m in handled)
    handler = handled[0].handler
    assert list(admin_client.get(url, {"handler": handler}).context["cl"].result_list) == [handled[0]]
    assert len(admin_client.get(url, {"q": str(row.event_id)}).context["cl"].result_list) == len(handled)
    assert admin_client.get(reverse("admin:events_inboxmessage_change", args=[handled[0].pk])).status_code == 200
    assert InboxMessage.objects.count() == len(handled)
