"""The live feed of one process (moto in-process): its own broadcast queue, subscribed to
every event type, hands each event to the streams open in the process, and is gone after
a clean stop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.db import transaction

import events
from events import aws, registry, relay
from events.broadcasting import TAG_INSTANCE
from live.feed import SERVICE, Feed, Hub, Message, hub

pytestmark = pytest.mark.django_db(transaction=True)


def instance_queues() -> list[str]:
    sqs = aws.client("sqs")
    urls = sqs.list_queues(QueueNamePrefix=aws.queue_name(SERVICE)).get("QueueUrls", [])
    return [u for u in urls if TAG_INSTANCE in sqs.list_queue_tags(QueueUrl=u).get("Tags", {})]


def test_every_event_type_has_a_broadcast_handler_on_the_page():
    from events import catalogue

    live = set(registry.subscriptions(SERVICE, broadcast=True))
    assert live == {t for t, e in catalogue.EVENT_TYPES.items() if not e.retired}
    assert not registry.handlers(service=SERVICE, broadcast=False)  # no shared queue, no inbox


def test_the_hub_hands_a_message_from_another_thread_to_each_open_stream():
    local = Hub()

    async def two_streams() -> list[Message]:
        a, b = local.subscribe(), local.subscribe()
        threading.Thread(target=local.publish, args=(Message("league", "<li>x</li>"),)).start()
        got = [await asyncio.wait_for(a.get(), 2), await asyncio.wait_for(b.get(), 2)]
        local.unsubscribe(a)
        local.unsubscribe(b)
        return got

    assert [m.data for m in asyncio.run(two_streams())] == ["<li>x</li>", "<li>x</li>"]
    assert local.listeners == 0


def test_the_stream_view_sends_each_message_and_ends_when_the_server_stops():
    """Under ASGI: a comment first, then one SSE per message; ``close_all`` (SIGTERM) ends it."""
    from django.test import AsyncClient

    async def read() -> list[str]:
        response = await AsyncClient().get("/live/events")
        assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
        chunks = response.streaming_content.__aiter__()
        got = [(await chunks.__anext__()).decode()]
        hub.publish(Message("league", "<li>x</li>"))
        got.append((await asyncio.wait_for(chunks.__anext__(), 2)).decode())
        hub.close_all()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(chunks.__anext__(), 2)
        return got

    first, second = asyncio.run(read())
    assert first.startswith("retry: 2000\n") and second == "event: league\ndata: <li>x</li>\n\n"
    assert hub.listeners == 0


def test_a_message_is_one_server_sent_event():
    assert (
        Message("league", "<li>a</li>\n<li>b</li>").encode() == "event: league\ndata: <li>a</li>\ndata: <li>b</li>\n\n"
    )


def publish_and_relay() -> None:
    with transaction.atomic():
        events.publish("team.created", subject=7, data={"id": 7, "name": "Feedham Town", "short_name": "TM"})
    assert relay.relay().published == 1


def test_the_feed_delivers_an_event_to_the_streams_of_its_process_and_cleans_up(bus):
    feed = Feed(wait_seconds=1)
    received: list[Message] = []

    async def listen() -> None:
        queue = hub.subscribe()
        try:
            feed.start()
            assert await asyncio.to_thread(feed.subscribed.wait, 10), "the feed never subscribed"
            assert len(instance_queues()) == 1
            await asyncio.to_thread(publish_and_relay)
            while not received or received[-1].event == "feed":  # the feed's state: live
                received.append(await asyncio.wait_for(queue.get(), 10))
        finally:
            hub.unsubscribe(queue)
            await asyncio.to_thread(feed.close)

    asyncio.run(listen())
    assert [m.event for m in received] == ["feed", "league"] and received[0].data == "live"
    assert "Team Feedham Town created" in received[1].data and 'data-type="team.created"' in received[1].data
    assert instance_queues() == []  # unsubscribed and deleted at the clean stop


def test_the_feed_waits_for_sqs_instead_of_dying(settings):
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:9"  # nothing listens there
    aws.reset()
    feed = Feed(wait_seconds=1)
    try:
        feed.start()
        time.sleep(1.5)
        assert feed._thread is not None and feed._thread.is_alive() and not feed.subscribed.is_set()
    finally:
        feed.close(timeout=10)
        aws.reset()
    assert not feed._thread.is_alive()


def test_a_queue_being_deleted_is_not_subscribed_again_by_its_heartbeat(monkeypatch):
    """A heartbeat under way when the queue is deleted must not subscribe it again (the
    subscription would outlive the queue): delete waits for the heartbeat, and a stopped
    queue restores nothing."""
    from events import broadcasting

    log: list[str] = []

    class Sns:
        class exceptions:
            NotFoundException = KeyError

        def get_subscription_attributes(self, SubscriptionArn):
            raise KeyError(SubscriptionArn)

        def subscribe(self, **kwargs):
            log.append("subscribe")
            return {"SubscriptionArn": "arn:sub:again"}

        def unsubscribe(self, SubscriptionArn):
            log.append(f"unsubscribe {SubscriptionArn}")

    class Sqs:
        def delete_queue(self, QueueUrl):
            log.append("delete queue")

    clients = {"sns": Sns(), "sqs": Sqs()}
    monkeypatch.setattr(broadcasting.aws, "client", lambda name, **kw: clients[name])
    queue = broadcasting.InstanceQueue(
        service="live", instance="i", url="http://q/live-i", arn="arn:q", subscription_arns=["arn:sub:1"],
        topic_arns=["arn:topic:1"],
    )  # fmt: skip

    def beat() -> None:  # a heartbeat that is past its stop check when delete begins
        time.sleep(0.3)
        log.append("heartbeat ended")

    queue._beat = threading.Thread(target=beat)
    queue._beat.start()
    queue.delete()

    assert log == ["heartbeat ended", "unsubscribe arn:sub:1", "delete queue"]
    assert queue.resubscribe_missing() == [] and "subscribe" not in log
