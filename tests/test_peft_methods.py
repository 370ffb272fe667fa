"""``kind: peft``: any PEFT method trains on builtin:micro, saves a checkpoint that plain PEFT
loads with the same logits, merges where the method merges (same logits again), and is measured
(ΔW where it merges, "no ΔW" where it does not); its study errors are PEFT's own plus the fix."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from conftest import micro_study
from peft import PeftModel

from learnforget.base import load_base
from learnforget.data.prepare import build_stream
from learnforget.errors import UserError
from learnforget.measure.base_measurement import measure_base
from learnforget.methods import apply_method, count_parameters, merges, scoring_view
from learnforget.plan import expand, method_name
from learnforget.runner import execute_run
from learnforget.store import Store
from learnforget.study import parse_study
from learnforget.train import train_loop

torch.set_num_threads(1)

METHODS = {
    "vera": {"peft_type": "VERA", "r": 16, "target_modules": "all"},
    "ia3": {"peft_type": "IA3", "target_modules": "all", "feedforward_modules": "mlp"},
    "loha": {"peft_type": "LOHA", "r": 4, "target_modules": "all"},
    "lokr": {"peft_type": "LOKR", "r": 4, "target_modules": "all"},
    "oft": {"peft_type": "OFT", "oft_block_size": 16, "target_modules": "attention"},
    "boft": {"peft_type": "BOFT", "boft_block_size": 4, "target_modules": "attention"},
    "adalora": {"peft_type": "ADALORA", "init_r": 4, "target_r": 2, "target_modules": "all"},
    "prompt": {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4},
}
MERGING = set(METHODS) - {"prompt"}


def peft_study(config: dict, **changes) -> dict:
    """The micro study with one ``kind: peft`` method."""
    return micro_study(methods=[{"kind": "peft", "lr": [5e-3], "config": config}],
                       budgets={"steps": [3]}, **changes)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()


@pytest.mark.parametrize("name", list(METHODS))
def test_a_peft_method_trains_saves_reloads_and_merges(name: str) -> None:
    (run,) = expand(parse_study(peft_study(METHODS[name])))
    torch.manual_seed(run.seed)
    loaded = load_base(run.base, log=lambda m: None)
    stream = build_stream(run, loaded.tokenizer)
    model = apply_method(loaded.model, run.method, total_steps=3)
    trainable, total = count_parameters(model)
    assert 0 < trainable < total
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    folder = Path(tempfile.mkdtemp(prefix="learnforget-peft-"))
    losses: list[float] = []
    result = train_loop(model, loaded.tokenizer, stream, run, [3], folder, lambda *a: None,
                        on_step=lambda step, tokens, loss, tps: losses.append(loss))
    assert result.status == "finished" and all(map(torch.isfinite, torch.tensor(losses)))
    moved = [n for n, p in model.named_parameters()
             if n in before and not torch.equal(before[n], p.detach())]
    assert moved, "training changed no adapter weight"
    if name == "adalora":  # the per-step hook ran: ranks were allocated
        assert model.peft_config["default"].rank_pattern
    model.eval()
    ids = torch.tensor([stream.batch(0)["input_ids"][0, :24].tolist()])
    trained = _logits(model, ids)
    fresh = load_base(run.base, log=lambda m: None).model
    reloaded = PeftModel.from_pretrained(fresh, folder / "checkpoint-3")
    reloaded.eval()
    plain = _logits(reloaded, ids)[:, -ids.shape[1]:]  # prompt tuning: after its virtual tokens
    torch.testing.assert_close(plain, trained, atol=1e-5, rtol=1e-5)
    assert merges(model) == (name in MERGING)
    with scoring_view(model) as scored:
        assert (scored is not model) == (name in MERGING)
        torch.testing.assert_close(_logits(scored, ids), trained, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["vera", "prompt"])
def test_a_peft_run_is_measured_with_its_delta_w_or_none(name: str, tmp_path: Path) -> None:
    study = parse_study(peft_study(METHODS[name]))
    measure_base(study, tmp_path, log=lambda m: None)
    (run,) = expand(study)
    assert execute_run(study, run, tmp_path, log=lambda m: None) == "finished"
    store = Store(tmp_path / "results.sqlite")
    rows = {(r["task"], r["metric"]): r["value"] for r in store.measurements(run.run_id)}
    assert rows[("code_bpb", "bpb")] > 0 and ("source_bpb", "bpb_delta") in rows
    assert rows[("params", "trainable")] < rows[("params", "total")]
    if name == "vera":
        assert rows[("spectrum", "matrices_changed")] == 14  # 7 modules × 2 layers
        assert rows[("spectrum", "rank90")] >= 1 and ("spectrum", "intruders") in rows
        assert ("spectrum", "no_delta_w") not in rows
    else:
        assert rows[("spectrum", "no_delta_w")] == 1.0
    store.close()


def test_labels_and_names_are_rendered_from_the_config() -> None:
    study = parse_study(micro_study(methods=[
        {"kind": "peft", "lr": [1e-3], "config": {"peft_type": "vera", "r": [64, 256],
                                                  "target_modules": "all"}},
        {"kind": "peft", "lr": [1e-3], "config": {"peft_type": "ADALORA", "init_r": 8,
                                                  "target_modules": ["attention", "mlp"]}}]))
    runs = expand(study)
    assert [r.label for r in runs] == ["peft-vera-r64-all", "peft-vera-r256-all",
                                       "peft-adalora-init_r8-attention",
                                       "peft-adalora-init_r8-mlp"]
    assert method_name(runs[1].method) == "VeRA r=256 (all)"
    assert method_name(runs[2].method) == "AdaLoRA init_r=8 (attention)"


def test_a_config_file_is_the_same_method_as_its_config(tmp_path: Path) -> None:
    from peft import VeraConfig

    VeraConfig(r=256, target_modules=["q_proj"], task_type="CAUSAL_LM").save_pretrained(tmp_path)
    from_file = parse_study(peft_study(None) | {"methods": [
        {"kind": "peft", "lr": [5e-3], "config_file": str(tmp_path)}]})
    written = parse_study(peft_study({"peft_type": "VERA", "target_modules": ["q_proj"]}))
    assert [r.run_id for r in expand(from_file)] == [r.run_id for r in expand(written)]


@pytest.mark.parametrize("config, message", [
    ({"peft_type": "VERAA"}, "'VERAA' is not a valid PeftType; PEFT's types are ADALORA"),
    ({"peft_type": "VERA", "rank": 4},
     "unexpected keyword argument 'rank'; VERA's fields are bias, d_initial"),
    ({"peft_type": "ADALORA", "total_step": 10}, "total_step is set by each run"),
    ({"r": 4}, "config needs 'peft_type'"),
])
def test_an_unknown_type_or_field_gets_peft_message_and_the_fix(config: dict,
                                                                message: str) -> None:
    with pytest.raises(UserError, match="methods.0") as error:
        parse_study(peft_study(config))
    assert message in str(error.value)


def test_the_memory_estimate_counts_a_peft_method_as_a_frozen_base_with_adapters() -> None:
    from learnforget.memory_estimate import estimate_runs

    study = parse_study(micro_study(methods=[
        {"kind": "full", "lr": [1e-3]},
        {"kind": "peft", "lr": [1e-3], "config": METHODS["vera"]}]))
    full, vera = estimate_runs(expand(study))
    assert vera.estimate.optimizer < full.estimate.optimizer
    assert vera.estimate.gradients < full.estimate.gradients


def test_the_report_compares_peft_methods_beside_lora_never_as_lora(tmp_path: Path) -> None:
    from learnforget.analysis.claim_data import is_paper_lora, is_plain_lora
    from learnforget.analysis.frame import load_frame
    from learnforget.analysis.peft_comparison import peft_comparison
    from learnforget.pipeline import write_study_report

    study = parse_study(micro_study(methods=[
        {"kind": "full", "lr": [1e-3]}, {"kind": "lora", "lr": [5e-3], "r": [4]},
        {"kind": "peft", "lr": [5e-3], "config": {"peft_type": "LORA", "r": 4,
                                                  "target_modules": "all"}},
        {"kind": "peft", "lr": [5e-3], "config": METHODS["prompt"]}],
        budgets={"steps": [3]}))
    measure_base(study, tmp_path, log=lambda m: None)
    for run in expand(study):
        assert execute_run(study, run, tmp_path, log=lambda m: None) == "finished"
        assert is_paper_lora(run.method) == (run.method.kind == "lora")
        assert is_plain_lora(run.method) == (run.method.kind == "lora")
    (tmp_path / "study.json").write_text(study.model_dump_json())
    frame = load_frame(tmp_path)
    table = peft_comparison(frame).set_index("label")
    assert list(table.index) == ["full", "lora-r4-all", "peft-lora-r4-all",
                                 "peft-prompttuning-num_virtual_tokens4"]
    assert table.at["peft-prompttuning-num_virtual_tokens4", "no_delta_w"]
    assert table.at["peft-lora-r4-all", "rank90"] >= 1
    assert table.at["peft-lora-r4-all", "trainable"] == table.at["lora-r4-all", "trainable"]
    page, _ = write_study_report(tmp_path)
    html = page.read_text()
    assert "PEFT methods beside LoRA" in html and "no ΔW" in html
    assert "PEFT LoRA r=4 (all)" in html and "prompt tuning (num_virtual_tokens=4)" in html
    header = (tmp_path / "measurements.csv").read_text().splitlines()[0]
    assert ",peft," in header
