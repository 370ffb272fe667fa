"""Run one planned run end to end: base → method → train → measure each checkpoint → store.

Also measures the base model once per study (run id ``base-…``), which every checkpoint's
forgetting is compared against. Everything here is safe to call again after a crash: finished
work is found in the store and skipped, an unfinished run restarts from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import random
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from learnforget.base import load_base
from learnforget.data.batches import (
    BatchStream,
    pack_documents,
    split_for_sampling,
    tokenize_pairs,
)
from learnforget.data.target import own_data, training_material
from learnforget.errors import UserError
from learnforget.measure.evaluate import evaluate
from learnforget.measure.scoring_progress import ScoringCallback
from learnforget.measure.tasks import default_tasks, get_task
from learnforget.measure.uncertainty import COUNT_METRIC, has_delta, items_kind
from learnforget.methods import apply_method, count_parameters, scoring_view
from learnforget.outbase import keep_base
from learnforget.paths import cache_dir
from learnforget.plan import RunConfig, config_hash
from learnforget.runfiles import RunFilesStore
from learnforget.store import Measurement, Store
from learnforget.study import Study
from learnforget.train import (
    STATE_FILE,
    CheckpointUnreadable,
    LoopResult,
    train_loop,
    training_base_spec,
)

Progress = Callable[[dict], None]


def study_tasks(study: Study) -> tuple[list[str], list[str]]:
    """The study's (learning, forgetting) task names, defaults filled in."""
    learning, forgetting = default_tasks(study.target)
    return (study.evaluation.learning or learning, study.evaluation.forgetting or forgetting)


def base_run_id(study: Study) -> str:
    """The id under which the base model's measurements are stored."""
    return "base-" + config_hash({"base": study.base.model_dump(mode="json"),
                                  "target": study.target.model_dump(mode="json")})


def render_prompt_for(tokenizer) -> Callable[[str], str]:
    """IFT prompts through the tokenizer's chat template when it has one, else as they are."""
    if getattr(tokenizer, "chat_template", None):
        def render(prompt: str) -> str:
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return render
    return lambda prompt: prompt


def _tokens_needed(run: RunConfig) -> int | None:
    """How many CPT tokens the run's last budget consumes (None: epochs need all of them)."""
    per_step = run.training.batch_size * run.training.seq_len
    if run.budgets.unit == "tokens":
        return int(run.budgets.values[-1]) + per_step
    if run.budgets.unit == "steps":
        return int(run.budgets.values[-1]) * per_step
    return None


def _tokenizer_fingerprint(tokenizer) -> str | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    return hashlib.sha256(backend.to_str().encode()).hexdigest()


def _prepared_path(key: dict) -> Path:
    return cache_dir() / "prepared" / f"{config_hash(key)}.pt"


def _disk_cached(key: dict, build: Callable[[], object]) -> object:
    """``build()``, cached in ``cache_dir()/prepared`` under a hash of ``key`` (written
    atomically, so concurrent runs never read half a file)."""
    path = _prepared_path(key)
    if path.exists():
        return torch.load(path, weights_only=False)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    torch.save(value, partial)
    partial.replace(path)
    return value


def _training_key(run: RunConfig, fingerprint: str) -> dict:
    """What a run's prepared training examples depend on (their disk cache's key)."""
    needed = _tokens_needed(run) if run.target.regime == "cpt" else None
    return {"tokenizer": fingerprint, "target": run.target.model_dump(mode="json"),
            "seq_len": run.training.seq_len, "tokens": needed, "version": 2}


def training_examples(run: RunConfig, tokenizer) -> torch.Tensor | list:
    """The run's tokenized training data: packed blocks (CPT) or prompt/response examples (IFT).

    CPT documents are cut into pieces of a few thousand characters and taken in a fixed
    shuffled order (so a token budget takes a sample of the whole corpus, the same for every run
    of the study) and tokenized only as far as the budget reaches. Built-in corpora are cached
    on disk per tokenizer: preparing them costs more than a short run."""
    seq_len = run.training.seq_len

    def build():
        material = training_material(run.target, 0, tokenizer)
        if run.target.regime == "ift":
            return tokenize_pairs(material, tokenizer, seq_len, render_prompt_for(tokenizer))
        documents = split_for_sampling(material)
        random.Random(0).shuffle(documents)
        return pack_documents(documents, tokenizer, seq_len, max_tokens=_tokens_needed(run))

    fingerprint = _tokenizer_fingerprint(tokenizer)
    if own_data(run.target) or fingerprint is None:  # the user's files may change: not cached
        return build()
    return _disk_cached(_training_key(run, fingerprint), build)


def prepare_training_data(study: Study, runs: list[RunConfig],
                          log: Callable[[str], None] = print) -> None:
    """Build and cache on disk the training examples of ``runs`` that a built-in corpus
    provides, once per distinct set, before the runs start: their processes then load the
    examples instead of each building the same set side by side, and do not hold the corpus
    the examples came from in memory while they train (it would add to their peak)."""
    runs = [run for run in runs if not own_data(run.target)]
    if not runs:
        return
    from learnforget.base import load_tokenizer, resolve_source

    tokenizer = load_tokenizer(resolve_source(study.base, log))
    fingerprint = _tokenizer_fingerprint(tokenizer)
    if fingerprint is None:
        return
    missing = {}
    for run in runs:
        key = _training_key(run, fingerprint)
        if not _prepared_path(key).exists():
            missing.setdefault(config_hash(key), run)
    for run in missing.values():
        log(f"preparing the training data ({run.target.domain} {run.target.regime}, "
            f"{run.training.seq_len}-token sequences)")
        training_examples(run, tokenizer)


def build_stream(run: RunConfig, tokenizer) -> BatchStream:
    """The seeded batch stream of the run."""
    return BatchStream(training_examples(run, tokenizer), run.training.batch_size, run.seed,
                       tokenizer.pad_token_id, run.training.group_by_length)


def checkpoint_steps(run: RunConfig, stream: BatchStream) -> list[int]:
    """The optimizer steps at which the budgets fall (tokens / epochs / steps → steps)."""
    budgets = run.budgets
    if budgets.unit == "steps":
        steps = [int(v) for v in budgets.values]
    elif budgets.unit == "epochs":
        steps = [max(1, round(v * stream.steps_per_epoch)) for v in budgets.values]
    else:
        per_step = stream.mean_tokens_per_step()
        steps = [max(1, math.ceil(v / per_step)) for v in budgets.values]
    for index in range(1, len(steps)):  # CPT token budgets are refused at validation already
        if steps[index] == steps[index - 1]:
            import logging

            logging.getLogger(__name__).warning(
                "warning: budgets.%s %g and %g both fall on step %d of this data: they are one "
                "checkpoint (space them further apart)", budgets.unit, budgets.values[index - 1],
                budgets.values[index], steps[index])
    return sorted(set(steps))


@dataclass
class Measurer:
    """Measures a model on the study's tasks and computes the change from the base model."""

    study: Study
    tokenizer: object
    base_values: dict[tuple[str, str], float]
    base_state: dict[str, torch.Tensor] | None = None

    def tasks(self, final: bool) -> set[str]:
        """What is measured at a checkpoint (``spectrum`` and ``diversity`` included)."""
        learning, forgetting = study_tasks(self.study)
        ev = self.study.evaluation
        names = {n for n in learning + forgetting if final or n not in ev.final_only}
        if self.base_state is not None:
            names.add("spectrum")
        if ev.diversity and final:
            names.add("diversity")
        return names

    def __call__(self, model, on_task: Callable[[str], None] = lambda n: None,
                 final: bool = True, only: set[str] | None = None,
                 progress: ScoringCallback | None = None):
        """(measurement rows, artifacts) for ``model``; final-only tasks and diversity only
        when ``final``; just the tasks in ``only`` when given; scoring progress to
        ``progress``."""
        learning, forgetting = study_tasks(self.study)
        ev = self.study.evaluation
        wanted = self.tasks(final) if only is None else self.tasks(final) & only
        names = [n for n in learning + forgetting if n in wanted]
        with scoring_view(model) as scored:
            results, counts, per_item = evaluate(
                scored, self.tokenizer, names, ev.limit, ev.batch_size,
                target=self.study.target, on_task=on_task, progress=progress)
            diversity = self._diversity(scored, on_task) if "diversity" in wanted else None
        rows = task_rows(results, counts, self.base_values)
        artifacts: dict = {items_kind(task): values for task, values in per_item.items()}
        if "spectrum" in wanted:
            spectrum_rows, spectra = measure_spectrum(model, self.base_state)
            rows += spectrum_rows
            artifacts["spectrum"] = spectra
        if diversity is not None:
            summary, samples = diversity
            rows += [Measurement("diversity", metric, value) for metric, value in summary.items()]
            artifacts["diversity_samples"] = samples
        return rows, artifacts

    def _diversity(self, model, on_task: Callable[[str], None]):
        from learnforget.measure.diversity import diversity_prompts, measure_diversity

        on_task("diversity")
        ev = self.study.evaluation
        real_code = not self.study.base.model.startswith("builtin:")
        prompts = diversity_prompts(self.study.target, ev.diversity_prompts, real_code)
        return measure_diversity(model, self.tokenizer, prompts, ev)


def task_rows(results: dict[str, dict[str, float]], counts: dict[str, int],
              base_values: dict[tuple[str, str], float]) -> list[Measurement]:
    """Measurement rows of scored tasks: every metric (``acc``, ``acc_stderr``, …), the item
    count ``n``, and ``<metric>_delta`` = value − base value for each metric the base model has
    (none for standard errors and counts: ``uncertainty.has_delta``)."""
    rows = [Measurement(task, metric, value)
            for task, metrics in results.items() for metric, value in metrics.items()]
    rows += [Measurement(task, COUNT_METRIC, count) for task, count in counts.items()]
    rows += [Measurement(m.task, m.metric + "_delta", m.value - base_values[key])
             for m in list(rows)
             if has_delta(m.metric) and (key := (m.task, m.metric)) in base_values
             and m.value is not None and base_values[key] is not None]
    return rows


def measure_spectrum(model, base_state: dict[str, torch.Tensor]):
    """Summary rows (task ``spectrum``) and per-matrix details of ΔW for ``model``."""
    from learnforget.measure.spectrum import spectrum_between
    from learnforget.measure.spectrum_summary import spectrum_summary

    spectra = spectrum_between(base_state, model)
    summary = spectrum_summary(spectra)
    rows = [Measurement("spectrum", metric, value) for metric, value in summary.items()]
    return rows, [s.to_dict() for s in spectra]


def _base_values(store: Store, study: Study) -> dict[tuple[str, str], float]:
    """The base model's stored measurements, {(task, metric): value}."""
    return {(r["task"], r["metric"]): r["value"] for r in store.measurements(base_run_id(study))}


def _matrix_snapshot(model) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's 2-D weights: W_base for the ΔW spectrum."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            if v.ndim == 2}


def measure_base(study: Study, out: Path, log: Callable[[str], None] = print,
                 progress: ScoringCallback | None = None) -> dict:
    """Save the base into ``OUT/base`` (``outbase.keep_base``) and measure it once (step 0 of
    run ``base-…``); returns its values."""
    keep_base(study.base, out, log)
    store = Store(out / "results.sqlite")
    run_id = base_run_id(study)
    store.ensure_run(run_id, study.name, "base", "base", {"base": study.base.model_dump()})
    probe = Measurer(study, None, {})
    done = {r["task"] for r in store.measurements(run_id)}
    missing = probe.tasks(final=True) - done
    if store.run_status(run_id) != "finished" or missing:
        log("measuring the base model")
        loaded = load_base(study.base, log=log)
        measurer = Measurer(study, loaded.tokenizer, {})
        rows, artifacts = measurer(
            loaded.model, only=missing, progress=progress,
            on_task=(lambda n: None) if progress else lambda n: log(f"  base: {n}"))
        store.record_checkpoint(run_id, 0, 0, None, [(0, 0, m) for m in rows], artifacts)
        store.set_status(run_id, "finished")
    if study.target.domain == "custom" and "data" not in done:
        _record_split(study, store, run_id, log)
    values = _base_values(store, study)
    store.close()
    return values


def _record_split(study: Study, store: Store, run_id: str, log: Callable[[str], None]) -> None:
    """Log custom data's train / held-out split and store it as task ``data`` of the base."""
    from learnforget.data.target import load_target

    split = load_target(study.target).split
    if split is None:
        return
    log(f"held-out split of {study.target.data}: {split.describe()}")
    rows = [Measurement("data", "examples", float(len(split.heldout))),
            Measurement("data", "heldout_examples", float(split.heldout_count)),
            Measurement("data", "near_duplicate_groups", float(split.groups_merged)),
            Measurement("data", "heldout_near_duplicate_share", split.near_duplicate_share)]
    store.add_measurements(run_id, [(0, 0, m) for m in rows], {})


def execute_run(study: Study, run: RunConfig, out: Path, progress: Progress | None = None,
                log: Callable[[str], None] = print,
                open_store: Callable[[], Store] | None = None) -> str:
    """Train and measure one run, resuming if it was interrupted; returns its final status.
    Results go to ``OUT/results.sqlite``, or to the store ``open_store()`` gives (the Ray
    executor's proxy to a store on the driver)."""
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
    try:
        base_values = _base_values(store, study)
        run_dir = out / "runs" / run_id
        # Only the latest checkpoint keeps its optimizer state (train.STATE_FILE).
        resumable = sorted((s for s in store.checkpoint_steps(run_id)
                            if (run_dir / f"checkpoint-{s}" / STATE_FILE).exists()), reverse=True)
        store.set_status(run_id, "running")
        while True:
            resume = resumable[0] if resumable else 0
            try:
                result = _train(study, run, out, store, base_values, resume, progress, log)
                break
            except CheckpointUnreadable as exc:  # fall back to an older checkpoint, or step 0
                resumable = [s for s in resumable if s < resume]
                with contextlib.suppress(OSError):
                    (exc.folder / STATE_FILE).unlink()  # not to be tried again
                then = (f"resuming from step {resumable[0]}" if resumable
                        else "training the run again from the start")
                log(f"run {run_id} ({run.label}, lr {run.method.lr:g}): {exc}; {then}")
        store.set_status(run_id, result.status, result.error)
        progress({"run_id": run_id, "event": "end", "status": result.status})
        return result.status
    except UserError:
        store.set_status(run_id, "failed", "bad input (see the message)")
        raise
    except Exception as exc:  # one failing run must not end the study
        _record_failure(store, out, run, exc, log)
        progress({"run_id": run_id, "event": "end", "status": "failed",
                  "error": first_line(exc)})
        return "failed"
    finally:
        store.close()


def _train(study: Study, run: RunConfig, out: Path, store: Store,
           base_values: dict[tuple[str, str], float], resume: int, progress: Progress,
           log: Callable[[str], None]) -> LoopResult:
    """Load the base, apply the method and train from checkpoint ``resume`` (0: the start),
    committing each checkpoint's measurements; everything from the run's seed, so that a
    restart reproduces a clean run."""
    run_id = run.run_id
    torch.set_num_threads(study.training.threads)
    torch.manual_seed(run.seed)
    dropout = run.method.attention_dropout if run.method.kind == "full" else None
    loaded = load_base(training_base_spec(run), attention_dropout=dropout or None, log=log)
    stream = build_stream(run, loaded.tokenizer)
    steps = checkpoint_steps(run, stream)
    base_state = _matrix_snapshot(loaded.model) if study.evaluation.spectrum else None
    model = apply_method(loaded.model, run.method)
    trainable, total = count_parameters(model)
    measurer = Measurer(study, loaded.tokenizer, base_values, base_state)
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

    return train_loop(model, loaded.tokenizer, stream, run, steps, out / "runs" / run_id,
                      on_checkpoint, on_step, resume_step=resume)


def checkpoint_model(run: RunConfig, folder: Path, log: Callable[[str], None] = print):
    """The run's model at the checkpoint in ``folder``, whole on this process (a base loaded
    as training loads it, the method applied, the checkpoint's weights put in), in eval mode."""
    from learnforget.train import load_checkpoint_weights

    loaded = load_base(training_base_spec(run), log=log)
    model = apply_method(loaded.model, run.method)
    load_checkpoint_weights(model, folder)
    model.eval()
    return model


ERROR_FILE = "error.txt"


def first_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _record_failure(store: Store, out: Path, run: RunConfig, exc: Exception,
                    log: Callable[[str], None]) -> None:
    """Mark the run ``failed`` with its traceback, and write the whole traceback to
    ``OUT/runs/RUN_ID/error.txt``; on a full disk either write may fail, which is said, not
    raised (the executor marks the run failed if the store still says ``running``)."""
    error = "".join(traceback.format_exception(exc))
    where = out / "runs" / run.run_id / ERROR_FILE
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(error)
    except OSError:
        where = None
    try:
        store.set_status(run.run_id, "failed", error[-4000:])
    except Exception as store_exc:  # the failure is reported either way
        try:  # the store's row may be written and only run.json beside it not
            recorded = store.run_status(run.run_id) == "failed"
        except Exception:
            recorded = False
        log(f"the failure of run {run.run_id} is recorded in the store, but its run.json could "
            f"not be updated: {first_line(store_exc)}" if recorded else
            f"could not record the failure of run {run.run_id} in the store: "
            f"{first_line(store_exc)}")
    log(f"run {run.run_id} ({run.label}, lr {run.method.lr:g}) failed: "
        f"{disk_full_reason(exc, out) or first_line(exc)}"
        + (f" (full error: {where})" if where else ""))


def disk_full_reason(exc: BaseException, out: Path) -> str | None:
    """"the disk holding OUT is full: …" when ``exc`` comes from a full disk — an ``OSError``
    ENOSPC, or torch's serializer, which says only "unexpected pos N vs M" when a write comes
    up short; None otherwise."""
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    if not full and "unexpected pos" in str(exc):
        try:
            full = shutil.disk_usage(out).free < 64 * 2**20
        except OSError:
            full = False
    return f"the disk holding {out} is full ({first_line(exc)})" if full else None


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
    has_state = study.evaluation.spectrum
    probe = Measurer(study, None, {}, {} if has_state else None)
    last = checkpoints[-1]["step"]
    todo = {c["step"]: probe.tasks(c["step"] == last) - present.get(c["step"], set())
            for c in checkpoints}
    todo = {step: tasks for step, tasks in todo.items() if tasks}
    if not todo:
        return
    log(f"run {run.run_id} ({run.label}): measuring {sorted(set().union(*todo.values()))} "
        "on its saved checkpoints")
    from learnforget.train import load_checkpoint_weights

    loaded = load_base(training_base_spec(run), log=log)  # the dtypes training held
    base_state = _matrix_snapshot(loaded.model) if has_state else None
    model = apply_method(loaded.model, run.method)
    measurer = Measurer(study, loaded.tokenizer, _base_values(store, study), base_state)
    for checkpoint in checkpoints:
        step, tokens = checkpoint["step"], checkpoint["tokens"]
        folder = Path(checkpoint["path"] or "")
        if step not in todo or not folder.is_dir():
            continue
        load_checkpoint_weights(model, folder)
        rows, artifacts = measurer(model, final=step == last, only=todo[step])
        store.add_measurements(run.run_id, [(step, tokens, m) for m in rows],
                               {(step, kind): payload for kind, payload in artifacts.items()})


def validate_tasks(study: Study) -> None:
    """Fail early (before any training) on an unknown task name."""
    learning, forgetting = study_tasks(study)
    for name in learning + forgetting:
        get_task(name, study.target)
    for name in study.evaluation.final_only:
        if name not in learning + forgetting:
            raise UserError(f"evaluation.final_only names {name!r}, which is not one of the "
                            f"study's tasks ({', '.join(learning + forgetting)})")
