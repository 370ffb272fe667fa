"""A study on the user's own data: local JSONL for IFT (prompt/response and messages) and CPT."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from learnforget.cli import app
from learnforget.store import Store


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _recipes(n: int) -> list[tuple[str, str]]:
    rng = random.Random(0)
    fruits = ["apple", "pear", "plum", "fig", "lime", "kiwi", "date", "grape"]
    pairs = []
    for i in range(n):
        a, b = rng.sample(fruits, 2)
        pairs.append((f"How do I make a {a} and {b} salad, variant {i}?",
                      f" Cut the {a}, slice the {b}, mix them and serve cold."))
    return pairs


def _run(tmp_path: Path, target: dict, name: str) -> Store:
    study = {
        "name": name, "base": "builtin:micro", "target": target,
        "methods": [{"kind": "lora", "lr": [5e-3], "r": [4]}],
        "training": {"batch_size": 8, "seq_len": 96},
        "budgets": {"steps": [3]},
        "evaluation": {"forgetting": ["source_bpb"], "limit": 4, "spectrum": False},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    out = tmp_path / name
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return Store(out / "results.sqlite")


def test_custom_ift_and_cpt_studies_run_and_measure_held_out_data(tmp_path: Path) -> None:
    pairs = _recipes(400)
    prompt_file = _write_jsonl(tmp_path / "pairs.jsonl",
                               [{"prompt": p, "response": r} for p, r in pairs])
    chat_file = _write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
        for p, r in pairs])
    text_file = _write_jsonl(tmp_path / "docs.jsonl", [{"text": p + r} for p, r in pairs])
    for name, target in [
        ("ift", {"domain": "custom", "regime": "ift", "data": str(prompt_file)}),
        ("chat", {"domain": "custom", "regime": "ift", "data": str(chat_file)}),
        ("cpt", {"domain": "custom", "regime": "cpt", "data": str(text_file)}),
    ]:
        store = _run(tmp_path, target, name)
        rows = {(r["task"], r["metric"]): r["value"] for r in store.measurements()
                if r["step"] == 3}
        assert rows[("target_bpb", "bpb")] > 0
        assert rows[("target_bpb", "bpb_delta")] < 0, f"{name}: the held-out data was not learned"
        assert ("source_bpb", "bpb_delta") in rows
        split = {r["metric"]: r["value"] for r in store.measurements() if r["task"] == "data"}
        assert split["examples"] == 400 and 0 < split["heldout_examples"] < 60, split
        assert 0 <= split["heldout_near_duplicate_share"] <= 1


def test_a_code_study_trains_on_the_data_it_names(tmp_path: Path) -> None:
    # the same code CPT study on the built-in corpus and on the user's files: the data path is
    # used (not ignored and then reported), learning is measured on the code domain's held-out
    from learnforget.data.target import training_material
    from learnforget.study import TargetSpec

    docs = [f"def add_{i}(a, b):\n    return a + b * {i}\n" * 20 for i in range(60)]
    files = _write_jsonl(tmp_path / "code.jsonl", [{"text": d} for d in docs])
    target = TargetSpec(domain="code", regime="cpt", data=str(files))
    assert training_material(target) == docs
    pairs = _write_jsonl(tmp_path / "math.jsonl",
                         [{"prompt": f"What is {i} + 1?", "response": f" {i + 1}"}
                          for i in range(30)])
    math_pairs = training_material(TargetSpec(domain="math", regime="ift", data=str(pairs)))
    assert [p.prompt for p in math_pairs][:2] == ["What is 0 + 1?", "What is 1 + 1?"]
    finals = {}
    for name, extra in (("builtin", {}), ("own", {"data": str(files)})):
        store = _run(tmp_path, {"domain": "code", "regime": "cpt", **extra}, name)
        finals[name] = {(r["task"], r["metric"]): r["value"] for r in store.measurements()
                        if r["step"] == 3}
    assert ("code_bpb", "bpb") in finals["own"]  # the code domain's learning measurement
    assert finals["own"][("code_bpb", "bpb")] != finals["builtin"][("code_bpb", "bpb")]


@pytest.mark.parametrize("domain, regime", [("custom", "ift"), ("code", "cpt")])
def test_a_missing_data_path_is_a_clear_error_in_every_domain(tmp_path: Path, domain: str,
                                                              regime: str) -> None:
    study = {
        "name": "missing", "base": "builtin:micro",
        "target": {"domain": domain, "regime": regime, "data": str(tmp_path / "nope.jsonl")},
        "methods": [{"kind": "full", "lr": [1e-3]}], "budgets": {"steps": [2]},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    for command in (["plan", str(path)], ["run", str(path), "--out", str(tmp_path / "o")]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert "nope.jsonl" in result.output and "Traceback" not in result.output
