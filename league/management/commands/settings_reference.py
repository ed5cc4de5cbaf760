"""``manage.py settings_reference``: the settings reference (docs/SETTINGS.md), generated from
``league/settings.py`` so that it cannot drift.

Every environment variable that ``league/settings.py`` reads through django-environ
(``env.str("NAME", default=...)`` and the like) becomes a row: the variable, the setting it
fills, its default (the source text; "required" where there is none) and its meaning: the
``#:`` comment right above the statement (a variable without one fails ``--check``), under
the banner of its section. Variables read
elsewhere (a process's own environment, before or outside Django's settings) are listed
in ``OUTSIDE_SETTINGS`` with their meaning.

``--write`` rewrites docs/SETTINGS.md; ``--check`` exits 1 when the file differs from what
the code says, or when a module outside the tests and the tooling reads an environment
variable that the reference does not name (CI runs it).
"""

from __future__ import annotations

import ast
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

TARGET = Path("docs/SETTINGS.md")
ENV_METHODS = {"str", "int", "bool", "float", "list", "json", "url", "path", "dict", "db_url", "cache_url"}
# Variables read outside league/settings.py, by the module that reads them.
OUTSIDE_SETTINGS: dict[str, tuple[str, str]] = {
    "DJANGO_SETTINGS_MODULE": ("manage.py, league/asgi.py, league/wsgi.py, league/celery.py", "the settings module; `league.settings` unless set"),
    "CONN_MAX_AGE": ("league/asgi.py", "forced to 0 under ASGI: a connection is opened and closed per request (no thread keeps one)"),
    "PROMETHEUS_MULTIPROC_DIR": ("events/metrics.py", "a directory shared by the worker processes of one server; set, `/metrics` adds up every process's counters"),
    "AWS_ACCESS_KEY_ID": ("boto3", "AWS credentials (with `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`): read by boto3's credential chain"),
    "AWS_SECRET_ACCESS_KEY": ("boto3", "see `AWS_ACCESS_KEY_ID`"),
    "DJANGO_SUPERUSER_USERNAME": ("runstack", "the admin user runstack creates on its first run (default `admin`)"),
    "DJANGO_SUPERUSER_PASSWORD": ("runstack", "its password; unset, runstack generates one and keeps it in `DATA_DIR/admin-password` (0600)"),
    "DJANGO_SUPERUSER_EMAIL": ("runstack", "its e-mail address (default empty)"),
    "TEAMS_SERVICE_TOKEN": ("runstack", "the transfers service's token for the teams API; unset, runstack creates a service account"),
    "HEALTHCHECK_PORT": ("docker/healthcheck.py", "the port the container's health check asks (default 8000)"),
}
SKIP_DIRS = ("devtools/", "bench/", "faults/", "scripts/", "docker/")
SELF = "league/management/commands/settings_reference.py"  # its docstring shows a read
READ = re.compile(
    r"""os\.(?:environ(?:\.get|\.setdefault)?|getenv)\s*[(\[]\s*["']([A-Z][A-Z0-9_]+)["']"""
    r"""|["']([A-Z][A-Z0-9_]+)["']\s+(?:not\s+)?in\s+os\.environ"""
    r"""|\benv\.\w+\(\s*["']([A-Z][A-Z0-9_]+)["']"""
)


@dataclass
class Row:
    variable: str
    setting: str
    default: str
    meaning: str
    section: str
    line: int


def _doc_comment(lines: list[str], index: int) -> str:
    """The ``#:`` lines right above line ``index`` (0-based): the setting's meaning."""
    block: list[str] = []
    i = index - 1
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        block.insert(0, lines[i].lstrip()[2:].strip())
        i -= 1
    return " ".join(block)


def rows(source: str) -> list[Row]:
    lines = source.splitlines()
    tree = ast.parse(source)
    section = ""
    banners: list[tuple[int, str]] = []
    for n, line in enumerate(lines):
        if line.startswith("# ---") and n + 1 < len(lines) and lines[n + 1].startswith("# ") and not lines[n + 1].startswith("# ---"):
            title = []
            for following in lines[n + 1 :]:
                if following.startswith("# ---") or not following.startswith("#"):
                    break
                if not following.startswith("# http"):
                    title.append(following[2:].strip())
            banners.append((n, " ".join(title)))
    found: list[Row] = []
    for stmt in ast.walk(tree):
        if not isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign):
            continue
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        setting = ", ".join(ast.get_source_segment(source, t) or "" for t in targets)
        for call in ast.walk(stmt.value) if stmt.value is not None else ():
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
                continue
            if not (isinstance(call.func.value, ast.Name) and call.func.value.id == "env" and call.func.attr in ENV_METHODS):
                continue
            if not (call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
                continue
            default = next((ast.get_source_segment(source, k.value) for k in call.keywords if k.arg == "default"), None)
            section = next((title for line, title in reversed(banners) if line < stmt.lineno), "")
            meaning = _doc_comment(lines, stmt.lineno - 1)
            found.append(Row(call.args[0].value, setting, f"`{default}`" if default is not None else "required", meaning, section, stmt.lineno))
    seen: dict[str, Row] = {}
    for row in sorted(found, key=lambda r: r.line):
        if row.variable not in seen or (row.meaning and not seen[row.variable].meaning):
            seen[row.variable] = row
    return sorted(seen.values(), key=lambda r: r.line)


def render(source: str) -> str:
    out = [
        "# Settings reference",
        "",
        "Generated from `league/settings.py` by `manage.py settings_reference --write`; CI fails when",
        "this file and the code differ. Every setting comes from an environment variable (or a `.env`",
        "file beside `manage.py`); with none set, `manage.py runstack` runs on embedded defaults.",
        "Each variable may instead come from a file: `<NAME>_FILE` names it (a secret under",
        "`/run/secrets`, one final newline dropped; the file wins when both are set).",
        "",
    ]
    section = None
    for row in rows(source):
        if row.section != section:
            section = row.section
            title = section.split(". ")[0].split(" (")[0].split(":")[0].rstrip(".")
            out += ["", f"## {title}", "", section, "", "| variable | setting | default | meaning |", "|---|---|---|---|"]
        cell = row.meaning.replace("|", "\\|")
        out.append(f"| `{row.variable}` | `{row.setting}` | {row.default.replace('|', chr(92) + '|')} | {cell} |")
    out += ["", "## Read outside the settings", "", "| variable | read by | meaning |", "|---|---|---|"]
    for name, (where, meaning) in sorted(OUTSIDE_SETTINGS.items()):
        out.append(f"| `{name}` | {where} | {meaning} |")
    return "\n".join(out) + "\n"


def undocumented(root: Path, documented: set[str]) -> dict[str, list[str]]:
    """Environment variables read by production modules (not tests, not the tooling) that
    the reference does not name, with where each is read."""
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    missing: dict[str, list[str]] = {}
    for name in files:
        if name.startswith(SKIP_DIRS) or "/tests/" in name or name.endswith(("conftest.py", "testing.py", SELF)):
            continue
        for n, line in enumerate((root / name).read_text().splitlines(), 1):
            for match in READ.finditer(line):
                variable = next(g for g in match.groups() if g)
                if variable not in documented:
                    missing.setdefault(variable, []).append(f"{name}:{n}")
    return missing


class Command(BaseCommand):
    help = "Print the settings reference generated from league/settings.py (--write: docs/SETTINGS.md; --check: CI)."

    def add_arguments(self, parser):
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--write", action="store_true", help=f"rewrite {TARGET}")
        mode.add_argument("--check", action="store_true", help=f"exit 1 if {TARGET} is stale or a variable read anywhere is missing")

    def handle(self, *args, write: bool, check: bool, **options):
        root = Path(settings.BASE_DIR)
        text = render((root / "league" / "settings.py").read_text())
        if write:
            (root / TARGET).write_text(text)
            self.stdout.write(f"wrote {TARGET}")
        elif check:
            problems = []
            current = (root / TARGET).read_text() if (root / TARGET).exists() else ""
            if current != text:
                problems.append(f"{TARGET} is stale: run `manage.py settings_reference --write` and commit it.")
            table = rows((root / "league" / "settings.py").read_text())
            for row in table:
                if not row.meaning:
                    problems.append(f"{row.variable} (league/settings.py:{row.line}) has no `#:` line saying what it means.")
            documented = {r.variable for r in table} | set(OUTSIDE_SETTINGS)
            for variable, places in sorted(undocumented(root, documented).items()):
                problems.append(
                    f"{variable} is read at {', '.join(places)} but is not in the reference: read it in "
                    "league/settings.py, or name it in OUTSIDE_SETTINGS (league/management/commands/settings_reference.py)."
                )
            if problems:
                raise CommandError("\n".join(problems))
            self.stdout.write(f"{TARGET} is up to date; every variable read is in it.")
        else:
            self.stdout.write(text)
