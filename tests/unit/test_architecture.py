"""docs/architecture.txt is the generated import graph of the tree as it is: regenerate it
(``scripts/import_graph.py``) when the layers change. The rules themselves are checked by
import-linter (``lint-imports``, contracts in pyproject.toml); this keeps the drawing honest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def generated() -> str:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "import_graph.py")],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout


def test_the_committed_graph_is_the_generated_one() -> None:
    assert (ROOT / "docs" / "architecture.txt").read_text() == generated(), (
        "run: .venv/bin/python scripts/import_graph.py > docs/architecture.txt"
    )


def test_the_graph_shows_the_layer_rules() -> None:
    rows = {line.split()[0]: line for line in generated().splitlines()[4:] if line.strip()}
    assert rows["domain"].split("|")[0].split()[1:] == ["-"]  # imports no other layer
    assert rows["domain"].split("|")[1].strip() == "-"  # and no framework
    assert "agents" not in rows["web"].split("|")[0].split()
    assert "sink" not in rows["web"].split("|")[0].split()
    assert "agents" not in rows["sink"].split("|")[0].split()
