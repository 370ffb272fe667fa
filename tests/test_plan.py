"""The grid expands into runs with stable ids; plan shows parameters and budgets."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from learnforget.cli import app
from learnforget.plan import expand
from learnforget.study import parse_study

STUDY = {
    "name": "grid",
    "base": "builtin:micro",
    "target": {"domain": "code", "regime": "cpt"},
    "methods": [
        {"kind": "full", "lr": [1e-4, 3e-4, 1e-3]},
        {"kind": "lora", "lr": [1e-3, 3e-3], "r": [8, 64], "targets": ["attention", "mlp", "all"],
         "optimizer": ["adamw", "lion"]},
    ],
    "training": {"seeds": [0, 1]},
    "budgets": {"tokens": [10000, 20000]},
}


def test_grid_size_and_unique_ids() -> None:
    runs = expand(parse_study(STUDY))
    assert len(runs) == (3 + 2 * 2 * 3 * 2) * 2
    assert len({r.run_id for r in runs}) == len(runs)


def test_ids_are_stable_and_depend_only_on_the_run() -> None:
    ids = [r.run_id for r in expand(parse_study(STUDY))]
    assert ids == [r.run_id for r in expand(parse_study(STUDY))]
    # Renaming the study, adding a seed or another method does not change existing runs' ids.
    bigger = {**STUDY, "name": "other", "training": {"seeds": [0, 1, 2]},
              "methods": STUDY["methods"] + [{"kind": "full", "lr": [3e-3]}]}
    assert set(ids) < {r.run_id for r in expand(parse_study(bigger))}
    # A different LR is a different run.
    changed = {**STUDY, "methods": [{"kind": "full", "lr": [2e-4]}]}
    assert not set(ids) & {r.run_id for r in expand(parse_study(changed))}


def test_plan_command_lists_runs_with_parameters() -> None:
    small = {**STUDY, "methods": [{"kind": "full", "lr": [1e-3], "train_embeddings": False},
                                  {"kind": "lora", "lr": [1e-3], "r": [8], "targets": "all"}],
             "training": {"seeds": [0], "seq_len": 128}}  # micro's context is 128
    runs = expand(parse_study(small))
    import yaml

    from learnforget.planinfo import summarize

    summary = {s.label: s for s in summarize(runs)}
    full, lora = summary["full-frozen-emb"], summary["lora-r8-all"]
    assert full.total == lora.total - lora.trainable
    # micro: hidden 64, 2 layers; LoRA r=8 on q,k,v,o (64x64) and gate,up,down (64x256/256x64)
    per_layer = 4 * 8 * (64 + 64) + 3 * 8 * (64 + 256)
    assert lora.trainable == 2 * per_layer
    assert full.trainable == full.total - 2 * 1024 * 64  # embeddings and head frozen
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(yaml.safe_dump(small))
        result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    for run in runs:
        assert run.run_id in result.output
    assert "20,000 tokens" in result.output


@pytest.mark.parametrize(("name", "total", "share"), [("tiny", 2.10e6, 0.50),
                                                       ("tiny-vocab1k", 1.31e6, 0.80)])
def test_builtin_sizes_and_non_embedding_share(name: str, total: float, share: float) -> None:
    """docs/study.md's sizes: tiny-vocab1k keeps tiny's body, so 80% of it is not embeddings."""
    from transformers import LlamaForCausalLM

    from learnforget.builtin import BUILTINS, builtin_model_config

    spec = BUILTINS[name]
    # builtin_model_config reads only len(tokenizer) and its EOS id
    tokenizer = type("Vocabulary", (), {"__len__": lambda self: spec.vocab_size,
                                        "eos_token_id": 0})()
    config = builtin_model_config(spec, tokenizer)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    embeddings = model.get_input_embeddings().weight.numel() + model.lm_head.weight.numel()
    assert params == pytest.approx(total, rel=0.01)
    assert 1 - embeddings / params == pytest.approx(share, abs=0.01)
