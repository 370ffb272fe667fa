"""What a new user reads first: the README, the command help, the install output."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from learnforget.cli import app
from learnforget.measure.tasks import task_names

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["plan", "run", "report", "demo", "eval", "score-code", "spectrum"]


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], prog_name="learnforget",
                                env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_plain(command: str) -> None:
    text = _help(command)
    assert "<bool>" not in text  # flags take no value
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: learnforget {command} [OPTIONS]")
    assert "{" not in usage, usage
    assert "╭" not in text  # no rich panels


def test_every_command_is_listed_and_plain() -> None:
    listed = re.findall(r"^  ([a-z-]+)  ", _help(), flags=re.M)
    assert set(COMMANDS) <= set(listed)


def test_plan_usage_names_its_argument() -> None:
    assert _help("plan").splitlines()[0] == "Usage: learnforget plan [OPTIONS] STUDY_FILE"


def test_eval_help_lists_every_task() -> None:
    text = " ".join(_help("eval").split())
    for name in task_names():
        assert re.search(rf"\b{name}\b", text), name
    assert "source_cloze" in task_names() and "humaneval" in task_names()


def test_install_metadata_has_no_license_deprecation() -> None:
    pytest.importorskip("setuptools")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert not [w for w in caught if "license" in str(w.message).lower()]
    assert dist.metadata.license_expression == "Apache-2.0"


def test_readme_lists_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"README does not link docs/{page.name}"


def test_readme_says_how_bare_commands_run() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    bare = re.search(r"^learnforget ", readme, flags=re.M)
    activate = readme.find(". .venv/bin/activate")
    assert bare is not None and 0 <= activate < bare.start()
    assert readme.startswith("# learnforget")
    assert "./install.sh && .venv/bin/learnforget demo" in readme
