"""Run one planned run end to end: base → method → train → measure each checkpoint → store.

Everything here is safe to call again after a crash: finished work is found in the store and
skipped, an unfinished run restarts from its last checkpoint, and a finished run's checkpoints
get the measurements a task added later asks for. The base model is measured once per study
beforehand (``measure.base_measurement``); each checkpoint's change is taken against it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch

from learnforget.base import load_base
from learnforget.checkpoint_files import STATE_FILE, CheckpointUnreadable, load_checkpoint_weights
from learnforget.data.prepare import build_stream, checkpoint_steps
from learnforget.errors import UserError
from learnforget.measure.base_measurement import base_values
from learnforget.measure.checkpoint import Measurer, matrix_snapshot, measured_tasks
from learnforget.methods import apply_method, count_parameters
from learnforget.plan import RunConfig
from learnforget.runfailure import first_line, record_failure
from learnforget.runfiles import RunFilesStore
from learnforget.store import Measurement, Store
from learnforget.study import Study
from learnforget.train import LoopResult, train_loop, training_base_spec

Progress = Callable[[dict], None]


PAUSED = "pending"
"""What ``execute_run`` returns for a run that stopped at its ``stop_after`` checkpoint (and
the status it leaves in the store): resumable from that checkpoint."""


def execute_run(study: Study, run: RunConfig, out: Path, progress: Progress | None = None,
                log: Callable[[str], None] = print,
                open_store: Callable[[], Store] | None = None,
                stop_after: int | None = None) -> str:
    """Train and measure one run, resuming if it was interrupted; returns its final status.
    Results go to ``OUT/results.sqlite``, or to the store ``open_store()`` gives (the Ray
    executor's proxy to a store on the driver).

    ``stop_after``: train only up to the run's N-th checkpoint (a rung of successive halving)
    and return ``PAUSED``, the run resumable from there (at once, without training, when it
    already holds N checkpoints); None, or N at or past its last checkpoint: train to the end.
    A run ``stopped early`` resumes like an interrupted one."""
    progress = progress or (lambda event: None)
    store = open_store() if open_store is not None else Store(out / "results.sqlite")
    run_id = run.run_id
    store.ensure_run(run_id, study.name, run.method.kind, run.label, run.model_dump(mode="json"))
    store = RunFilesStore(store, run, study.name, out)  # keeps OUT/runs/RUN_ID/run.json current
    status = store.run_status(run_id)
    if status == "finished":
        try:
            complete_measurements(study, run, store, log)
        finally:
            store.close()
        progress({"run_id": run_id, "event": "end", "status": status})
        return status
    if status == "diverged":
        store.close()
        progress({"run_id": run_id, "event": "end", "status": status})
        return status
    if stop_after is not None and len(store.checkpoint_steps(run_id)) >= stop_after:
        store.close()  # at its rung already: its status stays what it is
        progress({"run_id": run_id, "event": "end", "status": _paused_at(stop_after)})
        return PAUSED
    try:
        base = base_values(store, study)
        run_dir = out / "runs" / run_id
        # Only the latest checkpoint keeps its optimizer state (checkpoint_files.STATE_FILE).
        resumable = sorted((s for s in store.checkpoint_steps(run_id)
                            if (run_dir / f"checkpoint-{s}" / STATE_FILE).exists()), reverse=True)
        store.set_status(run_id, "running")
        while True:
            resume = resumable[0] if resumable else 0
            try:
                result = train_run(study, run, out, store, base, resume, progress, log,
                                   stop_after)
                break
            except CheckpointUnreadable as exc:  # fall back to an older checkpoint, or step 0
                resumable = [s for s in resumable if s < resume]
                with contextlib.suppress(OSError):
                    (exc.folder / STATE_FILE).unlink()  # not to be tried again
                then = (f"resuming from step {resumable[0]}" if resumable
                        else "training the run again from the start")
                log(f"run {run_id} ({run.label}, lr {run.method.lr:g}): {exc}; {then}")
        status = PAUSED if result.status == "paused" else result.status
        store.set_status(run_id, status, result.error)
        progress({"run_id": run_id, "event": "end",
                  "status": _paused_at(stop_after) if status == PAUSED else status})
        return status
    except UserError:
        store.set_status(run_id, "failed", "bad input (see the message)")
        raise
    except Exception as exc:  # one failing run must not end the study
        record_failure(store, out, run, exc, log)
        progress({"run_id": run_id, "event": "end", "status": "failed",
                  "error": first_line(exc)})
        return "failed"
    finally:
        store.close()


def _paused_at(stop_after: int | None) -> str:
    """How the progress display names a run stopped at its rung."""
    return f"at rung {stop_after} (checkpoint {stop_after}), waiting for the rule"


def train_run(study: Study, run: RunConfig, out: Path, store: Store | None,
              base: dict[tuple[str, str], float], resume: int, progress: Progress,
              log: Callable[[str], None], stop_after: int | None = None) -> LoopResult:
    """Load the base, apply the method and train from checkpoint ``resume`` (0: the start),
    committing each checkpoint's measurements (``base``: the base model's values) to
    ``store``; everything from the run's seed, so that a restart reproduces a clean run.
    ``store`` is None on a process that follows a distributed run (``follow_run``): only the
    main process measures and commits. ``stop_after``: stop after the N-th checkpoint (see
    ``execute_run``)."""
    run_id = run.run_id
    torch.set_num_threads(study.training.threads)
    torch.manual_seed(run.seed)
    dropout = run.method.attention_dropout if run.method.is_full else None
    loaded = load_base(training_base_spec(run), attention_dropout=dropout or None, log=log)
    stream = build_stream(run, loaded.tokenizer)
    steps = checkpoint_steps(run, stream)
    spectrum = study.evaluation.spectrum
    base_state = matrix_snapshot(loaded.model) if spectrum else None
    model = apply_method(loaded.model, run.method, total_steps=steps[-1])
    trainable, total = count_parameters(model)
    measurer = Measurer(study, loaded.tokenizer, base, spectrum, base_state)
    progress({"run_id": run_id, "label": run.label, "lr": run.method.lr, "event": "start",
              "total": steps[-1], "step": resume, "trainable": trainable, "params": total})

    def on_checkpoint(model, step, tokens, folder, train_rows):
        progress({"run_id": run_id, "event": "measure", "step": step})
        if model is None:  # this process holds a shard (FSDP): measure the saved files
            model = checkpoint_model(run, folder, log)
        rows, artifacts = measurer(model, final=step == steps[-1])
        rows += [Measurement("params", "trainable", trainable),
                 Measurement("params", "total", total)]
        rows = [*train_rows, *((step, tokens, m) for m in rows)]
        store.record_checkpoint(run_id, step, tokens, str(folder), rows, artifacts)

    def on_step(step, tokens, loss, tps):
        progress({"run_id": run_id, "event": "step", "step": step, "tokens": tokens,
                  "loss": loss, "tokens_per_s": tps})

    stop_step = steps[stop_after - 1] if stop_after and stop_after < len(steps) else None
    return train_loop(model, loaded.tokenizer, stream, run, steps, out / "runs" / run_id,
                      on_checkpoint, on_step, resume_step=resume, stop_step=stop_step)


def follow_run(study: Study, run: RunConfig, out: Path, resume: int) -> LoopResult:
    """Train ``run`` from checkpoint ``resume`` on a process that follows the main one in a
    distributed run: it holds its share of the work and writes, measures and logs nothing."""
    return train_run(study, run, out, None, {}, resume, lambda event: None,
                     lambda message: None)


def checkpoint_model(run: RunConfig, folder: Path, log: Callable[[str], None] = print):
    """The run's model at the checkpoint in ``folder``, whole on this process (a base loaded
    as training loads it, the method applied, the checkpoint's weights put in), in eval mode."""
    loaded = load_base(training_base_spec(run), log=log)
    model = apply_method(loaded.model, run.method)
    load_checkpoint_weights(model, folder)
    model.eval()
    return model


def complete_measurements(study: Study, run: RunConfig, store: Store,
                          log: Callable[[str], None] = print) -> None:
    """Measure what a finished run's checkpoints lack (a task added to the study after the run
    trained), from the saved checkpoints."""
    checkpoints = store.checkpoints(run.run_id)
    if not checkpoints:
        return
    present: dict[int, set[str]] = {}
    for row in store.measurements(run.run_id):
        present.setdefault(row["step"], set()).add(row["task"])
    spectrum = study.evaluation.spectrum
    last = checkpoints[-1]["step"]
    todo = {c["step"]: measured_tasks(study, c["step"] == last, spectrum)
            - present.get(c["step"], set()) for c in checkpoints}
    todo = {step: tasks for step, tasks in todo.items() if tasks}
    if not todo:
        return
    log(f"run {run.run_id} ({run.label}): measuring {sorted(set().union(*todo.values()))} "
        "on its saved checkpoints")
    loaded = load_base(training_base_spec(run), log=log)  # the dtypes training held
    base_state = matrix_snapshot(loaded.model) if spectrum else None
    model = apply_method(loaded.model, run.method)
    measurer = Measurer(study, loaded.tokenizer, base_values(store, study), spectrum, base_state)
    for checkpoint in checkpoints:
        step, tokens = checkpoint["step"], checkpoint["tokens"]
        folder = Path(checkpoint["path"] or "")
        if step not in todo or not folder.is_dir():
            continue
        load_checkpoint_weights(model, folder)
        rows, artifacts = measurer(model, final=step == last, only=todo[step])
        store.add_measurements(run.run_id, [(step, tokens, m) for m in rows],
                               {(step, kind): payload for kind, payload in artifacts.items()})
