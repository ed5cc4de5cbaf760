"""The live feed of one web process: its own broadcast queue in, its own browsers out.

Every web process (each uvicorn worker) runs one ``Feed`` for its whole life (started and
stopped by the ASGI lifespan, ``LiveConfig.lifespan``). The feed is a broadcast consumer
of the service ``live``: at start it creates its *own* instance queue and subscribes it
to every event type of the catalogue (``events.broadcasting``: tagged with a heartbeat
while it runs, unsubscribed and deleted at a clean stop, removed by ``reap_queues`` if
the process dies). So every process gets every event, wherever it was written, and hands
it to the ``Hub``, which pushes it to each Server-Sent-Events stream open in this process.

Promises and limits:
- A browser connected to this process gets every event that reached the queue after the
  feed subscribed, within one long poll (an SQS long poll returns as soon as a message
  arrives). The page itself is read from the services on each refresh, so an event lost
  between two connections costs a stale page until the next event, never a wrong one.
- The broadcast handler runs without the inbox (in-process state; every instance must
  run it) and only renders a line and queues it: it never blocks on a slow browser. A
  browser whose queue is full (``QUEUE_SIZE`` events behind) misses events, not the page.
- SQS unreachable at start: the feed retries with back-off; the page works without it.
- The feed says whether it is up: every stream gets ``event: feed`` with ``live`` or
  ``down`` when it opens and at each change (the page's badge). ``down``: the queue is not
  open yet, or receives fail (SQS unreachable, the queue gone). When the emulator comes
  back empty (a restart), the feed's consumer creates its own queue and subscriptions
  again (``events.consumer``), the feed says ``live`` and events flow again, without a
  restart of the web process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

from django.conf import settings
from django.template.loader import render_to_string

from events import catalogue, registry
from events.consumer import Consumer
from events.envelope import Event

log = logging.getLogger("live.feed")

SERVICE = "live"
QUEUE_SIZE = 100


@dataclass(frozen=True)
class Message:
    """One Server-Sent Event: ``event`` name and ``data`` (one line of HTML)."""

    event: str
    data: str

    def encode(self) -> str:
        lines = "".join(f"data: {line}\n" for line in self.data.splitlines() or [""])
        return f"event: {self.event}\n{lines}\n"


LIVE, DOWN = "live", "down"  # the feed's states, as the page's streams hear them


class Hub:
    """Fans messages from the feed thread out to the asyncio queues of open streams, and
    keeps the feed's state (``LIVE``/``DOWN``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Message]]] = set()
        self.state = DOWN

    def set_state(self, state: str) -> None:
        """From any thread: the feed is ``LIVE`` or ``DOWN``; open streams hear a change."""
        with self._lock:
            changed, self.state = state != self.state, state
        if changed:
            self.publish(Message("feed", state))

    def state_message(self) -> Message:
        return Message("feed", self.state)

    def subscribe(self) -> asyncio.Queue[Message]:
        """A queue for the calling coroutine's stream (call from the event loop)."""
        queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=QUEUE_SIZE)
        with self._lock:
            self._subscribers.add((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Message]) -> None:
        with self._lock:
            self._subscribers = {s for s in self._subscribers if s[1] is not queue}

    @property
    def listeners(self) -> int:
        return len(self._subscribers)

    def close_all(self) -> None:
        """From any thread (a signal handler): end every open stream, so that a server
        stopping need not wait for browsers that never leave."""
        self.publish(CLOSE)

    def publish(self, message: Message) -> None:
        """From any thread: queue ``message`` for every open stream."""
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(_offer, queue, message)
            except RuntimeError:  # that stream's loop is closed: it is gone
                self.unsubscribe(queue)


CLOSE = Message("", "")  # the end of a stream


def _offer(queue: asyncio.Queue[Message], message: Message) -> None:
    try:
        queue.put_nowait(message)
    except asyncio.QueueFull:
        if message is CLOSE:
            queue.get_nowait()
            queue.put_nowait(message)
            return
        log.warning("live feed: a browser is %s events behind; dropped one", QUEUE_SIZE)


hub = Hub()


def summary(event: Event) -> str:
    """One line a person reads: what happened, from the event alone (no database)."""
    d = event.data
    match event.type:
        case "team.created":
            return f"Team {d.get('name')} created"
        case "team.renamed":
            return f"Team {d.get('old_name') or d.get('id')} renamed to {d.get('name')}"
        case "team.deleted":
            return f"Team {d.get('name')} deleted"
        case "player.added":
            return f"{d.get('name')} joined team {d.get('team_id')}"
        case "player.removed":
            return f"{d.get('name')} left team {d.get('team_id')}"
        case "player.transferred":
            return f"{d.get('name')} moved from team {d.get('from_team_id')} to team {d.get('to_team_id')}"
        case "transfer.requested" | "transfer.completed":
            state = event.type.split(".")[1]
            return f"Transfer {d.get('id')} {state} (player {d.get('player_id')}, fee {d.get('fee')})"
        case "transfer.rejected":
            return f"Transfer {d.get('id')} rejected: {d.get('reason')}"
        case "season.scheduled":
            return f"Season {d.get('name')} scheduled: {d.get('matchdays')} matchdays"
        case "fixture.completed":
            word = "corrected" if d.get("correction") else "recorded"
            return f"Result {word}: matchday {d.get('matchday')}, {d.get('home_goals')}\u2013{d.get('away_goals')}"
    return f"{event.type} {event.subject}"


def on_event(event: Event) -> None:
    """The broadcast handler: render the event's line and push it to this process's browsers."""
    html = render_to_string("live/_event.html", {"event": event, "summary": summary(event)})
    hub.publish(Message("league", " ".join(html.split())))


for _type, _declared in catalogue.EVENT_TYPES.items():
    if not _declared.retired:
        registry.handler(_type, service=SERVICE, broadcast=True)(on_event)


class Feed:
    """The broadcast consumer of one process, on a thread of its own."""

    def __init__(self, *, wait_seconds: int | None = None) -> None:
        self.wait_seconds = settings.LIVE_FEED_WAIT_SECONDS if wait_seconds is None else wait_seconds
        self.stop = threading.Event()
        self.subscribed = threading.Event()
        self.consumer: Consumer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="live-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = 1.0
        consumer: Consumer | None = None
        while not self.stop.is_set():
            if consumer is None:  # one consumer per queue: a retry opens the same queue again
                consumer = Consumer(SERVICE, wait_seconds=self.wait_seconds, stop=self.stop, broadcast=True)
                consumer.on_receive_state = self._receive_state
            try:
                consumer.open_instance_queue()
            except Exception as exc:
                hub.set_state(DOWN)
                log.warning("live feed: cannot open its broadcast queue (%s); retrying in %.0f s", exc, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            self.consumer = consumer
            self.subscribed.set()
            hub.set_state(LIVE)
            log.info("live feed: consuming %s", consumer.queue_name)
            try:
                consumer.run()
            except Exception as exc:
                if self.stop.is_set():  # e.g. SQS already gone at shutdown
                    log.warning("live feed: could not remove its queue at stop (%s); reap_queues will", exc)
                else:
                    log.exception("live feed: the consumer stopped; starting again")
                    self.stop.wait(delay)
            finally:
                self.subscribed.clear()
                hub.set_state(DOWN)
                consumer = None

    @staticmethod
    def _receive_state(trouble: str | None) -> None:
        if trouble is None:
            log.warning("live feed: receiving again")
        else:
            log.warning("live feed: down (its queue is %s)", trouble)
        hub.set_state(DOWN if trouble else LIVE)

    def close(self, timeout: float | None = None) -> None:
        """Stop after the long poll in progress; the instance queue is unsubscribed and deleted."""
        self.stop.set()
        if self._thread is not None:
            self._thread.join(self.wait_seconds + 5 if timeout is None else timeout)
