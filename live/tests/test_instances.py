"""Two web instances side by side, as real ASGI server processes: each consumes its own
broadcast queue and delivers an event written anywhere to its own Server-Sent-Events
client; a clean stop unsubscribes and deletes both queues."""

from __future__ import annotations

import pytest
import requests
from rest_framework.authtoken.models import Token

from devtools import emulators
from devtools.testing import wait_until
from events import relay, topology
from live.testing import Stream, instance_queues, web_instances

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_each_web_instance_delivers_the_event_to_its_own_stream(moto_server, django_user_model):
    topology.ensure()
    # Posting results and teams is the league staff's (kernel/roles.py).
    user = django_user_model.objects.create_superuser("desk", "desk@example.com", "pw-desk-12345")
    token = Token.objects.create(user=user).key
    with web_instances(2, moto_server) as (first, second):
        streams = [Stream(f"{web.url}/live/events") for web in (first, second)]
        try:
            for stream in streams:
                assert stream.opened.wait(10), f"{stream.url} never opened"
            # Written through the first instance's API; the second knows only through its queue.
            response = requests.post(
                f"{first.url}/api/teams/",
                json={"name": "Streamwick Athletic"},
                headers={"Authorization": f"Token {token}"},
                timeout=10,
            )
            assert response.status_code == 201, response.text
            assert relay.relay().published == 1
            for stream in streams:
                assert stream.wait_for("Team Streamwick Athletic created", timeout=5) < 5
                assert [name for name, _ in stream.events if name != "feed"] == ["league"]
        finally:
            for stream in streams:
                stream.close()


def feed_states(stream: Stream) -> list[str]:
    return [data for name, data in stream.events if name == "feed"]


def test_a_web_instance_recreates_its_feed_after_the_emulator_lost_everything_and_says_so(
    moto_server, django_user_model
):
    """A restarted (empty) emulator loses every instance queue and subscription. The web's
    feed says ``down`` on its open streams, recreates its own queue and subscriptions once
    the bus is back (``setup_bus``, which runstack runs after a restart), says ``live``
    again, and the next event reaches the stream, without restarting the web."""
    topology.ensure()
    user = django_user_model.objects.create_superuser("desk", "desk@example.com", "pw-desk-12345")
    token = Token.objects.create(user=user).key
    with web_instances(1, moto_server) as (web,):
        stream = Stream(f"{web.url}/live/events")
        try:
            wait_until(lambda: feed_states(stream)[-1:] == ["live"], timeout=10, what="the feed to say live")
            emulators.reset(moto_server)  # what a moto restarted empty holds: nothing
            wait_until(lambda: feed_states(stream)[-1:] == ["down"], timeout=15, what="the feed to say down")
            topology.ensure()  # setup_bus
            wait_until(lambda: feed_states(stream)[-1:] == ["live"], timeout=30, what="the feed to be live again")
            assert len(instance_queues()) == 1
            response = requests.post(
                f"{web.url}/api/teams/",
                json={"name": "Phoenix Rovers"},
                headers={"Authorization": f"Token {token}"},
                timeout=10,
            )
            assert response.status_code == 201, response.text
            assert relay.relay().published == 1
            assert stream.wait_for("Team Phoenix Rovers created", timeout=10) < 10
        finally:
            stream.close()
