"""The study's results as tables, and the one place where "learning" and "forgetting" are defined.

``load_frame(OUT)`` reads ``OUT/results.sqlite`` and ``OUT/study.json`` into a ``Frame``:

- ``checkpoints``: one row per run × measured step, with the run's structured settings
  (``METHOD_COLUMNS``: kind, r, α, targets, init, rsLoRA, DoRA, dropout, weight decay, attention
  dropout, trained embeddings, optimizer; then lr, seed, status), one column per ``task/metric``
  (e.g. ``source_bpb/bpb``, ``source_bpb/bpb_delta``, ``source_bpb/bpb_stderr``,
  ``source_bpb/n``) and the two derived scores with their standard errors:

  * ``learn`` — the first learning task's primary metric, as an improvement over the base model,
    oriented so that higher = learned more: ``value − base`` for higher-is-better metrics
    (accuracy, pass@1), ``base − value`` for lower-is-better ones (bits per byte).
  * ``forget`` — the first forgetting task's primary metric, oriented so that higher = forgot
    more: ``value − base`` for bits per byte, ``base − value`` for accuracy. When two or more
    forgetting tasks are accuracy-type, ``forget_mean`` is the mean of their accuracy drops (the
    paper's forgetting average) and it is ``forget`` whenever the first forgetting task is
    accuracy-type.
  * ``checkpoint`` — the checkpoint's folder as the store recorded it (empty when not kept).
  * ``learn_stderr`` / ``forget_stderr`` / ``forget_mean_stderr`` — the standard error of the
    checkpoint's value behind ``learn`` / ``forget`` / ``forget_mean`` (for ``forget_mean``:
    √Σse² / k), NaN when the store holds none; named like the stored ``<task>/<metric>_stderr``
    (``measure.uncertainty.stderr_name``). The base model's own standard error is in ``base``.
    The verdicts read differences through the noise draws of ``learnforget.analysis.draws``
    (items resampled jointly for every checkpoint, seeds resampled; the stored errors where
    per-item values are missing).

- ``items``: the per-item values behind each checkpoint's scores, {(run_id, step): {task:
  ItemValues}} (``learnforget.measure.uncertainty``); empty for stores written without them.

- ``base``: the base model as a row (step 0, tokens 0, learn = forget = 0).
- ``train``: the training curves, one row per run × logged step (columns ``train/loss``,
  ``train/lr``, ``train/tokens_per_s``).
- ``runs``: one row per run, including runs that have no checkpoint yet.

Display names come from the settings (``learnforget.analysis.method_names``), never from
parsing a label. Every analysis and every part of the report (figures, verdict, recommendation,
CSV) reads these columns, and chooses rows through ``learnforget.analysis.best_lr``
(``final_rows``, ``lr_table``, ``best_lrs``, ``AtBestLR``), so the definitions live here only.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from learnforget.analysis.method_names import (
    METHOD_COLUMNS,
    method_table,
    sort_labels,
    stored_method,
)
from learnforget.errors import UserError
from learnforget.measure.uncertainty import ITEMS_KIND_PREFIX, ItemValues
from learnforget.plan import run_label
from learnforget.store import Store
from learnforget.study import Study

RUN_COLUMNS = ["run_id", "label", *METHOD_COLUMNS, "lr", "seed", "status"]
LOWER_IS_BETTER_WORDS = ("bpb", "loss", "perplexity", "ppl", "nll")
DOMAIN_WORDS = {"code_bpb": "code", "code_ift_bpb": "code-response", "math_bpb": "math-response",
                "source_bpb": "prose", "target_bpb": "target-data"}


@dataclass(frozen=True)
class Orientation:
    """How a task's primary metric is read: its name and whether higher is better."""

    task: str
    metric: str
    higher_is_better: bool

    @property
    def column(self) -> str:
        """The ``task/metric`` column holding the metric's values."""
        return f"{self.task}/{self.metric}"


@dataclass
class Frame:
    """The study's measurements, ready to plot (see the module docstring for every column)."""

    checkpoints: pd.DataFrame
    train: pd.DataFrame
    runs: pd.DataFrame
    base: pd.Series
    study: Study | None
    learning: list[Orientation]
    forgetting: list[Orientation]
    learn_label: str
    forget_label: str
    forget_mean_tasks: list[str] = field(default_factory=list)
    items: dict[tuple[str, int], dict[str, ItemValues]] = field(default_factory=dict)
    derived: dict[str, object] = field(default_factory=dict, repr=False, compare=False)
    """Tables derived from this frame, each built once (``learnforget.analysis.best_lr``)."""

    @functools.cached_property
    def labels(self) -> list[str]:
        """Method labels that have at least one run, in display order (full first, then LoRA);
        built once."""
        return sort_labels(self.runs)

    @functools.cached_property
    def methods(self) -> pd.DataFrame:
        """One row per method label (index) with its structured settings and display name
        (built once: every figure and table names methods through it)."""
        return method_table(self.runs)

    def name(self, label: str) -> str:
        """The readable name of method ``label``, built from its settings."""
        methods = self.methods
        return str(methods.at[label, "name"]) if label in methods.index else label

    def parts(self, column: str) -> list[tuple[Orientation, float]]:
        """The task metrics a derived column (``learn`` or ``forget``) is made of, each with its
        weight: one metric for ``learn`` and a single forgetting task, k metrics weighing 1/k
        each for the forgetting mean. Empty for any other column."""
        if column == "learn":
            return [(self.learning[0], 1.0)] if self.learning else []
        if column != "forget" or not self.forgetting:
            return []
        if self.forget_mean_tasks and self.forgetting[0].higher_is_better:
            mean = [o for o in self.forgetting if o.task in self.forget_mean_tasks]
            return [(o, 1.0 / len(mean)) for o in mean]
        return [(self.forgetting[0], 1.0)]

    def metric_columns(self) -> list[str]:
        """The ``task/metric`` columns present in ``checkpoints``."""
        return [c for c in self.checkpoints.columns if "/" in c]


def _orientation(task: str, study: Study | None) -> Orientation:
    """The task's primary metric and direction from the registry; unknown names fall back to
    the metric's name (bits per byte, loss → lower is better; anything else → higher)."""
    from learnforget.measure.tasks import get_task

    try:
        spec = get_task(task, study.target if study else None)
        return Orientation(task, spec.primary, spec.higher_is_better)
    except (UserError, ImportError):
        lower = any(word in task for word in LOWER_IS_BETTER_WORDS)
        return Orientation(task, "bpb" if lower else "acc", not lower)


def _axis_label(o: Orientation, gained: bool) -> str:
    """'code bits/byte gained vs base', 'hellaswag acc lost vs base', …"""
    verb = "gained" if gained else "lost"
    if o.metric == "bpb":
        return f"{DOMAIN_WORDS.get(o.task, o.task)} bits/byte {verb} vs base"
    return f"{o.task} {o.metric} {verb} vs base"


def _study(out: Path) -> Study | None:
    """OUT/study.json, or None when it is missing or from an incompatible version (the tasks
    are then guessed from the measurements)."""
    path = out / "study.json"
    if not path.is_file():
        return None
    try:
        return Study.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, UnicodeDecodeError):  # another version's, or not text at all
        return None


def _task_names(study: Study | None, measured: set[str]) -> tuple[list[str], list[str]]:
    """(learning, forgetting) task names: the study's, its defaults, or a guess from the data."""
    from learnforget.measure.tasks import default_tasks

    if study is not None:
        learning, forgetting = default_tasks(study.target)
        return (study.evaluation.learning or learning, study.evaluation.forgetting or forgetting)
    forgetting = [t for t in ("source_bpb", "source_cloze", "hellaswag", "arc_challenge",
                              "winogrande") if t in measured]
    learning = sorted(measured - set(forgetting) - {"train", "spectrum", "data", "diversity",
                                                     "params"})
    return learning, forgetting


def _run_table(store: Store) -> pd.DataFrame:
    """One row per stored run with its typed method (``method_config``: the ``MethodConfig``
    read back from the run's config, None for the base model or a config that holds none) and its
    settings as columns; the label is rendered from the typed method, so runs with different
    settings never share one, whatever label the store recorded (stores written before the
    label held α, dropout and LoRA weight decay recorded one label for runs differing in
    them: rendering it again splits those runs into their methods)."""
    rows = []
    for run in store.runs():
        config = run["config"]
        method = config.get("method") or {}
        point = None if run["method"] == "base" else stored_method(config)
        optimizer = (config.get("optimizer") or {}).get("name")
        label = run["label"] if point is None else run_label(point, optimizer)
        row = {"run_id": run["run_id"], "label": label, "kind": run["method"],
               "method_config": point,
               "lr": method.get("lr"), "seed": config.get("seed"), "status": run["status"],
               "error": run["error"],
               "optimizer": optimizer}
        for column in METHOD_COLUMNS:
            if column not in ("kind", "optimizer"):
                row[column] = method.get(column)
        if isinstance(row.get("peft"), dict):  # one readable, hashable cell: its JSON
            row["peft"] = json.dumps(row["peft"], sort_keys=True)
        if row["kind"] != "lora":  # LoRA-only settings are absent, not defaults, elsewhere
            for column in ("r", "alpha", "targets", "init", "use_rslora", "use_dora", "dropout"):
                row[column] = None
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*RUN_COLUMNS, "method_config", "error"])
    for column in ("lr", "alpha", "dropout", "weight_decay", "attention_dropout"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    for column in ("r", "seed"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    return table


def _oriented(frame: pd.DataFrame, base: pd.Series, o: Orientation, sign: int) -> pd.Series:
    """``sign`` · improvement of ``o`` over the base, from the stored delta when present."""
    delta_column = f"{o.column}_delta"
    if delta_column in frame:
        delta = frame[delta_column].astype(float)
    elif o.column in frame and o.column in base and pd.notna(base[o.column]):
        delta = frame[o.column].astype(float) - float(base[o.column])
    else:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    improvement = delta if o.higher_is_better else -delta
    return sign * improvement


def load_frame(out: Path) -> Frame:
    """Read a study's output folder into a ``Frame`` (``UserError`` when there is no store)."""
    out = Path(out)
    db = out / "results.sqlite"
    if not db.is_file():
        raise UserError(f"{out} has no results.sqlite: run `learnforget run STUDY.yaml --out "
                        f"{out}` first")
    study = _study(out)
    store = Store(db)
    try:
        all_runs = _run_table(store)
        measurements = pd.DataFrame(store.measurements(),
                                    columns=["run_id", "step", "tokens", "task", "metric", "value"])
        folders = pd.DataFrame(
            [{"run_id": run_id, "step": c["step"], "checkpoint": c["path"]}
             for run_id in all_runs["run_id"] for c in store.checkpoints(run_id)],
            columns=["run_id", "step", "checkpoint"])
        items: dict[tuple[str, int], dict[str, ItemValues]] = {}
        for record in store.artifacts_with_prefix(ITEMS_KIND_PREFIX):
            task = record["kind"][len(ITEMS_KIND_PREFIX):]
            items.setdefault((record["run_id"], int(record["step"])), {})[task] = record["data"]
    finally:
        store.close()
    measurements["value"] = measurements["value"].astype(float)
    is_base = all_runs["kind"].eq("base") | all_runs["run_id"].str.startswith("base-")
    base_ids = set(all_runs.loc[is_base, "run_id"])
    runs = all_runs[~is_base].reset_index(drop=True)

    evaluated = measurements[measurements["task"].ne("train")]
    learning_names, forgetting_names = _task_names(study, set(evaluated["task"]))
    learning = [_orientation(t, study) for t in learning_names]
    forgetting = [_orientation(t, study) for t in forgetting_names]

    wide = _pivot(evaluated[~evaluated["run_id"].isin(base_ids)])
    base_values = _pivot(evaluated[evaluated["run_id"].isin(base_ids)])
    base = (base_values.iloc[0] if len(base_values) else pd.Series(dtype=object)).copy()
    checkpoints = runs[RUN_COLUMNS].merge(wide, on="run_id", how="inner")
    checkpoints = checkpoints.merge(folders, on=["run_id", "step"], how="left")
    checkpoints = checkpoints.sort_values(["label", "lr", "seed", "run_id", "step"])
    checkpoints = checkpoints.reset_index(drop=True)

    learn_label = forget_label = "(no task)"
    checkpoints["learn"] = np.nan
    checkpoints["forget"] = np.nan
    checkpoints["learn_stderr"] = np.nan
    checkpoints["forget_stderr"] = np.nan
    if learning:
        checkpoints["learn"] = _oriented(checkpoints, base, learning[0], +1)
        checkpoints["learn_stderr"] = _stderr(checkpoints, learning[0])
        learn_label = _axis_label(learning[0], gained=True)
    accuracy_type = [o for o in forgetting if o.higher_is_better]
    mean_tasks: list[str] = []
    if len(accuracy_type) >= 2:
        drops = pd.concat([_oriented(checkpoints, base, o, -1) for o in accuracy_type], axis=1)
        checkpoints["forget_mean"] = drops.mean(axis=1, skipna=False)
        errors = pd.concat([_stderr(checkpoints, o) for o in accuracy_type], axis=1)
        checkpoints["forget_mean_stderr"] = np.sqrt((errors**2).sum(axis=1, skipna=False)) / len(
            accuracy_type)
        mean_tasks = [o.task for o in accuracy_type]
    if forgetting:
        first = forgetting[0]
        if first.higher_is_better and mean_tasks:
            checkpoints["forget"] = checkpoints["forget_mean"]
            checkpoints["forget_stderr"] = checkpoints["forget_mean_stderr"]
            forget_label = f"mean accuracy lost vs base ({', '.join(mean_tasks)})"
        else:
            checkpoints["forget"] = _oriented(checkpoints, base, first, -1)
            checkpoints["forget_stderr"] = _stderr(checkpoints, first)
            forget_label = _axis_label(first, gained=False)

    base_se = pd.DataFrame([base]) if len(base) else pd.DataFrame()
    learn_se = float(_stderr(base_se, learning[0]).iloc[0]) if learning and len(base_se) \
        else math.nan
    forget_se = math.nan
    if forgetting and len(base_se):
        if forgetting[0].higher_is_better and mean_tasks:
            errors = [float(_stderr(base_se, o).iloc[0]) for o in accuracy_type]
            forget_se = math.sqrt(sum(e**2 for e in errors)) / len(errors)
        else:
            forget_se = float(_stderr(base_se, forgetting[0]).iloc[0])
    base_row = pd.Series({"run_id": next(iter(sorted(base_ids)), "base"), "label": "base",
                          "kind": "base", "status": "finished", "step": 0, "tokens": 0,
                          "learn": 0.0, "forget": 0.0, "learn_stderr": learn_se,
                          "forget_stderr": forget_se,
                          **({"forget_mean": 0.0} if mean_tasks else {})})
    base = pd.concat([base_row, base.drop(["run_id", "step", "tokens"], errors="ignore")])

    train = measurements[measurements["task"].eq("train") & ~measurements["run_id"].isin(base_ids)]
    train = _pivot(train)
    train = runs[["run_id", "label", "lr", "seed", "status"]].merge(train, on="run_id")
    return Frame(checkpoints, train.sort_values(["run_id", "step"]).reset_index(drop=True), runs,
                 base, study, learning, forgetting, learn_label, forget_label, mean_tasks, items)


def _stderr(frame: pd.DataFrame, o: Orientation) -> pd.Series:
    """The standard error of ``o``'s values (``<task>/<metric>_stderr``; NaN when not stored)."""
    column = f"{o.column}_stderr"
    if column in frame:
        return pd.to_numeric(frame[column], errors="coerce").astype(float)
    return pd.Series(np.nan, index=frame.index, dtype=float)


def _pivot(rows: pd.DataFrame) -> pd.DataFrame:
    """Long measurement rows → one row per (run, step, tokens), one column per task/metric."""
    if rows.empty:
        return pd.DataFrame(columns=["run_id", "step", "tokens"])
    rows = rows.assign(column=rows["task"] + "/" + rows["metric"])
    # (run, step, task, metric) is the store's primary key, so unstack never meets duplicates
    wide = rows.set_index(["run_id", "step", "tokens", "column"])["value"].unstack("column")
    wide.columns.name = None
    return wide.reset_index()
