"""Golden values of a fixed-seed micro study: the training loss at every step, and the stored
``<metric>_delta`` rows equal to the value minus the base model's.

The micro study (``builtin:micro``, code CPT, one full-finetuning and one LoRA run of 6 steps,
batches of 8 sequences of 64 tokens, one thread) is trained through ``execute_run``; each step's
loss, as the run reports it, must equal the stored value within 1e-6. A change that moves any of
them changes what the tool computes (a refactor must not). When a change is meant to move them,
regenerate the stored values with

    PYTHONPATH=src python tests/test_golden_loss.py

which trains the same study and rewrites ``tests/golden/micro_losses.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # conftest, when run as a script

from conftest import micro_study  # noqa: E402

from learnforget.measure.base_measurement import base_run_id, measure_base  # noqa: E402
from learnforget.plan import expand  # noqa: E402
from learnforget.runner import execute_run  # noqa: E402
from learnforget.store import Store  # noqa: E402
from learnforget.study import parse_study  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "micro_losses.json"
TOLERANCE = 1e-6


def golden_study():
    """The fixed micro study whose losses are stored."""
    return parse_study(micro_study(name="golden-loss", training={
        "batch_size": 8, "seq_len": 64, "threads": 1}))


def train_golden_study(out: Path) -> dict[str, list[float]]:
    """Measure the base and train every run of the study into ``out``; {label: the loss of
    each step, in order}."""
    study = golden_study()
    measure_base(study, out, log=lambda m: None)
    losses: dict[str, list[float]] = {}
    for run in expand(study):
        seen: list[float] = []

        def progress(event: dict, seen: list[float] = seen) -> None:
            if event["event"] == "step":
                seen.append(event["loss"])

        assert execute_run(study, run, out, progress=progress, log=lambda m: None) == "finished"
        losses[run.label] = seen
    return losses


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, list[float]]]:
    """The study's folder and the losses its runs reported."""
    out = tmp_path_factory.mktemp("golden")
    return out, train_golden_study(out)


def test_every_step_loss_equals_the_stored_value(trained) -> None:
    _, losses = trained
    golden = json.loads(GOLDEN.read_text())
    assert sorted(losses) == sorted(golden)
    for label, expected in golden.items():
        assert len(losses[label]) == len(expected), label
        for step, (got, want) in enumerate(zip(losses[label], expected, strict=True), start=1):
            assert abs(got - want) <= TOLERANCE, (label, step, got, want)


def test_each_stored_delta_is_the_value_minus_the_base_value(trained) -> None:
    out, _ = trained
    study = golden_study()
    store = Store(out / "results.sqlite")
    base = {(r["task"], r["metric"]): r["value"]
            for r in store.measurements(base_run_id(study))}
    checked = 0
    for run in expand(study):
        rows = {(r["step"], r["task"], r["metric"]): r["value"]
                for r in store.measurements(run.run_id)}
        for (step, task, metric), delta in rows.items():
            if not metric.endswith("_delta"):
                continue
            measured = metric.removesuffix("_delta")
            assert delta == pytest.approx(rows[(step, task, measured)] - base[(task, measured)],
                                          abs=1e-12), (run.label, step, task, metric)
            checked += 1
    store.close()
    assert checked >= 4  # code_bpb and source_bpb bpb at two checkpoints of each run


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="learnforget-golden-") as folder:
        values = train_golden_study(Path(folder))
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(values, indent=1) + "\n")
    print(f"wrote {GOLDEN}: " + ", ".join(f"{k} ({len(v)} steps)" for k, v in values.items()))
