"""One run across processes: ``learnforget run STUDY --launcher accelerate`` (``accelerate
launch -m learnforget.distributed``) with 2 CPU processes on the gloo backend gives what one
process gives.

A micro study (full finetuning and LoRA r=4, checkpoints after steps 1, 2 and 3) is run once in
this process and once by two launched processes. Each global batch of 8 sequences is split 4 + 4
over the two processes and their gradients are summed by all-reduce, so both runs compute the
same mathematical loss and update; they differ only in the order float32 sums are taken (the
batched matmuls over 4 rows instead of 8, the all-reduce, the loss summed over 2 shares). That is
~1e-7 relative per operation. Measured: the losses and measurements differ by at most 1e-6
(one float32 step at ~5 nats), allowed ``TOLERANCE`` = 1e-5; a loss from a wrong split (a share
dropped or counted twice, the loss not summed over the processes) is off by ~0.1 and more. The
weights after three AdamW steps differ by at most 6e-6, allowed ``WEIGHT_TOLERANCE`` = 1e-4, a
tenth of one step's move (lr 1e-3): AdamW divides each gradient by its own running scale, so a
weight whose gradient is near zero turns rounding noise into a visible share of a step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import micro_study
from safetensors.torch import load_file

from learnforget.measure.base_measurement import measure_base
from learnforget.plan import expand
from learnforget.runner import execute_run
from learnforget.store import Store
from learnforget.study import parse_study

STUDY = micro_study(
    name="micro-distributed", budgets={"steps": [1, 2, 3]},
    training={"batch_size": 8, "seq_len": 64, "precision": "fp32"},
    evaluation={"learning": ["code_bpb"], "forgetting": ["source_bpb"], "limit": 2,
                "spectrum": False})
# accelerate's MULTI_CPU launcher wants MPI; its multi-GPU launcher (torchrun) starts the 2
# processes, and without CUDA learnforget.distributed joins them on gloo.
ACCELERATE_CPU = {"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU",
                  "num_machines": 1, "num_processes": 2, "machine_rank": 0, "gpu_ids": "all",
                  "main_process_port": 29517, "mixed_precision": "no", "dynamo_backend": "no"}
TOLERANCE = 1e-5  # losses and measurements: float reduction order only (module docstring)
WEIGHT_TOLERANCE = 1e-4  # checkpoint weights after three AdamW steps (module docstring)


def _rows(out: Path) -> dict[tuple, list[float]]:
    """{(run id, step, task, metric): every stored value} of OUT's store (throughput and peak
    memory left out: they are measures of the machine, not of the run)."""
    store = Store(out / "results.sqlite")
    try:
        rows: dict[tuple, list[float]] = {}
        for run in store.runs():
            for r in store.measurements(run["run_id"]):
                if r["metric"] not in ("tokens_per_s", "peak_memory_mb"):
                    key = (run["run_id"], r["step"], r["task"], r["metric"])
                    rows.setdefault(key, []).append(r["value"])
    finally:
        store.close()
    return rows


@pytest.fixture(scope="module")
def outs(tmp_path_factory) -> dict:
    """OUT of the study run in this process, and of the study run by 2 gloo processes."""
    root = tmp_path_factory.mktemp("distributed")
    study = parse_study(STUDY)
    single = root / "one"
    torch.set_num_threads(1)
    measure_base(study, single, log=lambda m: None)
    for run in expand(study):
        assert execute_run(study, run, single, log=lambda m: None) == "finished"
    study_file = root / "study.yaml"
    study_file.write_text(yaml.safe_dump(STUDY))
    double = root / "two"
    config = root / "accelerate-cpu.yaml"  # 2 CPU processes, gloo
    config.write_text(yaml.safe_dump(ACCELERATE_CPU))
    command = [sys.executable, "-m", "learnforget", "run", str(study_file), "--out", str(double),
               "--launcher", "accelerate", "--accelerate-config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"one": single, "two": double, "runs": expand(study), "stdout": done.stdout}


def test_two_processes_store_one_set_of_rows_like_one_process(outs: dict) -> None:
    one, two = _rows(outs["one"]), _rows(outs["two"])
    assert set(two) == set(one)  # the same run ids, steps, tasks and metrics
    assert all(len(values) == 1 for values in two.values())  # written once, by the main process
    assert "each on 2 processes" in outs["stdout"]
    assert "micro-distributed: 2 finished" in outs["stdout"]


def test_two_processes_follow_the_loss_curve_of_one(outs: dict) -> None:
    one, two = _rows(outs["one"]), _rows(outs["two"])
    losses = sorted(key for key in one if key[2:] == ("train", "loss"))
    assert len(losses) == 6  # 2 runs × steps 1, 2, 3 (each checkpoint's window is one step)
    for key in losses:
        assert two[key][0] == pytest.approx(one[key][0], abs=TOLERANCE), key
    for key in one:  # the measurements of every checkpoint agree too
        if one[key][0] is not None:
            assert two[key][0] == pytest.approx(one[key][0], abs=TOLERANCE), key
    steps = [one[key][0] for key in losses if key[0] == outs["runs"][0].run_id]
    assert steps[0] - steps[-1] > 100 * TOLERANCE  # training moved: the tolerance is tight


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_two_processes_save_the_checkpoint_of_one(outs: dict, kind: str) -> None:
    (run,) = [r for r in outs["runs"] if r.method.kind == kind]
    name = "adapter_model.safetensors" if kind == "lora" else "model.safetensors"
    files = {which: outs[which] / "runs" / run.run_id / "checkpoint-3" / name
             for which in ("one", "two")}
    one, two = load_file(files["one"]), load_file(files["two"])
    assert set(two) == set(one)
    for key, tensor in one.items():
        assert torch.allclose(two[key], tensor, atol=WEIGHT_TOLERANCE, rtol=0), key
    folder = files["two"].parent  # and the checkpoint loads as any single-process one does
    if kind == "lora":
        from peft import AutoPeftModelForCausalLM

        AutoPeftModelForCausalLM.from_pretrained(folder)
    else:
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(folder)


def test_launch_command_and_its_errors(tmp_path: Path) -> None:
    from learnforget.distributed import launch_command
    from learnforget.errors import UserError

    config = tmp_path / "fsdp.yaml"
    config.write_text("distributed_type: FSDP\n")
    command = launch_command(Path("s.yaml"), Path("o"), config, 4)
    assert command[1:] == ["-m", "accelerate.commands.launch", "--config_file", str(config),
                           "--num_processes", "4", "-m", "learnforget.distributed", "s.yaml",
                           "--out", "o"]
    with pytest.raises(UserError, match="is not a file"):
        launch_command(Path("s.yaml"), None, tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="at least 1"):
        launch_command(Path("s.yaml"), None, None, 0)


def test_shipped_accelerate_configs_name_fsdp_and_deepspeed() -> None:
    folder = Path(__file__).resolve().parents[1] / "examples" / "accelerate"
    fsdp = yaml.safe_load((folder / "fsdp.yaml").read_text())
    assert fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_version"] == 2
    deepspeed = yaml.safe_load((folder / "deepspeed-zero2.yaml").read_text())
    assert deepspeed["distributed_type"] == "DEEPSPEED"
    assert deepspeed["deepspeed_config"]["zero_stage"] == 2
