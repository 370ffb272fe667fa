"""Which rows count and each method at its best learning rate.

Diverged and failed runs never count (``usable``). A method whose sweep was cut by successive
halving (runs ``stopped early``) chooses its best LR only among the LRs measured at its last
budget (``contenders``): a stopped run's early learning never competes with another's final
learning. ``lr_table`` folds each (label, LR)'s runs
into counts by status and final scores averaged over seeds; ``best_lrs`` picks each label's LR
with the most final learning; ``reference_label`` is full finetuning, the method others are
compared with. ``AtBestLR`` is the one view of "each method at its best LR": its runs, its
checkpoints and its curve averaged over seeds, read by the claims, the tables and the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from learnforget.analysis.frame import Frame
from learnforget.measure.uncertainty import STDERR_SUFFIX
from learnforget.store import STOPPED_EARLY

UNUSABLE = ("diverged", "failed")  # runs whose numbers never choose a best LR or a recommendation


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
    if "lr_table" not in frame.derived:
        frame.derived["lr_table"] = _lr_table(frame)
    return frame.derived["lr_table"].copy()


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
    ``learn`` (mean over seeds). Labels with no usable, measured run are left out. Computed
    once per frame; each call gets its own copy."""
    if "best_lrs" not in frame.derived:
        frame.derived["best_lrs"] = _best_lrs(frame)
    return dict(frame.derived["best_lrs"])


def contenders(frame: Frame) -> set[tuple[str, float]]:
    """The (label, LR) pairs that may be a label's best LR: every usable, measured one; for a
    label with runs stopped early, only the LRs whose usable runs reached the label's last
    measured step (its last budget so far). Computed once per frame."""
    if "contenders" not in frame.derived:
        finals = usable(final_rows(frame))
        pairs: set[tuple[str, float]] = set()
        if not finals.empty:
            steps = finals.groupby(["label", "lr"])["step"].max()
            stopped = set(frame.runs.loc[frame.runs["status"].eq(STOPPED_EARLY), "label"])
            for (label, lr), step in steps.items():
                last = steps.loc[label].max()
                if label not in stopped or step == last:
                    pairs.add((str(label), float(lr)))
        frame.derived["contenders"] = pairs
    return set(frame.derived["contenders"])


def _best_lrs(frame: Frame) -> dict[str, float]:
    table = lr_table(frame).dropna(subset=["learn"])
    allowed = contenders(frame)
    table = table[[(str(label), float(lr)) in allowed
                   for label, lr in zip(table["label"], table["lr"], strict=True)]]
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


def at_best_lr(rows: pd.DataFrame, best: dict[str, float]) -> pd.Series:
    """Which of ``rows`` (with ``label`` and ``lr`` columns) were trained at their label's best
    LR (``best``: ``best_lrs``); False for labels without one."""
    lrs = rows["label"].map(best).astype(float)
    return pd.Series(np.isclose(rows["lr"].astype(float), lrs), index=rows.index)


def seed_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Checkpoint rows averaged over seeds per step (see ``AtBestLR.curve``)."""
    if rows.empty:
        return pd.DataFrame(columns=["step", "tokens", "learn", "forget", "seeds"])
    numeric = rows.select_dtypes(include="number").columns.difference(["step"])
    numeric = [c for c in numeric if c != "seed"]
    groups = rows.groupby("step")
    curve = groups[numeric].mean()
    errors = [c for c in numeric if c.endswith(STDERR_SUFFIX)]
    if errors:
        squares = rows[errors].astype(float) ** 2
        counts = squares.groupby(rows["step"]).count().astype(float).replace(0.0, np.nan)
        curve[errors] = np.sqrt(squares.groupby(rows["step"]).sum(min_count=1)) / counts
    curve["seeds"] = groups["run_id"].nunique()
    for column in ("learn", "forget"):
        curve[f"{column}_sd"] = groups[column].std(ddof=1) if column in rows else np.nan
    return curve.reset_index().sort_values("step").reset_index(drop=True)


@dataclass
class AtBestLR:
    """Each method of a frame at its best learning rate (``best_lrs``): its usable runs, its
    usable checkpoints and its curve averaged over seeds (cached)."""

    frame: Frame
    best: dict[str, float] = field(init=False)
    _curves: dict[str, pd.DataFrame] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.best = best_lrs(self.frame)

    def run_ids(self) -> dict[str, list[str]]:
        """The usable runs of each label at its best LR (one per seed), labels with a best LR
        only."""
        runs = usable(self.frame.runs)
        chosen = runs[at_best_lr(runs, self.best)]
        return {label: list(chosen.loc[chosen["label"] == label, "run_id"])
                for label in self.best}

    def checkpoints(self, label: str) -> pd.DataFrame:
        """The usable checkpoints of ``label`` at its best LR (none without a best LR)."""
        cp = usable(self.frame.checkpoints)
        return cp[(cp["label"] == label) & at_best_lr(cp, self.best)]

    def curve(self, label: str) -> pd.DataFrame:
        """Usable checkpoints of ``label`` at its best LR, averaged over seeds per step: values
        are means, ``*_stderr`` columns the standard error of the mean (√Σse² / k), ``seeds`` the
        number of runs and ``learn_sd`` / ``forget_sd`` the spread across seeds (NaN for one)."""
        if label not in self._curves:
            self._curves[label] = seed_means(self.checkpoints(label))
        return self._curves[label]
