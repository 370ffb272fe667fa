"""Study files: good ones load, bad ones are refused with a message naming field and value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from learnforget.errors import UserError
from learnforget.plan import expand
from learnforget.study import load_studies, load_study, parse_study

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

GOOD = {
    "name": "t",
    "base": "builtin:micro",
    "target": {"domain": "math", "regime": "ift"},
    "methods": [
        {"kind": "full", "lr": [1e-4, 3e-4], "weight_decay": [0.0, 0.1]},
        {"kind": "lora", "lr": 1e-3, "r": [8, 64], "targets": ["attention", "all"],
         "use_rslora": True},
    ],
    "budgets": {"epochs": [0.5, 1]},
}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_study_is_valid(path: Path) -> None:
    for study in load_studies(path):
        assert expand(study), "an example study must plan at least one run"


def test_a_file_of_several_studies_needs_distinct_names(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(GOOD) + "---\n" + yaml.safe_dump(GOOD))
    with pytest.raises(UserError, match="different names"):
        load_studies(path)
    path.write_text(yaml.safe_dump(GOOD) + "---\n" + yaml.safe_dump({**GOOD, "name": "other"}))
    assert [s.name for s in load_studies(path)] == ["t", "other"]
    with pytest.raises(UserError, match="holds 2 studies"):
        load_study(path)


def test_good_study_defaults_follow_the_paper() -> None:
    study = parse_study(GOOD)
    lora = study.methods[1]
    assert lora.alpha is None and lora.r == [8, 64]
    runs = expand(study)
    alphas = {run.method.r: run.method.alpha for run in runs if run.method.kind == "lora"}
    assert alphas == {8: 16.0, 64: 128.0}  # alpha defaults to 2r
    assert study.schedule.name == "cosine" and study.schedule.min_lr_ratio == 0.01


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"target": {"domain": "biology", "regime": "ift"}}, ["target.domain", "'biology'",
                                                              "'code', 'math' or 'custom'"]),
        ({"methods": [{"kind": "lora", "lr": 1e-3, "rank": 8}]}, ["rank", "unknown field"]),
        ({"methods": [{"kind": "lora", "lr": 1e-3, "targets": "qkv"}]}, ["targets", "'qkv'",
                                                                         "'attention'"]),
        ({"methods": [{"kind": "full", "lr": -1}]}, ["lr", "-1", "greater than 0"]),
        ({"methods": [{"kind": "adapter", "lr": 1e-3}]}, ["methods.0", "'adapter'", "full"]),
        ({"budgets": {"tokens": [2000, 1000]}}, ["budgets", "strictly increasing"]),
        ({"budgets": {"tokens": [1000], "epochs": [1]}}, ["budgets", "exactly one"]),
        ({"optimizer": {"name": "sgd"}}, ["optimizer.name", "'sgd'", "'adamw' or 'lion'"]),
        ({"training": {"batch_size": 10, "grad_accum": 3}}, ["not divisible"]),
        ({"colour": "blue"}, ["colour", "unknown field"]),
        ({"target": {"domain": "custom", "regime": "cpt"}}, ["custom", "needs 'data'"]),
    ],
)
def test_bad_values_are_refused_with_field_value_and_allowed(change: dict, expected: list) -> None:
    with pytest.raises(UserError) as caught:
        parse_study({**GOOD, **change})
    message = str(caught.value)
    for fragment in expected:
        assert fragment in message, message


def test_bad_files_give_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_study(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_study(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(UserError, match="mapping"):
        load_study(scalar)


def test_cli_prints_a_message_not_a_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from learnforget.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**GOOD, "methods": [{"kind": "lora", "lr": 1e-3, "r": 0}]}))
    result = CliRunner().invoke(app, ["plan", str(bad)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "methods.0.lora.r.0" in result.output and "greater than or equal to 1" in result.output


def test_packaged_demos_are_the_example_files() -> None:
    """``learnforget demo`` runs the study files packaged with it; examples/ shows the same
    files to users, so the two copies must not drift."""
    from importlib.resources import files

    packaged = sorted(p for p in Path(str(files("learnforget") / "demos")).glob("*.yaml"))
    assert [p.name for p in packaged] == ["demo-full.yaml", "demo-micro.yaml", "demo.yaml"]
    examples = Path(__file__).parent.parent / "examples"
    for path in packaged:
        assert (examples / path.name).read_text() == path.read_text(), path.name
