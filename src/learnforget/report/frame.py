"""The study's results as tables, and the one place where "learning" and "forgetting" are defined.

``load_frame(OUT)`` reads ``OUT/results.sqlite`` and ``OUT/study.json`` into a ``Frame``:

- ``checkpoints``: one row per run × measured step, with the run's settings (label, kind, lr, r,
  targets, weight decay, dropout, optimizer, seed, status), one column per ``task/metric`` (e.g.
  ``source_bpb/bpb`` and ``source_bpb/bpb_delta``) and the two derived scores:

  * ``learn`` — the first learning task's primary metric, as an improvement over the base model,
    oriented so that higher = learned more: ``value − base`` for higher-is-better metrics
    (accuracy, pass@1), ``base − value`` for lower-is-better ones (bits per byte).
  * ``forget`` — the first forgetting task's primary metric, oriented so that higher = forgot
    more: ``value − base`` for bits per byte, ``base − value`` for accuracy. When two or more
    forgetting tasks are accuracy-type, ``forget_mean`` is the mean of their accuracy drops (the
    paper's forgetting average) and it is ``forget`` whenever the first forgetting task is
    accuracy-type.

- ``base``: the base model as a row (step 0, tokens 0, learn = forget = 0).
- ``train``: the training curves, one row per run × logged step (columns ``train/loss``,
  ``train/lr``, ``train/tokens_per_s``).
- ``runs``: one row per run, including runs that have no checkpoint yet.

Every other part of the report (figures, verdict, recommendation, CSV) reads these columns and
the helpers below (``final_rows``, ``lr_table``, ``best_lrs``), so the definitions live here only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from learnforget.errors import UserError
from learnforget.store import Store
from learnforget.study import Study

RUN_COLUMNS = ["run_id", "label", "kind", "lr", "r", "targets", "weight_decay",
               "attention_dropout", "train_embeddings", "optimizer", "seed", "status"]
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

    @property
    def labels(self) -> list[str]:
        """Method labels that have at least one run, in display order (full first, then LoRA)."""
        return sort_labels(self.runs)

    def metric_columns(self) -> list[str]:
        """The ``task/metric`` columns present in ``checkpoints``."""
        return [c for c in self.checkpoints.columns if "/" in c]


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
        return (kind_rank, label.endswith("-lion"), targets, r, label)

    return sorted(first.index, key=key)


def pretty_label(label: str) -> str:
    """A readable method name: ``lora-r8-all`` → ``LoRA r=8 (all)``, ``full-wd0.1`` → ``full
    finetuning (weight decay 0.1)``."""
    parts = label.split("-")
    lion = parts[-1] == "lion"
    if lion:
        parts = parts[:-1]
    extras: list[str] = []
    if parts[0] == "lora" and len(parts) >= 3 and parts[1].startswith("r"):
        names = {"rs": "rsLoRA", "dora": "DoRA"}
        extras = [parts[2], *(names.get(p, p) for p in parts[3:])]
        name = f"LoRA {parts[1][0]}={parts[1][1:]}"
    elif parts[0] == "full":
        name = "full finetuning"
        i = 1
        while i < len(parts):
            if parts[i] == "frozen" and i + 1 < len(parts) and parts[i + 1] == "emb":
                extras.append("frozen embeddings")
                i += 2
                continue
            match = re.fullmatch(r"(wd|drop)([0-9.e+-]+)", parts[i])
            if match:
                word = "weight decay" if match[1] == "wd" else "attention dropout"
                extras.append(f"{word} {match[2]}")
            else:
                extras.append(parts[i])
            i += 1
    else:
        name = "-".join(parts)
    if lion:
        extras.append("Lion")
    return f"{name} ({', '.join(extras)})" if extras else name


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
    except ValidationError:
        return None


def _task_names(study: Study | None, measured: set[str]) -> tuple[list[str], list[str]]:
    """(learning, forgetting) task names: the study's, its defaults, or a guess from the data."""
    from learnforget.measure.tasks import default_tasks

    if study is not None:
        learning, forgetting = default_tasks(study.target)
        return (study.evaluation.learning or learning, study.evaluation.forgetting or forgetting)
    forgetting = [t for t in ("source_bpb", "source_cloze", "hellaswag", "arc_challenge",
                              "winogrande") if t in measured]
    learning = sorted(measured - set(forgetting) - {"train", "spectrum"})
    return learning, forgetting


def _run_table(store: Store) -> pd.DataFrame:
    rows = []
    for run in store.runs():
        config = run["config"]
        method = config.get("method") or {}
        rows.append({
            "run_id": run["run_id"], "label": run["label"], "kind": run["method"],
            "lr": method.get("lr"), "r": method.get("r"), "targets": method.get("targets"),
            "weight_decay": method.get("weight_decay"),
            "attention_dropout": method.get("attention_dropout"),
            "train_embeddings": method.get("train_embeddings"),
            "optimizer": (config.get("optimizer") or {}).get("name"),
            "seed": config.get("seed"), "status": run["status"], "error": run["error"],
        })
    table = pd.DataFrame(rows, columns=[*RUN_COLUMNS, "error"])
    for column in ("lr", "weight_decay", "attention_dropout"):
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
    checkpoints = checkpoints.sort_values(["label", "lr", "seed", "run_id", "step"])
    checkpoints = checkpoints.reset_index(drop=True)

    learn_label = forget_label = "(no task)"
    checkpoints["learn"] = np.nan
    checkpoints["forget"] = np.nan
    if learning:
        checkpoints["learn"] = _oriented(checkpoints, base, learning[0], +1)
        learn_label = _axis_label(learning[0], gained=True)
    accuracy_type = [o for o in forgetting if o.higher_is_better]
    mean_tasks: list[str] = []
    if len(accuracy_type) >= 2:
        drops = pd.concat([_oriented(checkpoints, base, o, -1) for o in accuracy_type], axis=1)
        checkpoints["forget_mean"] = drops.mean(axis=1, skipna=False)
        mean_tasks = [o.task for o in accuracy_type]
    if forgetting:
        first = forgetting[0]
        if first.higher_is_better and mean_tasks:
            checkpoints["forget"] = checkpoints["forget_mean"]
            forget_label = f"mean accuracy lost vs base ({', '.join(mean_tasks)})"
        else:
            checkpoints["forget"] = _oriented(checkpoints, base, first, -1)
            forget_label = _axis_label(first, gained=False)

    base_row = pd.Series({"run_id": next(iter(sorted(base_ids)), "base"), "label": "base",
                          "kind": "base", "status": "finished", "step": 0, "tokens": 0,
                          "learn": 0.0, "forget": 0.0, **({"forget_mean": 0.0} if mean_tasks
                                                            else {})})
    base = pd.concat([base_row, base.drop(["run_id", "step", "tokens"], errors="ignore")])

    train = measurements[measurements["task"].eq("train") & ~measurements["run_id"].isin(base_ids)]
    train = _pivot(train)
    train = runs[["run_id", "label", "lr", "seed", "status"]].merge(train, on="run_id")
    return Frame(checkpoints, train.sort_values(["run_id", "step"]).reset_index(drop=True), runs,
                 base, study, learning, forgetting, learn_label, forget_label, mean_tasks)


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
    (over usable runs only): learn, forget, tokens and the ΔW ``spectrum/rank90`` median."""
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
    table = lr_table(frame).dropna(subset=["learn"])
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
