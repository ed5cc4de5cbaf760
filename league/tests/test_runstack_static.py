"""``runstack`` with ``DEBUG`` off (a manifest storage) collects the static files its pages name (the manifest),
and skips the collection while no source file changed."""

from __future__ import annotations

import io
import json
import os

from league.management.commands.runstack import Command


def test_static_files_are_collected_once_until_a_source_changes(settings, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "site.css").write_text("body { color: red }\n")
    settings.STATICFILES_DIRS = [source]
    settings.STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder"]
    settings.STATIC_ROOT = tmp_path / "static"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

    def collect() -> tuple[str, dict[str, str]]:
        command = Command(stdout=io.StringIO())
        command.collect_static()
        manifest = json.loads((tmp_path / "static" / "staticfiles.json").read_text())["paths"]
        return command.stdout.getvalue(), manifest

    said, first = collect()
    assert f"static    collected into {tmp_path / 'static'}" in said
    assert (tmp_path / "static" / first["site.css"]).exists()
    said, again = collect()
    assert said.startswith("static    up to date") and again == first
    (source / "site.css").write_text("body { color: blue }\n")
    os.utime(source / "site.css", ns=(1, 1))  # a different mtime, whatever the clock's resolution
    said, changed = collect()
    assert "collected into" in said and changed["site.css"] != first["site.css"]


def test_nothing_is_collected_without_a_manifest_storage(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "static"
    command = Command(stdout=io.StringIO())
    command.collect_static()
    assert command.stdout.getvalue() == "" and not (tmp_path / "static").exists()
