"""training.precision on builtin:micro (CPU): bf16-pure rounds small full-finetuning updates
away and bf16-mixed keeps them; bf16-mixed tracks fp32's losses; fp16-mixed skips and counts
overflowing steps; LoRA keeps fp32 adapters on a bf16 base; checkpoints are measured without
autocast; old run ids stay stable."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from learnforget.base import load_base
from learnforget.data.prepare import build_stream
from learnforget.errors import UserError
from learnforget.methods import apply_method
from learnforget.plan import expand
from learnforget.planinfo import precision_warnings
from learnforget.precision import bf16_lost_update_threshold
from learnforget.study import parse_study
from learnforget.train import train_loop, training_base_spec

torch.set_num_threads(1)
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="auto resolves on a CPU here")


def study(precision: str, method: dict, steps: list[int], dtype: str = "float32") -> dict:
    """A micro code-CPT study with a constant LR (so one step moves weights by the LR)."""
    return {
        "name": "precision",
        "base": {"model": "builtin:micro", "dtype": dtype},
        "target": {"domain": "code", "regime": "cpt"},
        "methods": [method],
        "training": {"batch_size": 8, "seq_len": 64, "precision": precision},
        "schedule": {"name": "constant", "warmup": 0.0},
        "budgets": {"steps": steps},
    }


def train(data: dict, out: Path, on_checkpoint=None, loss_scale: float | None = None):
    """Load the run's base as training does, train it in-process; returns
    (model, initial parameters, per-step losses, train rows, result)."""
    (run,) = expand(parse_study(data))
    torch.manual_seed(run.seed)
    loaded = load_base(training_base_spec(run), log=lambda m: None)
    stream = build_stream(run, loaded.tokenizer)
    model = apply_method(loaded.model, run.method)
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}
    losses: list[float] = []
    rows: list = []

    def checkpoint(model, step, tokens, folder, train_rows):
        rows.extend(train_rows)
        if on_checkpoint is not None:
            on_checkpoint(model, step, folder)

    result = train_loop(model, loaded.tokenizer, stream, run, [int(v) for v in run.budgets.values],
                        out, checkpoint, on_step=lambda s, t, loss, tps: losses.append(loss),
                        loss_scale=loss_scale)
    return model, initial, losses, rows, result


def layer_matrices(named: dict) -> dict[str, torch.Tensor]:
    """The transformer blocks' weight matrices (every entry gets a gradient each step, unlike
    the embedding rows of tokens absent from a batch)."""
    return {k: v for k, v in named.items() if ".layers." in k and v.ndim == 2}


def test_one_small_step_is_rounded_away_in_bf16_pure_and_kept_in_bf16_mixed(tmp_path) -> None:
    lr = 1e-5  # the paper's full-finetuning range starts here
    threshold = bf16_lost_update_threshold(lr)
    changed = {}
    for precision in ("bf16-pure", "bf16-mixed"):
        model, initial, _, _, result = train(
            study(precision, {"kind": "full", "lr": [lr]}, [1]), tmp_path / precision)
        assert result.status == "finished"
        after = layer_matrices(dict(model.named_parameters()))
        before = layer_matrices(initial)
        moved = torch.cat([(after[k].detach() != before[k]).flatten() for k in after])
        changed[precision] = moved.float().mean().item()
        weights = {p.dtype for p in after.values()}
        if precision == "bf16-pure":
            assert weights == {torch.bfloat16}
            # no weight at or above the planner's threshold moved: the step was rounded away
            big = torch.cat([(before[k].float().abs() > threshold).flatten() for k in after])
            assert big.float().mean() > 0.5  # most weights are that large
            assert not (moved & big).any()
        else:
            assert weights == {torch.float32}  # fp32 master weights
    assert changed["bf16-pure"] < 0.25, changed
    assert changed["bf16-mixed"] > 0.99, changed


LOSS_TOLERANCE = 0.01  # nats per step; measured differences are below 1e-3 on micro


def test_bf16_mixed_tracks_fp32_losses(tmp_path) -> None:
    method = {"kind": "full", "lr": [1e-3]}
    _, _, fp32, _, _ = train(study("fp32", method, [6]), tmp_path / "fp32")
    _, _, mixed, _, _ = train(study("bf16-mixed", method, [6]), tmp_path / "mixed")
    assert len(fp32) == len(mixed) == 6
    assert fp32[-1] < fp32[0]  # it trains
    gaps = [abs(a - b) for a, b in zip(fp32, mixed, strict=True)]
    assert max(gaps) < LOSS_TOLERANCE, gaps
    assert max(gaps) > 0  # bf16 compute really ran (it is not fp32 under another name)


def test_fp16_mixed_skips_and_counts_overflowing_steps(tmp_path) -> None:
    """A loss scale of 2^24 makes real fp16 gradients overflow (inf): those steps are skipped,
    the scale halves on each, and the run goes on once the scaled gradients fit."""
    initial_scale = 2.0**24
    seen: dict = {}

    def on_checkpoint(model, step, folder):
        seen[step] = {k: v.detach().clone() for k, v in model.named_parameters()}

    model, initial, losses, rows, result = train(
        study("fp16-mixed", {"kind": "full", "lr": [1e-3]}, [1, 8]), tmp_path,
        on_checkpoint, loss_scale=initial_scale)
    assert result.status == "finished", result
    metrics = {(step, m.metric): m.value for step, _, m in rows}
    assert metrics[(1, "skipped_steps")] == 1
    assert all(torch.equal(seen[1][k], initial[k]) for k in initial)  # the update was skipped
    skipped, scale = metrics[(8, "skipped_steps")], metrics[(8, "loss_scale")]
    assert 1 <= skipped < 8
    assert skipped == math.log2(initial_scale / scale)  # one halving per skipped step
    assert any(not torch.equal(seen[8][k], initial[k]) for k in initial)  # later steps trained
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(math.isfinite(loss) for loss in losses)


def test_fp16_mixed_resumes_with_its_loss_scale(tmp_path) -> None:
    """Stopping at step 3 and resuming gives the uninterrupted run's weights and skip count:
    the scaler's state travels with the checkpoint (a fresh 2^24 scale would skip again)."""
    (run,) = expand(parse_study(study("fp16-mixed", {"kind": "full", "lr": [1e-3]}, [3, 8])))

    def fresh():
        torch.manual_seed(run.seed)
        loaded = load_base(training_base_spec(run), log=lambda m: None)
        return apply_method(loaded.model, run.method), loaded.tokenizer

    finals = []
    for stops in ([], [3]):
        rows: list = []
        model, tokenizer = fresh()
        stream = build_stream(run, tokenizer)
        out = tmp_path / f"stop{len(stops)}"
        for stop in stops:  # train to the stop, then start again from a fresh model
            train_loop(model, tokenizer, stream, run, [stop], out, lambda *a: None,
                       loss_scale=2.0**24)
            model, _ = fresh()
        result = train_loop(model, tokenizer, stream, run, [3, 8], out,
                            lambda m, s, t, f, r, rows=rows: rows.extend(r),
                            resume_step=stops[-1] if stops else 0, loss_scale=2.0**24)
        assert result.status == "finished"
        skipped = {m.value for step, _, m in rows if step == 8 and m.metric == "skipped_steps"}
        finals.append((skipped, {k: v.detach().clone() for k, v in model.named_parameters()}))
    (skipped_a, weights_a), (skipped_b, weights_b) = finals
    assert skipped_a == skipped_b and min(skipped_a) >= 1
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_lora_under_bf16_mixed_has_fp32_adapters_on_a_bf16_base(tmp_path) -> None:
    data = study("bf16-mixed", {"kind": "lora", "lr": [5e-3], "r": [4]}, [2], dtype="bfloat16")
    (run,) = expand(parse_study(data))
    assert training_base_spec(run).dtype == "bfloat16"
    model, initial, _, _, result = train(data, tmp_path)
    assert result.status == "finished"
    trainable = {k: p for k, p in model.named_parameters() if p.requires_grad}
    frozen = {k: p for k, p in model.named_parameters() if not p.requires_grad}
    assert trainable and all("lora_" in k for k in trainable)
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    assert {p.dtype for k, p in frozen.items() if k.endswith("proj.base_layer.weight")} == {
        torch.bfloat16}
    assert any(not torch.equal(p.detach(), initial[k]) for k, p in trainable.items())


def test_checkpoints_are_measured_without_autocast(tmp_path) -> None:
    """The model handed to on_checkpoint gives the logits of its saved fp32 weights loaded
    plainly; training goes on under autocast afterwards."""
    probe = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0))
    seen: dict = {}

    def on_checkpoint(model, step, folder):
        with torch.no_grad():
            seen["logits"] = model(input_ids=probe).logits
        seen["folder"] = folder

    model, _, _, _, _ = train(study("bf16-mixed", {"kind": "full", "lr": [1e-3]}, [2]),
                              tmp_path, on_checkpoint)
    plain = AutoModelForCausalLM.from_pretrained(seen["folder"]).eval()
    assert plain.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(seen["logits"], plain(input_ids=probe).logits, atol=0, rtol=0)
        autocast = model(input_ids=probe).logits  # the autocast wrapper is back on
    assert not torch.equal(autocast, seen["logits"])


IDS = {"float32": ["4ff71efac511", "fcdffb249216"],  # run ids from before training.precision
       "bfloat16": ["d75a23dff3ee", "80131cdb937b"]}


def _ids(dtype: str, precision: str | None) -> list[str]:
    data = study("fp32", {"kind": "full", "lr": [1e-5]}, [2], dtype=dtype)
    data["methods"] = [{"kind": "full", "lr": [1e-5]}, {"kind": "lora", "lr": [1e-4], "r": [4]}]
    data["schedule"] = {}
    data["training"] = {} if precision is None else {"precision": precision}
    return [r.run_id for r in expand(parse_study(data))]


@cpu_only
def test_run_ids_stay_stable_where_the_precision_is_the_old_behaviour() -> None:
    assert _ids("float32", None) == IDS["float32"]  # auto → fp32 on a CPU: as before
    assert _ids("float32", "fp32") == IDS["float32"]
    assert _ids("bfloat16", "bf16-pure") == IDS["bfloat16"]  # bf16 weights: as before
    # a precision that trains differently from before is a different run
    assert not set(_ids("float32", "bf16-mixed")) & set(IDS["float32"])
    assert not set(_ids("bfloat16", None)) & set(IDS["bfloat16"])  # now fp32 on a CPU


@cpu_only
def test_auto_resolves_to_fp32_on_a_cpu() -> None:
    (run,) = expand(parse_study(study("auto", {"kind": "full", "lr": [1e-5]}, [2])))
    assert run.training.precision == "fp32"


def test_plan_warns_about_bf16_pure_full_finetuning() -> None:
    pure = expand(parse_study(study("bf16-pure", {"kind": "full", "lr": [1e-5, 1e-3]}, [2])))
    (warning,) = precision_warnings(pure)
    assert "lr 1e-05: |w| > 0.0039" in warning and "lr 0.001: |w| > 0.5" in warning
    assert "bf16-mixed" in warning
    lora = expand(parse_study(study("bf16-pure", {"kind": "lora", "lr": [1e-4]}, [2])))
    assert precision_warnings(lora) == []  # adapters are fp32: nothing is rounded away
    fp32 = expand(parse_study(study("fp32", {"kind": "full", "lr": [1e-5]}, [2])))
    assert precision_warnings(fp32) == []


def test_threshold_matches_bf16_rounding() -> None:
    for lr in (1e-5, 3e-5, 1e-4, 2e-3):
        limit = bf16_lost_update_threshold(lr)
        w = torch.tensor([limit * 1.01, -limit * 1.01, limit * 1.7], dtype=torch.bfloat16)
        assert (w.float().abs() > limit).all()
        for step in (lr, -lr):  # rounded away in either direction
            assert torch.equal(w + torch.tensor(step, dtype=torch.bfloat16), w)
        below = torch.tensor(limit / 4, dtype=torch.bfloat16)
        assert not torch.equal(below + torch.tensor(lr, dtype=torch.bfloat16), below)


def test_unknown_precision_is_refused_with_the_choices() -> None:
    with pytest.raises(UserError, match=r"training\.precision.*bf16-mixed"):
        parse_study(study("fp8", {"kind": "full", "lr": [1e-5]}, [2]))
