"""Progress: scoring reports per task and per batch, grids show "run k of N" with an estimate,
long loops step by step; off a terminal, lines at a steady pace instead of bars."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from learnforget.base import load_base
from learnforget.builtin import BuiltinSpec, pretrain
from learnforget.cli import app
from learnforget.measure.evaluate import evaluate
from learnforget.study import BaseModelSpec
from learnforget.terminal_progress import (
    Pacer,
    RunProgress,
    ScoringDisplay,
    duration,
    progress_bars,
    remaining_seconds,
    step_progress,
)

torch.set_num_threads(1)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=120, force_terminal=False), buffer


@pytest.fixture(scope="module")
def micro():
    return load_base(BaseModelSpec(model="builtin:micro"), log=lambda m: None)


def test_evaluate_reports_each_task_and_each_batch(micro) -> None:
    events = []
    results, counts, _ = evaluate(micro.model, micro.tokenizer, ["source_bpb", "source_cloze"],
                               limit=5, batch_size=2, progress=events.append)
    assert set(results) == {"source_bpb", "source_cloze"}
    for index, task in enumerate(["source_bpb", "source_cloze"]):
        mine = [e for e in events if e.task == task]
        assert all(e.index == index and e.tasks == 2 for e in mine)
        assert (mine[0].done, mine[0].total) == (0, 0)  # the task starts
        batches = mine[1:-1]
        assert len(batches) >= 2  # batches of 2 sequences: several reports
        assert all(0 < e.done <= e.total for e in batches)
        assert [e.done for e in batches] == sorted(e.done for e in batches)
        assert batches[-1].done == batches[-1].total
        assert mine[-1].done == mine[-1].total == batches[-1].total  # the task ends
        assert counts[task] == 5
    # without a listener nothing is reported, and the results are the same
    again, _, _ = evaluate(micro.model, micro.tokenizer, ["source_bpb"], limit=5, batch_size=2)
    assert again["source_bpb"] == results["source_bpb"]


def test_eval_command_shows_scoring_progress_as_lines_off_a_terminal() -> None:
    result = CliRunner().invoke(app, ["eval", "--model", "builtin:micro", "--tasks",
                                      "source_bpb", "--limit", "3", "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    assert "scoring source_bpb (task 1 of 1)" in result.output
    assert "source_bpb: " in result.output and "╸" not in result.output


def _start(run_id: str, label: str, total: int = 10, step: int = 0) -> dict:
    return {"run_id": run_id, "event": "start", "label": label, "lr": 1e-3, "total": total,
            "step": step}


def test_grid_lines_say_run_k_of_n_with_an_estimate_at_a_steady_pace() -> None:
    console, buffer = _console()
    clock = Clock()
    shown = RunProgress(console, total_runs=3, pacer=Pacer(10.0, clock), clock=clock)
    shown.handle({"run_id": "done-before", "event": "end", "status": "finished"})  # skipped
    shown.handle(_start("a", "lora-r8"))
    assert "run 2 of 3: lora-r8 lr=0.001 starts at step 0 of 10" in buffer.getvalue()
    for step in range(1, 11):
        clock.now = step * 3.0  # a step every 3 s: a status line at most every 10 s
        shown.handle({"run_id": "a", "event": "step", "step": step, "loss": 2.0,
                      "tokens_per_s": 100.0})
    status_lines = [line for line in buffer.getvalue().splitlines() if "% done" in line]
    assert len(status_lines) == 2  # 30 s of steps: a line at 12 s and at 24 s
    # half of the two runs that train here, in 30 s: about 30 s left
    assert shown.fraction() == pytest.approx(0.5)
    assert shown.estimate() == "about 30 s left"
    assert status_lines[-1].startswith("run 2 of 3")
    shown.handle({"run_id": "a", "event": "end", "status": "finished"})
    assert "lora-r8 lr=0.001: finished" in buffer.getvalue()


def test_grid_bars_have_an_overall_row_on_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, force_terminal=True)
    with progress_bars(console, total_runs=2) as shown:
        assert shown.progress is not None
        shown.handle(_start("a", "full"))
        shown.handle({"run_id": "a", "event": "step", "step": 5, "loss": 1.0,
                      "tokens_per_s": 10.0})
        overall = shown.progress.tasks[shown.overall]
        assert overall.description == "run 1 of 2"
        assert overall.completed == pytest.approx(0.5)  # half of one run of two
        assert overall.fields["eta"].startswith("about")
        shown.progress.refresh()
    drawn = buffer.getvalue()
    assert "run 1 of 2" in drawn and "25%" in drawn and "5/10" in drawn
    off = Console(file=io.StringIO(), force_terminal=False)
    with progress_bars(off, total_runs=2) as shown:
        assert shown.progress is None  # lines, not bars


def test_remaining_time_and_durations() -> None:
    assert remaining_seconds(60.0, 0.25) == pytest.approx(180.0)
    assert remaining_seconds(60.0, 0.0) is None
    assert remaining_seconds(10.0, 1.0) == 0
    assert duration(45) == "45 s" and duration(600) == "10 min" and duration(3900) == "1 h 05 min"


def test_scoring_lines_off_a_terminal() -> None:
    from learnforget.measure.scoring_progress import ScoringProgress

    console, buffer = _console()
    clock = Clock()
    shown = ScoringDisplay(console, "base: ", pacer=Pacer(10.0, clock))
    shown(ScoringProgress("code_bpb", 0, 2, 0, 0))
    for done in range(1, 9):  # a batch every 4 s
        clock.now = done * 4.0
        shown(ScoringProgress("code_bpb", 0, 2, done, 8))
    shown(ScoringProgress("code_bpb", 0, 2, 8, 8))  # the task's end, reported again: one line
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "scoring base: code_bpb (task 1 of 2)"
    # a line when 10 s have passed (batches at 12 s and 24 s), and the last batch
    assert lines[1:] == [f"  base: code_bpb: {done}/8" for done in (3, 6, 8)]


def test_step_progress_logs_at_a_pace_off_a_terminal() -> None:
    clock = Clock()
    lines: list[str] = []
    console = Console(file=io.StringIO(), force_terminal=False)
    with step_progress("pretraining", 40, lines.append, console, Pacer(10.0, clock)) as show:
        for step in range(1, 41):
            clock.now = step * 1.0
            show(step, "loss 1.000")
    assert lines[0] == "pretraining: step 1/40 · loss 1.000"
    assert lines[-1] == "pretraining: step 40/40 · loss 1.000"
    assert len(lines) == 5  # steps 1, 10, 20, 30, 40


def test_step_progress_draws_a_bar_on_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=True)
    lines: list[str] = []
    with step_progress("pretraining", 3, lines.append, console) as show:
        for step in (1, 2, 3):
            show(step, "")
    assert lines == [] and "3/3" in buffer.getvalue()


def test_pretraining_reports_every_step(tmp_path: Path) -> None:
    spec = BuiltinSpec(vocab_size=300, hidden_size=16, layers=1, heads=1,
                       intermediate_size=32, seq_len=16, pretrain_tokens=6 * 4 * 16,
                       batch_size=4)
    lines: list[str] = []
    pretrain(spec, tmp_path / "model", lines.append, name="test")
    steps = [line for line in lines if line.startswith("pretraining builtin:test: step")]
    assert steps[0].startswith("pretraining builtin:test: step 1/6")
    assert steps[-1].startswith("pretraining builtin:test: step 6/6")
