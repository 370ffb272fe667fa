"""Successive halving over each method's LR sweep: which runs go on at a rung.

Every LR of a method trains to the first budget; at each budget but the last (a *rung*,
``rungs``) the rule decides per method label, on the learning measured at the rung
(``rung_decisions``):

- the LRs among the best ⌈n/η⌉ by learning (seeds averaged) go on;
- any other LR that may be the best goes on too: it stops only when it is below another LR
  beyond noise — the confidence set for the best LR that claim 5 reads
  (``Draws.plausible_best``: one-sided, Bonferroni-corrected over every ordered pair of the
  method's LRs so that a tied LR is stopped in at most 5% of rungs, on the verdict engine's
  noise draws: items resampled jointly for every checkpoint and
  the base model, seeds resampled); never on noise, never without a noise estimate. (Testing
  each LR against the observed best alone stopped a tied LR in 20% of null replicates: the best
  is the largest of several noisy values.)
- an LR whose runs diverged (status ``diverged`` or no finite learning at the rung) stops.

``n`` counts the LRs measured at the rung (diverged ones excluded). A run stopped by the rule
keeps its checkpoints and gets the status ``stopped early``. The replay of a finished grid store
under this rule is in ``learnforget.analysis.halving_replay``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from learnforget.analysis.comparison import Difference
from learnforget.analysis.draws import Draws, build_draws
from learnforget.analysis.frame import Frame
from learnforget.analysis.verdicts import ALPHA
from learnforget.store import STOPPED_EARLY

DIVERGED = "diverged"
ETA = 3


@dataclass(frozen=True)
class RungDecision:
    """Whether one method × LR (all its seeds) goes on past a rung, and why."""

    label: str
    lr: float
    run_ids: tuple[str, ...]
    learn: float
    goes_on: bool
    reason: str


def rungs(checkpoint_steps: list[int]) -> list[int]:
    """The rungs of a schedule: every checkpoint step but the last."""
    return sorted({int(step) for step in checkpoint_steps})[:-1]


def kept_count(n: int, eta: int = ETA) -> int:
    """How many of ``n`` LRs go on by rank alone: ⌈n/η⌉ (0 for none)."""
    if eta < 2:
        raise ValueError(f"eta must be at least 2, got {eta}")
    return math.ceil(n / eta) if n > 0 else 0


def rung_decisions(frame: Frame, step: int, eta: int = ETA) -> list[RungDecision]:
    """At the rung ``step`` (a checkpoint step every still-running LR of a method has
    reached), per method label: the LRs among the best ceil(n/eta) by learning, or not below
    another LR beyond noise (``Draws.plausible_best``), go on; diverged runs stop; the others
    stop."""
    step = int(step)
    cp = frame.checkpoints
    at_rung = cp[cp["step"].astype(int) == step] if not cp.empty else cp
    runs = frame.runs
    diverged_runs = runs[runs["status"].eq(DIVERGED)] if not runs.empty else runs
    draws = build_draws(_rung_frame(frame, step)) if not at_rung.empty else None
    decisions: list[RungDecision] = []
    for label in frame.labels:
        decisions += _label_decisions(label, at_rung[at_rung["label"] == label],
                                      diverged_runs[diverged_runs["label"] == label],
                                      draws, step, eta)
    return decisions


def _rung_frame(frame: Frame, step: int) -> Frame:
    """``frame`` with the checkpoints measured at ``step`` only (the draws of the rung)."""
    cp = frame.checkpoints
    return Frame(cp[cp["step"].astype(int) == step].reset_index(drop=True), frame.train,
                 frame.runs, frame.base, frame.study, frame.learning, frame.forgetting,
                 frame.learn_label, frame.forget_label, frame.forget_mean_tasks, frame.items)


def _label_decisions(label: str, rows: pd.DataFrame, diverged_runs: pd.DataFrame,
                     draws: Draws | None, step: int, eta: int) -> list[RungDecision]:
    """The decisions of one label's LRs at the rung (``rows``: its checkpoints at ``step``)."""
    measured = rows[~rows["status"].eq(DIVERGED)] if not rows.empty else rows
    learn = measured.groupby("lr")["learn"].mean() if not measured.empty else pd.Series(
        dtype=float)
    run_ids: dict[float, set[str]] = {}
    for frame_rows in (rows, diverged_runs):
        for lr, run_id in zip(frame_rows["lr"].astype(float), frame_rows["run_id"].astype(str),
                              strict=True):
            run_ids.setdefault(lr, set()).add(run_id)
    alive = {float(lr): float(value) for lr, value in learn.items() if math.isfinite(value)}
    ranked = sorted(alive, key=lambda lr: (-alive[lr], lr))
    top = set(ranked[:kept_count(len(ranked), eta)])
    best = ranked[0] if ranked else None
    # an LR stops only when it is below another beyond noise, the test claim 5's confidence set
    # for the best LR makes; here at a level that bounds the chance of stopping any tied LR of
    # the method at this rung by 2·ALPHA (5%): one-sided 2·ALPHA / (n(n−1)) per ordered pair
    in_draws = [lr for lr in ranked if draws is not None and (label, lr) in draws.groups]
    plausible = set(draws.plausible_best(label, 2 * ALPHA / len(in_draws), sorted(in_draws))
                    ) if in_draws else set()
    plausible |= set(ranked) - set(in_draws)  # no noise estimate: never stopped on learning
    decisions = []
    for lr in sorted(run_ids):
        ids = tuple(sorted(run_ids[lr]))
        if lr not in alive:
            decisions.append(RungDecision(label, lr, ids, math.nan, False, DIVERGED))
            continue
        if lr in top:
            rank = ranked.index(lr) + 1
            decisions.append(RungDecision(
                label, lr, ids, alive[lr], True,
                f"among the best {len(top)} of {len(ranked)} (rank {rank})"))
            continue
        gap = _gap(draws, label, best, lr, step)
        behind = lr not in plausible
        shown = Difference(gap.b, gap.a, gap.se, gap.df).text()  # it − best, as displayed
        if behind:
            reason = f"behind the best beyond noise ({shown})"
        elif not math.isfinite(gap.se):
            reason = f"no noise estimate: not stopped on learning ({shown} from the best)"
        else:
            reason = f"within noise of the best ({shown})"
        decisions.append(RungDecision(label, lr, ids, alive[lr], not behind, reason))
    return decisions


def _gap(draws: Draws | None, label: str, best: float | None, lr: float,
         step: int) -> Difference:
    """The best LR's learning minus ``lr``'s at the rung, with the draws' error (NaN error
    when either group is missing from the draws)."""
    if draws is None or best is None:
        return Difference(math.nan, math.nan, math.nan)
    groups = [draws.groups.get((label, float(key))) for key in (best, lr)]
    if any(group is None for group in groups):
        return Difference(math.nan, math.nan, math.nan)
    values = []
    for group in groups:
        where = np.flatnonzero(group.steps == step)
        values.append(group.values["learn"]["all"][:, where[0]] if where.size
                      else np.full(draws.layout.rows, np.nan))
    return draws.layout.difference(values[0], values[1])


# --- what a search trained ------------------------------------------------------------------
@dataclass(frozen=True)
class SearchSummary:
    """Which search a study ran and the training tokens it spent: ``tokens`` (each run's last
    checkpoint, summed) against ``grid_tokens`` (every run to the last budget)."""

    search: str
    eta: int | None
    tokens: int
    grid_tokens: int
    stopped: int

    @property
    def share(self) -> float:
        """``tokens`` / ``grid_tokens`` (NaN when the grid trains nothing)."""
        return self.tokens / self.grid_tokens if self.grid_tokens else math.nan

    def text(self) -> str:
        """One line: 'grid: every LR trained to the last budget' or 'successive halving
        (η = 3): 58% of the grid's training tokens (…); 5 runs stopped early'."""
        if self.search != "halving":
            return "grid: every LR trained to the last budget"
        eta = f" (η = {self.eta})" if self.eta is not None else ""
        return (f"successive halving{eta}: {self.share:.0%} of the grid's training tokens "
                f"({self.tokens:,} of {self.grid_tokens:,}); {self.stopped} run"
                f"{'' if self.stopped == 1 else 's'} stopped early")


def training_tokens(frame: Frame) -> tuple[int, int]:
    """(tokens at each run's last checkpoint, summed; the number of runs × the tokens of the
    last budget): what the study trained against what the grid trains."""
    cp = frame.checkpoints
    if cp.empty:
        return 0, 0
    last = cp.groupby("run_id")["tokens"].max()
    return int(last.sum()), int(len(frame.runs) * cp["tokens"].max())


def search_summary(frame: Frame) -> SearchSummary:
    """The study's search (its ``search`` setting; ``halving`` for a store holding runs stopped
    early, ``grid`` otherwise), its η and the training tokens it spent (``training_tokens``)."""
    stopped = int(frame.runs["status"].eq(STOPPED_EARLY).sum()) if not frame.runs.empty else 0
    search = getattr(frame.study, "search", None) or ("halving" if stopped else "grid")
    eta = getattr(frame.study, "eta", None) if search == "halving" else None
    tokens, grid_tokens = training_tokens(frame)
    return SearchSummary(str(search), eta, tokens, grid_tokens, stopped)
