"""Training memory: the estimate against the peak a real run records, gradient checkpointing,
and the plan's warning for a study that does not fit its device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_training import micro_study, train_one
from typer.testing import CliRunner

from learnforget.base import load_tokenizer, resolve_source
from learnforget.cli import app
from learnforget.data.prepare import prepare_training_data
from learnforget.measure.base_measurement import measure_base
from learnforget.memory_estimate import ModelShape, activation_bytes, estimate
from learnforget.plan import expand
from learnforget.precision import run_id_view
from learnforget.store import Store
from learnforget.study import parse_study

torch.set_num_threads(1)

# micro's width is small, so a large batch makes activations, not the libraries, the bulk
LARGE_BATCH = {"batch_size": 64, "seq_len": 128}


def _write(study: dict, folder: Path) -> Path:
    import yaml

    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (its own peak resident memory); its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_estimate_is_within_ten_percent_of_the_recorded_peak(tmp_path: Path) -> None:
    """Slow (two runs in their own processes at batch 64 × 128, about 100 s; out of the default
    run). Run it with ``OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/test_memory.py -m slow
    -s``, which prints each run's recorded peak against the estimate."""
    study_dict = micro_study(training=LARGE_BATCH, budgets={"steps": [1]},
                             evaluation={"learning": ["code_bpb"], "forgetting": ["source_bpb"],
                                         "limit": 2, "spectrum": False})
    study_file = _write(study_dict, tmp_path)
    study = parse_study(study_dict)
    measure_base(study, tmp_path, log=lambda m: None)
    prepare_training_data(expand(study),
                          lambda: load_tokenizer(resolve_source(study.base, lambda m: None)),
                          log=lambda m: None)  # as `learnforget run` does
    estimates = {row["run_id"]: row for row in json.loads(_python(
        "from learnforget.cli import app; import sys; "
        f"sys.argv = ['learnforget', 'estimate', {str(study_file)!r}, '--json']; app()"))}
    for run in expand(study):  # each run in its own process, as the local executor runs it
        _python("from pathlib import Path; from learnforget.study import load_study; "
                "from learnforget.plan import expand; from learnforget.runner import execute_run; "
                f"study = load_study({str(study_file)!r}); "
                f"run = [r for r in expand(study) if r.run_id == {run.run_id!r}][0]; "
                f"print(execute_run(study, run, Path({str(tmp_path)!r}), log=lambda m: None))")
    store = Store(tmp_path / "results.sqlite")
    for run in expand(study):
        peak = [r["value"] for r in store.measurements(run.run_id)
                if (r["task"], r["metric"]) == ("train", "peak_memory_mb")]
        assert len(peak) == 1
        expected = estimates[run.run_id]
        assert expected["activations_mb"] > 0.3 * expected["total_mb"]  # not only libraries
        print(f"{run.label}: recorded {peak[0]:.0f} MiB, estimated {expected['total_mb']:.0f}")
        assert peak[0] == pytest.approx(expected["total_mb"], rel=0.10), (run.label, peak,
                                                                          expected)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_gradient_checkpointing_trains_to_the_same_loss(kind: str) -> None:
    methods = [m for m in micro_study()["methods"] if m["kind"] == kind]
    plain = expand(parse_study(micro_study(methods=methods)))[0]
    study = micro_study(methods=methods)
    study["training"] = {**study["training"], "gradient_checkpointing": True}
    checkpointed = expand(parse_study(study))[0]
    *_, losses, _ = train_one(plain)
    *_, again, _ = train_one(checkpointed)
    assert len(losses) == len(again) == 6
    assert again == pytest.approx(losses, rel=1e-5, abs=1e-6)
    assert checkpointed.run_id != plain.run_id


def test_gradient_checkpointing_off_keeps_the_old_run_ids() -> None:
    run = expand(parse_study(micro_study()))[0]
    view = run_id_view(run.model_dump(mode="json"))
    assert "gradient_checkpointing" not in view["training"]


def test_checkpointing_lora_and_bf16_shrink_the_estimate() -> None:
    shape = ModelShape(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3,
                       vocab=49152)
    full = activation_bytes(shape, 4096, "fp32")
    assert activation_bytes(shape, 4096, "fp32", checkpointing=True) < full / 2  # logits stay
    assert activation_bytes(shape, 4096, "bf16-mixed") < full
    common = {"precision": "fp32", "base_dtype": "float32", "optimizer": "adamw",
              "batch_size": 1, "grad_accum": 1, "seq_len": 512}
    total = 134_515_008
    fft = estimate(shape, total, total, frozen_base=False, **common)
    lora = estimate(shape, 1_000_000, total + 1_000_000, frozen_base=True, **common)
    assert fft.optimizer == 2 * fft.gradients == 2 * 4 * total
    assert lora.gradients == 4 * 1_000_000 and lora.total < fft.total
    sharded = estimate(shape, total, total, frozen_base=False, shards=4, **common)
    assert sharded.weights == fft.weights // 4
    assert estimate(shape, total, total, frozen_base=False, **{**common, "optimizer": "lion"}
                    ).optimizer == fft.optimizer // 2


def test_plan_and_estimate_say_when_a_study_does_not_fit(tmp_path: Path) -> None:
    # 16,384 sequences of 128 tokens in one micro-batch: tens of GiB of activations
    study = micro_study(training={"batch_size": 16384, "seq_len": 128},
                        methods=[{"kind": "full", "lr": [1e-3]}])
    study_file = _write(study, tmp_path)
    result = CliRunner().invoke(app, ["estimate", str(study_file)])
    assert result.exit_code == 0, result.output
    assert "does not fit" in result.output and "training.grad_accum" in result.output
    assert "training.gradient_checkpointing: true" in result.output
    result = CliRunner().invoke(app, ["plan", str(study_file)])
    assert "more than CPU memory" in result.output and "LoRA" in result.output


def test_the_estimate_follows_the_training_precision() -> None:
    """Mixed precision keeps fp32 master weights and optimizer states for full finetuning (the
    paper's setup), a bf16 frozen base under LoRA; bf16-pure halves everything it holds."""
    shape = ModelShape(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3,
                       vocab=49152)
    total, adapter = 134_515_008, 1_000_000
    common = {"base_dtype": "bfloat16", "optimizer": "adamw", "batch_size": 1, "grad_accum": 1,
              "seq_len": 512}
    mixed = estimate(shape, total, total, frozen_base=False, precision="bf16-mixed", **common)
    pure = estimate(shape, total, total, frozen_base=False, precision="bf16-pure", **common)
    assert mixed.weights == 4 * total and mixed.optimizer == 2 * 4 * total
    assert pure.weights == 2 * total and pure.optimizer == 2 * 2 * total
    assert mixed.activations == pure.activations  # bf16 compute either way
    lora = estimate(shape, adapter, total + adapter, frozen_base=True, precision="bf16-mixed",
                    **common)
    assert lora.weights == 2 * total + 4 * adapter  # bf16 frozen base, fp32 adapters
