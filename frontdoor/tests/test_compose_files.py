"""The compose profiles' front-door configurations (docker/frontdoor/*.conf) are what
frontdoor.nginx.render makes now, and Debian's nginx accepts them."""

from __future__ import annotations

import subprocess

import pytest

from devtools import requires
from frontdoor import compose
from frontdoor.nginx import FrontDoor, nginx_binary


@pytest.mark.parametrize("profile", sorted(compose.PROFILES))
def test_checked_in_file_is_current(profile):
    assert compose.path(profile).read_text() == compose.config(profile), (
        f"{compose.path(profile)} is stale: run `python -m frontdoor.compose`"
    )


@pytest.mark.parametrize("profile", sorted(compose.PROFILES))
def test_nginx_accepts_it(profile, tmp_path):
    requires.program(not FrontDoor.available(), "nginx", "nginx")
    text = compose.path(profile).read_text()
    assert "pid /tmp/nginx.pid;" in text and "listen 8080;" in text and "user " not in text
    # The same file with its /tmp paths moved into this test's directory.
    conf = tmp_path / "nginx.conf"
    conf.write_text(text.replace(" /tmp/", f" {tmp_path}/").replace("/dev/stdout", f"{tmp_path}/access.log"))
    done = subprocess.run(
        [str(nginx_binary()), "-t", "-c", str(conf), "-e", "stderr"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
