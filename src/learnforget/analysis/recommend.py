"""What the study concludes: a verdict per method (against full finetuning) and which finetuning
to use for a goal.

Both read a ``Frame`` (``learnforget.analysis.frame``): ``learn`` is higher = learned more,
``forget`` is higher = forgot more, both relative to the base model. Runs that diverged or failed
never count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from learnforget.analysis.best_lr import best_lrs, lr_table, reference_label, usable
from learnforget.analysis.frame import Frame
from learnforget.analysis.pareto import distance_to_front, frontier, pareto_front

Goal = Literal["learn", "balanced", "retain"]
GOALS: tuple[Goal, ...] = ("learn", "balanced", "retain")
RETAIN_SHARE = 0.5  # "retain" looks at checkpoints reaching this share of the best learning


# --- verdict ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerdictRow:
    """One method family at its best LR, compared with full finetuning (the reference)."""

    label: str
    name: str  # readable, e.g. "LoRA r=8 (all)"
    kind: str
    lr: float | None  # best LR; None when no run was usable
    runs: int
    diverged: int
    failed: int
    pending: int
    tokens: float  # training tokens at the final checkpoint
    learn: float  # final learn (mean over seeds)
    forget: float  # final forget (mean over seeds)
    learn_share: float  # learn / reference learn
    forget_share: float  # forget / reference forget
    rank90: float  # median ΔW rank for 90% of σ² at the final checkpoint
    frontier_gap: float  # forgetting above the reference's frontier at equal learning
    is_reference: bool
    sentence: str


def _share(value: float, reference: float) -> float:
    """value / reference, NaN when the reference is not positive (a share of nothing)."""
    if not (math.isfinite(value) and math.isfinite(reference)) or reference <= 0:
        return math.nan
    return value / reference


def _sentence(name: str, ref_name: str, learn_share: float, forget_share: float,
              ref_learn: float, ref_forget: float) -> str:
    if not math.isfinite(ref_learn):
        return f"{name}: no usable {ref_name} run to compare with."
    if ref_learn <= 0:
        return f"{ref_name} did not improve on the base model, so shares of it are undefined."
    if not math.isfinite(learn_share):
        return f"{name} has no usable measured run."
    learned = f"{name} kept {learn_share:.0%} of {ref_name}'s learning"
    if ref_forget <= 0 or not math.isfinite(forget_share):
        return f"{learned}; {ref_name} did not forget, so there is no share of forgetting."
    return f"{learned} and {forget_share:.0%} of its forgetting."


def _float(value: object) -> float:
    return float(value) if value is not None and pd.notna(value) else math.nan


def verdict(frame: Frame) -> list[VerdictRow]:
    """One row per label (display order): final learning and forgetting at the label's best LR
    as shares of the reference full-finetuning label's, run counts by status, ΔW rank and the
    gap to the reference's learning–forgetting frontier."""
    table = lr_table(frame)
    best = best_lrs(frame)
    ref = reference_label(frame)
    ref_name = "full finetuning" if ref in (None, "full") else frame.name(ref)
    kinds = frame.runs.drop_duplicates("label").set_index("label")["kind"]
    at_best = {label: table[(table["label"] == label) & (table["lr"] == lr)].iloc[0]
               for label, lr in best.items()}
    ref_learn = _float(at_best[ref]["learn"]) if ref else math.nan
    ref_forget = _float(at_best[ref]["forget"]) if ref else math.nan
    ref_line: list[tuple[float, float]] = []
    if ref:
        points = usable(frame.checkpoints[frame.checkpoints["label"] == ref])
        ref_line = frontier([(0.0, 0.0), *zip(points["learn"], points["forget"], strict=True)])
    rows = []
    for label in frame.labels:
        group = table[table["label"] == label]
        totals = {k: int(group[k].sum()) for k in ("runs", "diverged", "failed", "pending")}
        chosen = at_best.get(label)
        learn = _float(chosen["learn"]) if chosen is not None else math.nan
        forget = _float(chosen["forget"]) if chosen is not None else math.nan
        learn_share, forget_share = _share(learn, ref_learn), _share(forget, ref_forget)
        is_ref = label == ref
        name = frame.name(label)
        gap = math.nan if is_ref else distance_to_front((learn, forget), ref_line)
        sentence = ("the reference for the shares" if is_ref else
                    _sentence(name, ref_name, learn_share, forget_share, ref_learn, ref_forget))
        rows.append(VerdictRow(
            label=label, name=name, kind=str(kinds.get(label, "")),
            lr=best.get(label), **totals,
            tokens=_float(chosen["tokens"]) if chosen is not None else math.nan,
            learn=learn, forget=forget, learn_share=learn_share, forget_share=forget_share,
            rank90=_float(chosen["rank90"]) if chosen is not None else math.nan,
            frontier_gap=gap, is_reference=is_ref, sentence=sentence))
    return rows


# --- recommendation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Recommendation:
    """Which finetuning to use for a goal: a method label, its LR and where to stop."""

    goal: Goal
    label: str | None  # None when nothing can be recommended (reason says why)
    name: str  # the readable method name, from its settings ("" when nothing is recommended)
    lr: float | None
    r: int | None
    targets: str | None
    run_id: str | None
    tokens: float | None  # the checkpoint's training tokens
    learn: float
    forget: float
    reason: str
    frontier_note: str
    step: int | None = None  # the checkpoint's training step
    checkpoint: str | None = None  # its folder, when the run kept it


def _candidates(frame: Frame) -> pd.DataFrame:
    cp = usable(frame.checkpoints)
    return cp[cp["learn"].notna() & cp["forget"].notna()].reset_index(drop=True)


def frontier_note(frame: Frame) -> str:
    """Which methods make up the learning–forgetting frontier of all usable checkpoints."""
    cp = _candidates(frame)
    if cp.empty:
        return "There is no usable measured checkpoint yet."
    front = cp.iloc[pareto_front(list(zip(cp["learn"], cp["forget"], strict=True)))]
    labels = [lab for lab in frame.labels if lab in set(front["label"])]
    kinds = set(front["kind"])
    if len(labels) == 1 and cp["label"].nunique() > 1:
        return (f"Every frontier point is {frame.name(labels[0])}: it dominates the other "
                "methods (at no learning level does another method forget less).")
    if len(labels) == 1:
        return f"Only {frame.name(labels[0])} was measured, so it is the whole frontier."
    if len(kinds) == 1 and cp["kind"].nunique() > 1:
        family = "LoRA" if kinds == {"lora"} else "full finetuning"
        return (f"The frontier is made only of {family} checkpoints "
                f"({', '.join(frame.name(lab) for lab in labels)}).")
    return ("The frontier mixes methods: " + ", ".join(frame.name(lab) for lab in labels)
            + " — each is best for some trade-off.")


def _describe(row: pd.Series, frame: Frame) -> str:
    return (f"{row['learn']:+.4g} {frame.learn_label} and {row['forget']:+.4g} "
            f"{frame.forget_label} after {int(row['tokens']):,} training tokens")


def recommend(frame: Frame, goal: Goal = "balanced") -> Recommendation:
    """The checkpoint (method label, LR, budget) that best serves ``goal``.

    - ``learn``: the highest final ``learn`` of any checkpoint.
    - ``balanced``: among the Pareto-front checkpoints, the one maximising
      ``learn / L − forget / F``, with L the front's largest learn and F its largest |forget|.
      Normalising both axes makes the choice independent of the units (bits/byte, accuracy
      points) and of whether learning and forgetting are measured in the same units; the
      maximiser is the front point farthest above the chord from the origin to (L, F) — the
      knee of the trade-off. A raw ``learn − forget`` would only be meaningful when both axes
      share a unit, and would then favour whichever axis has the larger spread.
    - ``retain``: among checkpoints whose learn is at least half the best learn, the one that
      forgets least (ties: the one that learns more).

    Diverged and failed runs are never recommended; nothing is recommended when no checkpoint
    improved on the base model."""
    if goal not in GOALS:
        raise ValueError(f"goal must be one of {GOALS}, got {goal!r}")
    note = frontier_note(frame)
    cp = _candidates(frame)
    if cp.empty or cp["learn"].max() <= 0:
        reason = ("no usable measured checkpoint" if cp.empty else
                  f"no checkpoint improved on the base model ({frame.learn_label} ≤ 0)")
        return Recommendation(goal, None, "", None, None, None, None, None, math.nan, math.nan,
                              f"Nothing to recommend: {reason}.", note)
    best_learn = float(cp["learn"].max())
    if goal == "learn":
        row = cp.loc[cp["learn"].idxmax()]
        reason = f"Learns the most: {_describe(row, frame)}."
    elif goal == "balanced":
        front = cp.iloc[pareto_front(list(zip(cp["learn"], cp["forget"], strict=True)))]
        scale_forget = float(front["forget"].abs().max()) or 1.0
        score = front["learn"] / best_learn - front["forget"] / scale_forget
        row = front.loc[score.idxmax()]
        reason = (f"The knee of the learning–forgetting frontier: {_describe(row, frame)} — "
                  f"{row['learn'] / best_learn:.0%} of the best learning for "
                  f"{_pct_of(row['forget'], scale_forget)} of the frontier's largest forgetting.")
    else:
        enough = cp[cp["learn"] >= RETAIN_SHARE * best_learn]
        row = enough.sort_values(["forget", "learn"], ascending=[True, False]).iloc[0]
        reason = (f"Forgets least among checkpoints reaching at least {RETAIN_SHARE:.0%} of the "
                  f"best learning: {_describe(row, frame)}.")
    return Recommendation(
        goal=goal, label=str(row["label"]), name=frame.name(str(row["label"])),
        lr=_opt(row["lr"], float), r=_opt(row["r"], int),
        targets=row["targets"] if isinstance(row["targets"], str) else None,
        run_id=str(row["run_id"]), tokens=float(row["tokens"]), learn=float(row["learn"]),
        forget=float(row["forget"]), reason=reason, frontier_note=note,
        step=int(row["step"]),
        checkpoint=str(row["checkpoint"]) if isinstance(row.get("checkpoint"), str) else None)


def _pct_of(value: float, scale: float) -> str:
    return f"{value / scale:.0%}" if scale > 0 else "none"


def _opt(value: object, cast: type) -> object:
    return cast(value) if value is not None and pd.notna(value) else None
