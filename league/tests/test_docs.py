"""The docs cannot drift from the code: the settings reference is what league/settings.py
says, every test a document cites exists, and nothing cites a tracker's numbers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from league.management.commands import settings_reference

ROOT = Path(__file__).resolve().parents[2]
CITED = re.compile(r"`((?:[\w-]+/)*test_\w+\.py)(?:::(\w+))?`|`(test_\w+)`")


def tracked(*patterns: str) -> list[str]:
    return subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


def test_the_settings_reference_is_the_one_the_code_generates():
    call_command("settings_reference", "--check")


def test_a_setting_without_its_meaning_is_reported():
    source = 'env = None\n#: Seconds a thing waits.\nWAIT = env.int("WAIT", default=3)\nRETRIES = env.int("RETRIES", default=2)\n'
    rows = {row.variable: row for row in settings_reference.rows(source)}
    assert rows["WAIT"].meaning == "Seconds a thing waits."
    assert rows["WAIT"].default == "`3`"
    assert rows["RETRIES"].meaning == ""


def test_a_variable_read_outside_the_settings_must_be_named(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "worker.py").write_text('import os\nLIMIT = os.environ.get("WORKER_LIMIT")\nif "X_FLAG" in os.environ: pass\n')
    (tmp_path / "app" / "tests").mkdir()
    (tmp_path / "app" / "tests" / "test_w.py").write_text('import os\nos.environ.get("ONLY_IN_TESTS")\n')
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    missing = settings_reference.undocumented(tmp_path, documented={"X_FLAG"})
    assert missing == {"WORKER_LIMIT": ["app/worker.py:2"]}


def test_check_fails_on_a_stale_reference(settings, tmp_path):
    (tmp_path / "league").mkdir()
    (tmp_path / "league" / "settings.py").write_text((ROOT / "league" / "settings.py").read_text())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "SETTINGS.md").write_text("# Settings reference\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    settings.BASE_DIR = tmp_path
    with pytest.raises(CommandError, match="stale"):
        call_command("settings_reference", "--check")


def test_every_test_a_document_cites_exists():
    files = set(tracked("*.py"))
    names: dict[str, set[str]] = {}
    for name in files:
        if Path(name).name.startswith("test_"):
            names[name] = set(re.findall(r"^(?:async )?def (test_\w+)", (ROOT / name).read_text(), re.M))
    every_test = set().union(*names.values())
    missing = []
    for doc in tracked("*.md"):
        for n, line in enumerate((ROOT / doc).read_text().splitlines(), 1):
            for path, test, bare in CITED.findall(line):
                if path and "/" not in path:
                    path = next((f for f in files if f.endswith("/" + path)), path)
                if path and path not in files:
                    missing.append(f"{doc}:{n}: {path}")
                elif path and test and test not in names.get(path, ()):
                    missing.append(f"{doc}:{n}: {path}::{test}")
                elif bare and not any(t == bare or t.startswith(bare) for t in every_test):
                    missing.append(f"{doc}:{n}: {bare}")
    assert not missing, "documents cite tests that do not exist:\n" + "\n".join(missing)


def test_no_comment_or_document_cites_a_tracker_number():
    pattern = re.compile(r"\b[Ii]ssues? #?\d+|\b[Ii]tems? \d+[ ,:).]")
    hits = []
    for name in tracked("*.py", "*.md", "*.yml", "*.sh", "*.toml", ".ci/run"):
        if name.startswith("docs/bench/"):
            continue
        for n, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{name}:{n}: {line.strip()[:120]}")
    assert not hits, "say what the code guarantees instead of citing a tracker:\n" + "\n".join(hits)
