"""Two web instances side by side, as real ASGI server processes: each consumes its own
broadcast queue and delivers an event written anywhere to its own Server-Sent-Events
client; a clean stop unsubscribes and deletes both queues."""

from __future__ import annotations

import pytest
import requests
from rest_framework.authtoken.models import Token

from events import relay, topology
from live.testing import Stream, web_instances

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
                assert [name for name, _ in stream.events] == ["league"]
        finally:
            for stream in streams:
                stream.close()
