"""The import graph follows the flow stated in pyproject.toml's import-linter contracts (layers
from the CLI down to the store, no cycle between sibling modules at any depth). A module that
imports a higher layer, or a new top-level module missing from the contract, fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_imports_follow_the_layers_and_have_no_cycle(tmp_path: Path) -> None:
    # import-linter's own command, in a fresh interpreter (it builds the graph from the
    # installed package's source); its cache goes to tmp so the tree stays clean
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
         f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, "
         f"cache_dir={str(tmp_path)!r}, no_logo=True))"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout, result.stdout
