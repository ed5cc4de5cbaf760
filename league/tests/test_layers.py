"""The import contracts (``.importlinter``) hold the layers: a copy of the tree with one
forbidden import added fails ``lint-imports`` and names the contract it breaks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.slow


def _tree_copy(tmp_path: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "*.py", ".importlinter"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in files.stdout.split():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, target)
    return tmp_path


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=600,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    )


def test_the_tree_as_it_is_keeps_every_contract(tmp_path):
    result = _lint(_tree_copy(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # The project reaching into a service's logic instead of wiring it by name.
        ("league/placements.py", "import teams.services  # noqa", "The project wires services by name"),
        # A service reaching up into the project's embedded stack.
        ("teams/selectors.py", "import league.management.commands.runstack  # noqa", "Layers:"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, contract):
    tree = _tree_copy(tmp_path)
    with open(tree / module, "a") as f:
        f.write(f"\n{line}\n")
    result = _lint(tree)
    assert result.returncode != 0, result.stdout[-3000:]
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout[-3000:]
