"""``runstack``'s admin: a new admin's password is kept in a 0600 file under DATA_DIR and
every run says where, so a second run does not leave the user locked out."""

from __future__ import annotations

import io
import stat

import pytest
from django.contrib.auth import get_user_model

from league.management.commands.runstack import Command


@pytest.fixture
def command(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    monkeypatch.delenv("DJANGO_SUPERUSER_USERNAME", raising=False)
    settings.DATA_DIR = tmp_path
    cmd = Command(stdout=io.StringIO())
    return cmd


def test_the_first_run_keeps_the_password_in_a_private_file(command, db, tmp_path):
    token = command.ensure_admin()
    file = tmp_path / "admin-password"
    password = file.read_text().strip()
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert get_user_model().objects.get(username="admin").check_password(password)
    out = command.stdout.getvalue()
    assert password in out and str(file) in out and len(token) == 40


def test_a_later_run_says_where_the_password_is_without_printing_it(command, db, tmp_path):
    command.ensure_admin()
    password = (tmp_path / "admin-password").read_text().strip()
    again = Command(stdout=io.StringIO())
    again.ensure_admin()
    out = again.stdout.getvalue()
    assert f"password in {tmp_path / 'admin-password'}" in out and password not in out


def test_an_admin_made_elsewhere_is_told_how_to_set_a_password(command, db):
    get_user_model().objects.create_superuser("admin", "", "pw-elsewhere-123")
    command.ensure_admin()
    assert "manage.py changepassword admin" in command.stdout.getvalue()
