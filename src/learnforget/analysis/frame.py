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
  * ``learn_se`` / ``forget_se`` — the standard error of the checkpoint's value behind ``learn``
    / ``forget`` (for ``forget_mean``: √Σse² / k), NaN when the store holds none. The base
    model's own standard error is in ``base``. The verdicts read differences through the
    noise draws of ``learnforget.analysis.draws`` (items resampled jointly for every
    checkpoint, seeds resampled; the stored errors where per-item values are missing).

- ``items``: the per-item values behind each checkpoint's scores, {(run_id, step): {task:
  ItemValues}} (``learnforget.measure.uncertainty``); empty for stores written without them.

- ``base``: the base model as a row (step 0, tokens 0, learn = forget = 0).
- ``train``: the training curves, one row per run × logged step (columns ``train/loss``,
  ``train/lr``, ``train/tokens_per_s``).
- ``runs``: one row per run, including runs that have no checkpoint yet.

Display names come from the settings (``method_name``), never from parsing a label. Every
analysis and every part of the report (figures, verdict, recommendation, CSV) reads these columns
and the helpers below (``final_rows``, ``lr_table``, ``best_lrs``), so the definitions live here
only.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from learnforget.errors import UserError
from learnforget.measure.uncertainty import ITEMS_KIND_PREFIX, ItemValues
from learnforget.plan import MethodConfig, run_label
from learnforget.store import Store
from learnforget.study import Study

# A run's settings as structured columns, straight from its stored config (never parsed from
# the label): the method's kind and every field that tells one method from another.
METHOD_COLUMNS = ["kind", "r", "alpha", "targets", "init", "use_rslora", "use_dora", "dropout",
                  "weight_decay", "attention_dropout", "train_embeddings", "optimizer"]
RUN_COLUMNS = ["run_id", "label", *METHOD_COLUMNS, "lr", "seed", "status"]
UNUSABLE = ("diverged", "failed")  # runs whose numbers never choose a best LR or a recommendation
LOWER_IS_BETTER_WORDS = ("bpb", "loss", "perplexity", "ppl", "nll")
TARGET_ORDER = {"attention": 0, "mlp": 1, "all": 2}
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

    @functools.cached_property
    def lr_summary(self) -> pd.DataFrame:
        """``lr_table`` of this frame, built once (read it through ``lr_table``: a copy)."""
        return _lr_table(self)

    @functools.cached_property
    def best_lr_by_label(self) -> dict[str, float]:
        """``best_lrs`` of this frame, built once (read it through ``best_lrs``: a copy)."""
        return _best_lrs(self)

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


def method_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per label with the method's settings (``METHOD_COLUMNS``) and ``name``."""
    if runs.empty:
        return pd.DataFrame(columns=[*METHOD_COLUMNS, "name"])
    table = runs.drop_duplicates("label").set_index("label")[METHOD_COLUMNS].copy()
    table["name"] = [method_name(row) for row in table.itertuples()]
    return table


def _is_set(value: object) -> bool:
    """A setting that is present (not None / NaN / NA)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value)) \
        and value is not pd.NA


def method_name(method) -> str:
    """A readable method name from its settings (a row or any object with ``METHOD_COLUMNS``
    attributes): ``LoRA r=8 (all)``, ``LoRA r=64 (mlp, DoRA, Lion)``, ``full finetuning
    (frozen embeddings, weight decay 0.1)``."""
    extras: list[str] = []
    if method.kind == "lora":
        r = int(method.r) if _is_set(method.r) else "?"
        name = f"LoRA r={r}"
        extras.append(str(method.targets))
        if _is_set(method.alpha) and _is_set(method.r) and float(method.alpha) != 2 * int(r):
            extras.append(f"α={float(method.alpha):g}")
        if method.use_rslora is True:
            extras.append("rsLoRA")
        if method.use_dora is True:
            extras.append("DoRA")
        if _is_set(method.init) and method.init != "default":
            extras.append(f"{method.init} init")
        if _is_set(method.dropout) and float(method.dropout) > 0:
            extras.append(f"dropout {float(method.dropout):g}")
        if _is_set(method.weight_decay) and float(method.weight_decay) > 0:
            extras.append(f"weight decay {float(method.weight_decay):g}")
    elif method.kind == "full":
        name = "full finetuning"
        if method.train_embeddings is False:
            extras.append("frozen embeddings")
        if _is_set(method.weight_decay) and float(method.weight_decay) > 0:
            extras.append(f"weight decay {float(method.weight_decay):g}")
        if _is_set(method.attention_dropout) and float(method.attention_dropout) > 0:
            extras.append(f"attention dropout {float(method.attention_dropout):g}")
    else:
        name = str(method.kind)
    if method.optimizer == "lion":
        extras.append("Lion")
    return f"{name} ({', '.join(extras)})" if extras else name


def is_paper_lora(method) -> bool:
    """Whether a method is the paper's LoRA: all linear modules and ``is_plain_lora``."""
    return method.targets == "all" and is_plain_lora(method)


def is_plain_lora(method) -> bool:
    """The paper's LoRA on any target set (claim 6 compares target sets): default init, α/r
    scaling with α = 2r, no rsLoRA or DoRA, no dropout or weight decay (a method that differs in
    any of them is another method, compared apart)."""
    return (method.kind == "lora" and method.init == "default" and method.use_rslora is not True
            and method.use_dora is not True
            and (not _is_set(method.alpha) or float(method.alpha) == 2 * int(method.r))
            and not (_is_set(method.dropout) and float(method.dropout) > 0)
            and not (_is_set(method.weight_decay) and float(method.weight_decay) > 0))


def sort_labels(runs: pd.DataFrame) -> list[str]:
    """Labels ordered full finetuning first, then LoRA by targets and rank, then the rest."""
    if runs.empty:
        return []
    first = runs.drop_duplicates("label").set_index("label")

    def key(label: str) -> tuple:
        row = first.loc[label]
        kind_rank = {"full": 0, "lora": 1}.get(str(row["kind"]), 2)
        r = row["r"] if pd.notna(row["r"]) else 0
        targets = TARGET_ORDER.get(str(row["targets"]), 9)
        return (kind_rank, str(row["optimizer"]) != "adamw", targets, r, label)

    return sorted(first.index, key=key)


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


def _config_label(config: dict, stored: str) -> str:
    """A run's label rebuilt from its stored config, the way ``plan`` names runs today (every
    setting that tells methods apart is in it); ``stored`` when the config holds no method or
    one that is not a valid method setting.

    Stores written before the label held α, dropout and LoRA weight decay recorded one label
    for runs differing in them; rebuilding the label splits those runs into their methods."""
    method = config.get("method")
    if not isinstance(method, dict) or not method:
        return stored
    known = {key: value for key, value in method.items() if key in MethodConfig.model_fields}
    try:
        point = MethodConfig.model_validate(known)
    except ValidationError:
        return stored
    optimizer = config.get("optimizer")
    return run_label(point, optimizer.get("name") if isinstance(optimizer, dict) else None)


def _run_table(store: Store) -> pd.DataFrame:
    """One row per stored run with its structured settings from the run's config; the label is
    rebuilt from those settings (``_config_label``), so runs with different settings never
    share one, whatever label the store recorded."""
    rows = []
    for run in store.runs():
        config = run["config"]
        method = config.get("method") or {}
        label = run["label"] if run["method"] == "base" else _config_label(config, run["label"])
        row = {"run_id": run["run_id"], "label": label, "kind": run["method"],
               "lr": method.get("lr"), "seed": config.get("seed"), "status": run["status"],
               "error": run["error"],
               "optimizer": (config.get("optimizer") or {}).get("name")}
        for column in METHOD_COLUMNS:
            if column not in ("kind", "optimizer"):
                row[column] = method.get(column)
        if row["kind"] != "lora":  # LoRA-only settings are absent, not defaults, elsewhere
            for column in ("r", "alpha", "targets", "init", "use_rslora", "use_dora", "dropout"):
                row[column] = None
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*RUN_COLUMNS, "error"])
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
    checkpoints["learn_se"] = np.nan
    checkpoints["forget_se"] = np.nan
    if learning:
        checkpoints["learn"] = _oriented(checkpoints, base, learning[0], +1)
        checkpoints["learn_se"] = _stderr(checkpoints, learning[0])
        learn_label = _axis_label(learning[0], gained=True)
    accuracy_type = [o for o in forgetting if o.higher_is_better]
    mean_tasks: list[str] = []
    if len(accuracy_type) >= 2:
        drops = pd.concat([_oriented(checkpoints, base, o, -1) for o in accuracy_type], axis=1)
        checkpoints["forget_mean"] = drops.mean(axis=1, skipna=False)
        errors = pd.concat([_stderr(checkpoints, o) for o in accuracy_type], axis=1)
        checkpoints["forget_mean_se"] = np.sqrt((errors**2).sum(axis=1, skipna=False)) / len(
            accuracy_type)
        mean_tasks = [o.task for o in accuracy_type]
    if forgetting:
        first = forgetting[0]
        if first.higher_is_better and mean_tasks:
            checkpoints["forget"] = checkpoints["forget_mean"]
            checkpoints["forget_se"] = checkpoints["forget_mean_se"]
            forget_label = f"mean accuracy lost vs base ({', '.join(mean_tasks)})"
        else:
            checkpoints["forget"] = _oriented(checkpoints, base, first, -1)
            checkpoints["forget_se"] = _stderr(checkpoints, first)
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
                          "learn": 0.0, "forget": 0.0, "learn_se": learn_se,
                          "forget_se": forget_se,
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


# --- the helpers every figure and table shares ---------------------------------------------------
def final_rows(frame: Frame) -> pd.DataFrame:
    """Each run's last measured checkpoint (highest step)."""
    cp = frame.checkpoints
    if cp.empty:
        return cp
    return cp.loc[cp.groupby("run_id")["step"].idxmax()].reset_index(drop=True)


def usable(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs that neither diverged nor failed."""
    return rows[~rows["status"].isin(UNUSABLE)]


def lr_table(frame: Frame) -> pd.DataFrame:
    """One row per (label, lr): run counts by status and the final scores averaged over seeds
    (over usable runs only): learn, forget, tokens and the ΔW ``spectrum/rank90`` median.
    Computed once per frame (a report asks some forty times); each call gets its own copy."""
    return frame.lr_summary.copy()


def _lr_table(frame: Frame) -> pd.DataFrame:
    runs = frame.runs
    if runs.empty:
        return pd.DataFrame(columns=["label", "lr", "runs", "diverged", "failed", "pending",
                                     "learn", "forget", "tokens", "rank90"])
    counts = runs.groupby(["label", "lr"], dropna=False).agg(
        runs=("run_id", "size"),
        diverged=("status", lambda s: int((s == "diverged").sum())),
        failed=("status", lambda s: int((s == "failed").sum())),
        pending=("status", lambda s: int(s.isin(["pending", "running"]).sum())),
    )
    finals = usable(final_rows(frame))
    if "spectrum/rank90" not in finals:
        finals = finals.assign(**{"spectrum/rank90": np.nan})
    scores = finals.groupby(["label", "lr"], dropna=False).agg(
        learn=("learn", "mean"), forget=("forget", "mean"), tokens=("tokens", "max"),
        rank90=("spectrum/rank90", "mean"))
    return counts.join(scores, how="left").reset_index()


def best_lrs(frame: Frame) -> dict[str, float]:
    """The best learning rate of each label: the LR whose usable runs have the highest final
    ``learn`` (mean over seeds). Labels with no usable, measured run are left out."""
    return dict(frame.best_lr_by_label)


def _best_lrs(frame: Frame) -> dict[str, float]:
    table = frame.lr_summary.dropna(subset=["learn"])
    if table.empty:
        return {}
    best = table.loc[table.groupby("label")["learn"].idxmax()]
    return {str(row.label): float(row.lr) for row in best.itertuples()}


def mean_curves(frame: Frame) -> pd.DataFrame:
    """learn and forget per (label, lr, step), averaged over seeds (usable runs only), with
    ``best`` marking the label's best LR."""
    cp = usable(frame.checkpoints)
    columns = ["label", "lr", "step", "tokens", "learn", "forget", "best"]
    if cp.empty:
        return pd.DataFrame(columns=columns)
    curves = cp.groupby(["label", "lr", "step"], as_index=False).agg(
        tokens=("tokens", "mean"), learn=("learn", "mean"), forget=("forget", "mean"))
    best = best_lrs(frame)
    curves["best"] = [best.get(lab) is not None and math.isclose(best[lab], lr)
                      for lab, lr in zip(curves["label"], curves["lr"], strict=True)]
    return curves[columns]


def reference_label(frame: Frame) -> str | None:
    """The full-finetuning label others are compared with: ``full`` when it has a usable
    measured run, otherwise the full-* label with the highest final learn."""
    best = best_lrs(frame)
    if "full" in best:
        return "full"
    table = lr_table(frame)
    kinds = frame.runs.drop_duplicates("label").set_index("label")["kind"]
    full = table[table["label"].map(kinds).eq("full") & table["label"].isin(list(best))]
    full = full.dropna(subset=["learn"])
    if full.empty:
        return None
    return str(full.loc[full["learn"].idxmax(), "label"])
