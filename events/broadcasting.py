"""Instance queues for broadcast handlers.

A broadcast consumer creates its own queue ``{prefix}-{service}-{instance}`` at start,
subscribes it (raw delivery) to the topics of the service's broadcast handlers, tags it
with a heartbeat refreshed while it runs, and at a clean stop unsubscribes and deletes it
(unsubscribe first: moto fails every publish to a topic that still has a subscription
to a deleted queue). ``reap`` removes what crashed instances left behind: queues whose
heartbeat is older than a bound, and subscriptions whose queue no longer exists.

A running instance keeps its queue and subscriptions whole: the heartbeat also subscribes
the queue again to any topic whose subscription vanished (a topic deleted and created
again), and the consumer creates the whole queue again when it is gone (an emulator
restarted empty; ``events.consumer``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings

from . import aws, registry, topology

log = logging.getLogger("events.broadcast")

TAG_HEARTBEAT = "heartbeat"
TAG_INSTANCE = "instance"


def instance_id() -> str:
    host = "".join(c for c in socket.gethostname().lower() if c.isalnum())[:20] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _now() -> str:
    return str(int(time.time()))


@dataclass
class InstanceQueue:
    service: str
    instance: str
    url: str
    arn: str
    subscription_arns: list[str] = field(default_factory=list)
    topic_arns: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _beat: threading.Thread | None = None

    @classmethod
    def create(cls, service: str, instance: str, *, stop: threading.Event | None = None) -> InstanceQueue:
        sqs, sns = aws.client("sqs"), aws.client("sns")
        types = registry.subscriptions(service, broadcast=True)
        if not types:
            raise RuntimeError(f"Service {service!r} has no broadcast handlers.")
        name = aws.queue_name(service, instance=instance)
        attrs = {"FifoQueue": "true"} if aws.fifo() else {}
        url = sqs.create_queue(
            QueueName=name,
            Attributes={**attrs, "VisibilityTimeout": str(settings.CONSUMER_VISIBILITY_TIMEOUT)},
            tags={"bus": settings.BUS_PREFIX, "service": service, TAG_INSTANCE: instance, TAG_HEARTBEAT: _now()},
        )["QueueUrl"]
        arn = topology.queue_arn(url)
        topic_arns = [aws.topic_arn(t) for t in types]
        sqs.set_queue_attributes(
            QueueUrl=url, Attributes={"Policy": json.dumps(topology.queue_policy(arn, topic_arns))}
        )
        subs: list[str] = []
        try:
            subs.extend(_subscribe(sns, t_arn, arn) for t_arn in topic_arns)
        except Exception:
            # Half made (a topic missing until setup_bus ran): remove it, so that the queue
            # is found missing again and made whole on the next try, never left deaf.
            for sub in subs:
                sns.unsubscribe(SubscriptionArn=sub)
            sqs.delete_queue(QueueUrl=url)
            raise
        queue = cls(service=service, instance=instance, url=url, arn=arn, subscription_arns=subs, topic_arns=topic_arns)
        queue._beat = threading.Thread(target=queue._heartbeat, name="queue-heartbeat", daemon=True)
        queue._beat.start()
        log.info("broadcast queue %s created and subscribed to %s", name, ", ".join(types))
        return queue

    def _heartbeat(self) -> None:
        while not self.stop.wait(settings.BROADCAST_HEARTBEAT_SECONDS):
            try:
                aws.client("sqs").tag_queue(QueueUrl=self.url, Tags={TAG_HEARTBEAT: _now()})
                self.resubscribe_missing()
            except Exception as exc:
                log.warning("broadcast queue heartbeat failed: %s", exc)

    def resubscribe_missing(self) -> list[str]:
        """Subscribe the queue again to each topic whose subscription is gone; returns
        those topics' ARNs."""
        sns = aws.client("sns")
        restored = []
        for index, (topic_arn, sub) in enumerate(zip(self.topic_arns, self.subscription_arns, strict=True)):
            if self.stop.is_set():  # being deleted: its subscriptions are going on purpose
                break
            try:
                sns.get_subscription_attributes(SubscriptionArn=sub)
                continue
            except sns.exceptions.NotFoundException:
                pass
            self.subscription_arns[index] = _subscribe(sns, topic_arn, self.arn)
            restored.append(topic_arn)
            log.warning("broadcast queue %s: subscribed again to %s", self.url.rsplit("/", 1)[-1], topic_arn)
        return restored

    def delete(self) -> None:
        """Unsubscribe and delete the queue, once its heartbeat has ended: a heartbeat still
        under way would find the subscriptions gone and make them again, to a queue deleted
        a moment later (a subscription left behind; moto then fails every publish to
        those topics for the entries it cannot deliver)."""
        self.stop.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join(timeout=10)
        sns = aws.client("sns")
        for sub in self.subscription_arns:
            try:
                sns.unsubscribe(SubscriptionArn=sub)
            except Exception as exc:
                log.warning("unsubscribe %s failed: %s", sub, exc)
        aws.client("sqs").delete_queue(QueueUrl=self.url)
        log.info("broadcast queue %s unsubscribed and deleted", self.url.rsplit("/", 1)[-1])


def _subscribe(sns, topic_arn: str, queue_arn: str) -> str:
    return sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]


def _bus_subscriptions() -> list[dict]:
    subs = []
    for name, arn in aws.list_topic_arns().items():
        if name.startswith(f"{settings.BUS_PREFIX}-"):
            subs.extend(topology.subscriptions_of(arn))
    return subs


def reap(*, max_age_seconds: int) -> list[str]:
    """Remove instance queues whose heartbeat is older than ``max_age_seconds`` and the
    subscriptions of queues that no longer exist. Returns what was removed."""
    sqs, sns = aws.client("sqs"), aws.client("sns")
    removed: list[str] = []
    stale_arns: set[str] = set()
    live_arns: set[str] = set()
    urls = sqs.list_queues(QueueNamePrefix=f"{settings.BUS_PREFIX}-").get("QueueUrls", [])
    now = time.time()
    for url in urls:
        tags = sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
        arn = topology.queue_arn(url)
        if TAG_INSTANCE not in tags or tags.get("bus") != settings.BUS_PREFIX:
            live_arns.add(arn)
            continue
        if now - int(tags.get(TAG_HEARTBEAT, "0")) > max_age_seconds:
            stale_arns.add(arn)
        else:
            live_arns.add(arn)
    for sub in _bus_subscriptions():
        endpoint = sub.get("Endpoint", "")
        if sub.get("Protocol") != "sqs" or endpoint in live_arns:
            continue
        queue_name = endpoint.rsplit(":", 1)[-1]
        if endpoint in stale_arns or queue_name.startswith(f"{settings.BUS_PREFIX}-"):
            sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])
            removed.append(f"subscription {sub['TopicArn'].rsplit(':', 1)[-1]} -> {queue_name}")
    for url in urls:
        if topology.queue_arn(url) in stale_arns:
            sqs.delete_queue(QueueUrl=url)
            removed.append(f"queue {url.rsplit('/', 1)[-1]}")
    return removed
