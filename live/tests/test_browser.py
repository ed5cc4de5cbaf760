"""In a real browser (headless Chromium, Debian's package, driven by selenium): the league
page on each of two web instances changes after a result posted through the API, without
a reload (how fast is the bench's concern: e2e_latency; the test prints what it saw). Takes the screenshot docs/league-page.png (rewritten with
``UPDATE_SCREENSHOTS=1``, like league/tests/test_browser.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from devtools.testing import BusDriver
from events import relay, topology
from live.testing import chromium, web_instances

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SCREENSHOT = Path(settings.BASE_DIR) / "docs" / "league-page.png"


@pytest.fixture
def browsers():
    """Two independent Chromium browsers, one for each web instance."""
    with chromium() as one, chromium() as two:
        yield one, two


def api(session: requests.Session, method: str, url: str, **kwargs) -> dict:
    response = session.request(method, url, timeout=10, **kwargs)
    assert response.status_code in (200, 201), f"{method} {url}: {response.status_code} {response.text}"
    return response.json()


def results(body):
    return body["results"] if isinstance(body, dict) else body


def read(driver, element_id: str, how):
    """``how(element)`` for the element with ``element_id``, found again if htmx swapped it
    out between the find and the read (a live page re-renders while it is read)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(40):
        try:
            return how(driver.find_element(By.ID, element_id))
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"#{element_id} kept being replaced for 2 s")


def test_each_instance_shows_a_result_without_reload(
    browsers,
    moto_server,
    django_user_model,
    tmp_path,
):
    from selenium.webdriver.support.ui import WebDriverWait

    topology.ensure()
    bus = BusDriver(services=topology.consuming_services())
    call_command("seed_demo", "--teams", "8", "--squad", "11")
    # Posting results and teams is the league staff's (kernel/roles.py).
    user = django_user_model.objects.create_superuser("desk", "desk@example.com", "pw-desk-12345")
    session = requests.Session()
    session.headers["Authorization"] = f"Token {Token.objects.create(user=user).key}"

    with web_instances(2, moto_server) as (first, second):
        bus.drain()  # the fixtures and transfers replicas know the teams
        season = api(session, "POST", f"{first.url}/api/seasons/", json={"name": "2026/27", "starts_on": "2026-08-01"})
        fixtures = results(api(session, "GET", f"{first.url}/api/seasons/{season['id']}/fixtures/?limit=100"))
        for fixture, (home, away) in zip(fixtures[:6], [(2, 0), (1, 1), (3, 2), (0, 1), (2, 2), (4, 1)], strict=False):
            api(
                session,
                "PATCH",
                f"{first.url}/api/fixtures/{fixture['id']}/",
                json={"home_goals": home, "away_goals": away},
            )
        teams = results(api(session, "GET", f"{first.url}/api/teams/?limit=100"))
        mover = teams[0]["players"][-1]
        api(
            session,
            "POST",
            f"{first.url}/api/transfers/",
            json={
                "player_id": mover["id"],
                "from_team_id": teams[0]["id"],
                "to_team_id": teams[1]["id"],
                "fee": "1250000.00",
            },
        )
        bus.drain()  # the transfer completes

        pages = {first.url: browsers[0], second.url: browsers[1]}
        for url, driver in pages.items():
            driver.get(f"{url}/")
            WebDriverWait(driver, 10).until(lambda d: read(d, "live-status", lambda e: e.text) == "live")
            driver.execute_script("window.loadedOnce = 'yes'")  # a reload would lose it

        target = fixtures[6]  # matchday 2 (8 teams: 4 games a matchday), not played yet
        assert target["matchday"] == 2 and target["home_goals"] is None
        home_id = target["home_team"]["id"]
        row = f"standing-{home_id}"
        before = {url: read(d, row, lambda e: e.get_attribute("data-played")) for url, d in pages.items()}

        # A result posted through the API of the first instance; the relay runs at once, as
        # the on-commit kick does under runstack.
        api(session, "PATCH", f"{first.url}/api/fixtures/{target['id']}/", json={"home_goals": 5, "away_goals": 0})
        started = time.monotonic()
        relay.relay()
        for url, driver in pages.items():
            WebDriverWait(driver, 30, poll_frequency=0.05).until(
                lambda d, was=before[url]: read(d, row, lambda e: e.get_attribute("data-played")) != was,
                message=f"{url}: the table did not change within 30 s of the result",
            )
            assert driver.execute_script("return window.loadedOnce") == "yes", f"{url} reloaded the page"
            assert "Result recorded: matchday 2, 5\u20130" in read(driver, "ticker", lambda e: e.text)
        elapsed = time.monotonic() - started

        driver = browsers[0]
        driver.execute_script("document.querySelectorAll('#squads details').forEach((d, i) => d.open = i < 4)")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, max(900, min(int(height) + 100, 2400)))
        time.sleep(0.5)  # let the page lay out at the new size
        shot = driver.get_screenshot_as_png()
    assert shot.startswith(b"\x89PNG") and len(shot) > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not SCREENSHOT.exists():
        SCREENSHOT.write_bytes(shot)
    (tmp_path / SCREENSHOT.name).write_bytes(shot)
    print(f"both pages changed {elapsed:.2f} s after the API answered the PATCH")


def test_the_badge_says_feed_down_while_the_emulator_is_empty_and_live_once_the_feed_is_back(moto_server):
    """The page stays open (no reload) while the emulator loses every queue: its badge says
    "feed down", then "live" again once the web's feed has its queue back."""
    from selenium.webdriver.support.ui import WebDriverWait

    from devtools import emulators

    topology.ensure()
    with web_instances(1, moto_server) as (web,), chromium() as driver:
        driver.get(f"{web.url}/")
        badge = lambda d: read(d, "live-status", lambda e: e.text)  # noqa: E731
        WebDriverWait(driver, 15).until(lambda d: badge(d) == "live")
        driver.execute_script("window.loadedOnce = 'yes'")  # a reload would lose it
        emulators.reset(moto_server)  # what a restarted, empty emulator holds
        WebDriverWait(driver, 20).until(lambda d: badge(d) == "feed down")
        topology.ensure()  # setup_bus, as runstack runs it after a restart
        WebDriverWait(driver, 30).until(lambda d: badge(d) == "live")
        assert driver.execute_script("return window.loadedOnce") == "yes"
