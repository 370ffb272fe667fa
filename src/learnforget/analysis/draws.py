"""Noise draws behind every verdict: each checkpoint's learning and forgetting recomputed on
resampled items and resampled seeds, so that any statistic a claim computes (a difference, a
slope, a gap to an interpolated frontier, a spread, a best LR) gets its error by computing it on
every draw.

Why a bootstrap and not formulas: the claims' statistics are mostly not linear in the measured
values (a frontier moves with the learning of its own points, a best LR is an argmax, an LR
sensitivity divides by the best learning), and the noise has two crossed sources — the items
(every checkpoint is scored on the same questions or documents) and the seeds (every run of a
method at one LR is one draw of its training noise). No library offers a bootstrap over a
store's checkpoints with crossed factors, so this module writes one with NumPy, vectorised over
draws.

The rows of every array (``Layout``):

- row 0, the observation;
- the item rows: every task's items resampled with replacement, the same items drawn for every
  checkpoint and for the base model (the joint draw keeps the pairing between checkpoints and
  moves both axes of a learn–forget point at once); seeds averaged as observed;
- per method × LR with two or more seeds, its seed rows: the observed items, that group's seeds
  resampled with replacement and the deviation of their mean inflated by √(k/(k−1)) so that its
  variance is the unbiased s²/k (Davison & Hinkley 1997, §3.3).

A statistic's variance is the item rows' variance plus each seed group's (Owen's "pigeonhole"
bootstrap for crossed factors, which errs on the side of a larger error); its degrees of freedom
follow Welch–Satterthwaite with k − 1 per seed group, so that two seeds give a wide t interval
instead of a confident z one (``Layout.difference``).

Stores without per-item values fall back to their standard errors: a checkpoint's value moves by
``se · z`` with one ``z`` shared by the seeds of a method × LR × step (seeds share items, so
their item noise is not averaged away) and by ``base se · z_base`` shared by all. Without
standard errors the item rows are NaN and every error is unknown: nothing is judged from a point
estimate.

Each method's best LR is chosen on one half of the items and judged on the other, then the other
way round (cross-fitting), so that picking the best of K LRs does not inflate the value the
verdict then reads (the winner's curse); with one LR, or without per-item values, the value is
the plain one (``Draws.best_curve``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from learnforget.analysis.best_lr import contenders, usable
from learnforget.analysis.comparison import Difference
from learnforget.analysis.frame import Frame
from learnforget.measure.uncertainty import BITS, BYTES, stderr_name

ITEM_DRAWS = 400  # item rows: the error of an error of 1/√(2·400) ≈ 3.5%
SEED_DRAWS = 200  # rows per seed group
DRAW_SEED = 20240515  # the draws are seeded: a verdict is the same on every read
COLUMNS = ("learn", "forget")
VARIANTS = ("all", "a", "b")  # every item, the first half, the second half
UNDEFINED_SHARE = 0.1  # a statistic undefined on more draws than this has no error estimate
Mode = Literal["items", "errors", "none"]
GroupKey = tuple[str, float]  # (label, lr)


@dataclass(frozen=True)
class Layout:
    """Which rows of a draw array are which (module docstring), and how a statistic computed on
    every row becomes an estimate with its standard error and degrees of freedom."""

    item_rows: slice
    seed_rows: dict[GroupKey, slice]
    seed_df: dict[GroupKey, int]

    @property
    def rows(self) -> int:
        """How many rows every draw array has."""
        ends = [self.item_rows.stop, *(s.stop for s in self.seed_rows.values())]
        return max(ends)

    def error(self, values: np.ndarray) -> tuple[float, float]:
        """(standard error, degrees of freedom) of the statistic whose value on every row is
        ``values``: item variance plus each seed group's, Welch–Satterthwaite degrees of freedom
        (∞ when no seed group moves it). NaN when the item rows cannot tell (no noise
        estimate) or the statistic is undefined on more than ``UNDEFINED_SHARE`` of the rows
        (a gap to a frontier whose learning range a draw leaves); the rows where it is
        undefined are left out otherwise."""
        values = np.asarray(values, dtype=float)
        if not math.isfinite(values[0]):
            return math.nan, math.inf
        items = values[self.item_rows]
        if items.size < 2 or np.isnan(items).mean() > UNDEFINED_SHARE:
            return math.nan, math.inf
        variance = float(np.nanvar(items, ddof=1))
        seed_parts = []
        for key, rows in self.seed_rows.items():
            seeds = values[rows]
            if np.isnan(seeds).mean() > UNDEFINED_SHARE:
                return math.nan, math.inf
            part = float(np.nanvar(seeds, ddof=1))
            variance += part
            seed_parts.append((part, self.seed_df[key]))
        denominator = sum(part * part / df for part, df in seed_parts)
        df = variance * variance / denominator if denominator > 0 else math.inf
        return math.sqrt(variance), df

    def difference(self, a: np.ndarray, b: np.ndarray | float = 0.0) -> Difference:
        """``a − b`` (each a value per row, or ``b`` a constant) as a ``Difference`` read on
        row 0, with the error of the per-row differences."""
        a = np.asarray(a, dtype=float)
        b_rows = np.broadcast_to(np.asarray(b, dtype=float), a.shape)
        se, df = self.error(a - b_rows)
        return Difference(float(a[0]), float(b_rows[0]), se, df)

    def constant(self, value: float) -> np.ndarray:
        """A value that no noise moves, as a row array."""
        return np.full(self.rows, float(value))


@dataclass
class GroupCurve:
    """One method at one LR, its seeds averaged per step on every row: ``values[column]
    [variant]`` is (rows × steps), NaN where no run of the group reached the step."""

    label: str
    lr: float
    steps: np.ndarray
    tokens: np.ndarray
    seeds: int
    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def last(self, column: str, variant: str = "all") -> np.ndarray:
        """The value per row at the group's last step holding ``column`` (NaN when none)."""
        array = self.values[column][variant]
        observed = np.flatnonzero(~np.isnan(array[0]))
        if not observed.size:
            return np.full(array.shape[0], np.nan)
        return array[:, observed[-1]]

    def at(self, column: str, step: int | None = None, variant: str = "all") -> np.ndarray:
        """The value per row at ``step`` (``last`` when None; NaN when not measured there)."""
        if step is None:
            return self.last(column, variant)
        where = np.flatnonzero(self.steps == step)
        array = self.values[column][variant]
        return array[:, where[0]] if where.size else np.full(array.shape[0], np.nan)


@dataclass
class Draws:
    """Every usable (label, LR) group's curves on every row, the row layout, and how each
    column's noise is known (``modes``: ``items``, ``errors`` or ``none``)."""

    layout: Layout
    groups: dict[GroupKey, GroupCurve]
    modes: dict[str, Mode]
    contenders: frozenset[GroupKey] | None = None
    """The groups that may be their label's best LR (``best_lr.contenders``); None: all."""

    @property
    def halves(self) -> bool:
        """Whether the learning values can be split by item halves (best LRs cross-fitted)."""
        return self.modes["learn"] == "items"

    def lrs(self, label: str) -> list[float]:
        """The usable LRs of ``label`` with a measured value, ascending."""
        return sorted(lr for (lab, lr) in self.groups if lab == label)

    def contending_lrs(self, label: str) -> list[float]:
        """The LRs of ``label`` that may be its best (``best_lr.contenders``: for a sweep cut by
        successive halving, those measured at its last budget), ascending."""
        return [lr for lr in self.lrs(label)
                if self.contenders is None or (label, lr) in self.contenders]

    def plausible_best(self, label: str, alpha: float, lrs: list[float] | None = None
                       ) -> list[float]:
        """The LRs of ``label`` (``lrs``, default its contending LRs) that may be its best: every
        one whose last learning is not below another's beyond noise — one-sided at ``alpha``,
        Bonferroni-corrected over the other LRs (a confidence set for the best LR). Without a
        noise estimate no LR is below another; all of them when none qualifies."""
        lrs = self.contending_lrs(label) if lrs is None else lrs
        last = {lr: self.groups[(label, lr)].last("learn") for lr in lrs}
        level = alpha / max(len(lrs) - 1, 1)
        plausible = [lr for lr in lrs
                     if not any(self.layout.difference(last[lr], last[other]).p_below() <= level
                                for other in lrs if other != lr)]
        return plausible or lrs

    def stopped(self, label: str) -> bool:
        """Whether successive halving cut ``label``'s sweep (an LR that may not be its best)."""
        return len(self.contending_lrs(label)) < len(self.lrs(label))

    def shared_step(self, labels: list[str]) -> int | None:
        """The last step at which every LR of ``labels`` was measured (None when none)."""
        steps = [set(group.steps[~np.isnan(group.values["learn"]["all"][0])].astype(int))
                 for (label, _), group in self.groups.items() if label in labels]
        common = set.intersection(*steps) if steps else set()
        return max(common) if common else None

    def seeds(self, label: str | None = None) -> int:
        """The most seeds any group (of ``label``) has."""
        counts = [g.seeds for (lab, _), g in self.groups.items() if label in (None, lab)]
        return max(counts, default=0)

    def best_index(self, label: str, variant: str = "all") -> np.ndarray:
        """Per row, the index into ``lrs(label)`` of the LR with the most final learning on the
        ``variant`` items (−1 where no LR has a value)."""
        finals = np.stack([self.groups[(label, lr)].last("learn", variant)
                           if self.contenders is None or (label, lr) in self.contenders
                           else np.full(self.layout.rows, np.nan)
                           for lr in self.lrs(label)], axis=1)
        filled = np.where(np.isnan(finals), -np.inf, finals)
        index = np.argmax(filled, axis=1)
        return np.where(np.isneginf(filled.max(axis=1)), -1, index)

    def best_curve(self, label: str, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values rows × steps) of ``label`` at its best LR. With two or more LRs and
        per-item values, cross-fitted: the LR chosen on half A judged on half B and the other
        way round, averaged; otherwise the observed best LR's plain values on every row (the
        winner's curse not corrected: ``Draws.halves`` says which)."""
        lrs = self.lrs(label)
        curves = [self.groups[(label, lr)] for lr in lrs]
        steps = np.unique(np.concatenate([c.steps for c in curves]))
        rows = self.layout.rows

        def stacked(variant: str) -> np.ndarray:  # (rows, LRs, steps) on the union of steps
            out = np.full((rows, len(curves), len(steps)), np.nan)
            for i, curve in enumerate(curves):
                where = np.searchsorted(steps, curve.steps)
                out[:, i, where] = curve.values[column][variant]
            return out

        every = np.arange(rows)
        if len(lrs) < 2 or not self.halves:  # the observed best LR on every row: not corrected
            index = np.full(rows, max(int(self.best_index(label)[0]), 0))
            return steps, stacked("all")[every, index, :]
        has_halves = self.modes[column] == "items"
        judge_a, judge_b = (stacked(v) for v in (("a", "b") if has_halves else ("all", "all")))
        on_a = np.maximum(self.best_index(label, "a"), 0)
        on_b = np.maximum(self.best_index(label, "b"), 0)
        return steps, 0.5 * (judge_b[every, on_a, :] + judge_a[every, on_b, :])

    def best_value(self, label: str, column: str, step: int | None = None) -> np.ndarray:
        """``best_curve`` at ``step`` (its last step observed with a value when None); NaN
        rows when the step is missing."""
        steps, values = self.best_curve(label, column)
        if step is None:
            observed = np.flatnonzero(~np.isnan(values[0]))
            if not observed.size:
                return np.full(values.shape[0], np.nan)
            return values[:, observed[-1]]
        where = np.flatnonzero(steps == step)
        return values[:, where[0]] if where.size else np.full(values.shape[0], np.nan)


# --- building the draws ------------------------------------------------------------------------
def build_draws(frame: Frame, item_draws: int = ITEM_DRAWS, seed_draws: int = SEED_DRAWS,
                seed: int = DRAW_SEED) -> Draws:
    """The draws of ``frame``'s usable checkpoints (module docstring)."""
    rng = np.random.default_rng(seed)
    cp = usable(frame.checkpoints).reset_index(drop=True)
    keys = list(zip(cp["run_id"].astype(str), cp["step"].astype(int), strict=True))
    grouped = cp.groupby(["label", "lr"], sort=True)
    runs_of = {(str(lab), float(lr)): sorted(set(rows["run_id"].astype(str)))
               for (lab, lr), rows in grouped}
    seeded = {key: len(runs) for key, runs in runs_of.items() if len(runs) >= 2}
    start = 1 + item_draws
    seed_rows, seed_df = {}, {}
    for key, k in seeded.items():
        seed_rows[key] = slice(start, start + seed_draws)
        seed_df[key] = k - 1
        start += seed_draws
    layout = Layout(slice(1, 1 + item_draws), seed_rows, seed_df)
    per_checkpoint, modes = {}, {}
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for column in COLUMNS:
        values, mode = _checkpoint_draws(frame, cp, keys, column, item_draws, rng, weights)
        per_checkpoint[column], modes[column] = values, mode
    index = {key: i for i, key in enumerate(keys)}
    groups = {}
    for (label, lr), rows in grouped:
        key = (str(label), float(lr))
        steps = np.array(sorted(set(rows["step"].astype(int))))
        tokens = rows.groupby("step")["tokens"].max().reindex(steps).to_numpy(dtype=float)
        curve = GroupCurve(key[0], key[1], steps, tokens, len(runs_of[key]))
        for column in COLUMNS:
            curve.values[column] = {
                variant: _seed_means(per_checkpoint[column][variant], index, runs_of[key], steps,
                                     layout, key, rng)
                for variant in VARIANTS}
        groups[key] = curve
    return Draws(layout, groups, modes, frozenset(contenders(frame)))


def _checkpoint_draws(frame: Frame, cp: pd.DataFrame, keys: list[tuple[str, int]], column: str,
                      item_draws: int, rng: np.random.Generator,
                      weights: dict[str, tuple[np.ndarray, np.ndarray]]
                      ) -> tuple[dict[str, np.ndarray], Mode]:
    """{variant: (1 + item_draws) × checkpoints} of ``column`` and how its noise is known."""
    observed = cp[column].to_numpy(dtype=float) if column in cp else np.full(len(cp), np.nan)
    item_values = _item_draws(frame, keys, column, item_draws, rng, weights)
    if item_values is not None:
        return item_values, "items"
    out = np.tile(observed, (1 + item_draws, 1)).copy()  # writable even when empty
    stderr_column = stderr_name(column)
    se = cp[stderr_column].to_numpy(dtype=float) if stderr_column in cp else observed * np.nan
    if len(cp) and np.isfinite(se).all():
        base_se = float(frame.base.get(stderr_column, math.nan))
        base_se = base_se if math.isfinite(base_se) else 0.0
        shared = list(zip(cp["label"], cp["lr"].astype(float), cp["step"].astype(int),
                          strict=True))
        codes = pd.factorize(pd.Series(shared, dtype=object))[0]
        z = rng.standard_normal((item_draws, codes.max() + 1))
        z_base = rng.standard_normal((item_draws, 1))
        out[1:] += se[None, :] * z[:, codes] - base_se * z_base
        mode: Mode = "errors"
    else:
        out[1:] = np.nan
        mode = "none"
    return {variant: out for variant in VARIANTS}, mode


def _item_draws(frame: Frame, keys: list[tuple[str, int]], column: str, item_draws: int,
                rng: np.random.Generator, weights: dict[str, tuple[np.ndarray, np.ndarray]]
                ) -> dict[str, np.ndarray] | None:
    """``column`` recomputed on resampled items for every checkpoint (None when a checkpoint or
    the base model lacks per-item values of a task the column reads, or their items differ)."""
    parts = frame.parts(column)
    base_id = frame.base.get("run_id")
    if not parts or not keys or base_id is None:
        return None
    sign = 1.0 if column == "learn" else -1.0
    total = {variant: np.zeros((1 + item_draws, len(keys))) for variant in VARIANTS}
    for orientation, weight in parts:
        task = orientation.task
        records = [frame.items.get(key, {}).get(task) for key in [*keys, (str(base_id), 0)]]
        if any(record is None for record in records):
            return None
        metric = BITS if orientation.metric == "bpb" else orientation.metric
        try:
            matrix = np.array([record[metric] for record in records], dtype=float)
        except (KeyError, ValueError):
            return None
        if matrix.ndim != 2 or matrix.shape[1] < 2:
            return None
        n = matrix.shape[1]
        if orientation.metric == "bpb":
            sizes = [record.get(BYTES) for record in records]
            if any(s is None or len(s) != n for s in sizes) or not all(
                    np.array_equal(s, sizes[0]) for s in sizes):
                return None
            denominator = np.asarray(sizes[0], dtype=float)
        else:
            denominator = np.ones(n)
        if task not in weights or weights[task][0].shape[1] != n:
            picks = rng.integers(0, n, size=(item_draws, n)) + n * np.arange(item_draws)[:, None]
            counts = np.bincount(picks.ravel(), minlength=item_draws * n).reshape(item_draws, n)
            draws = np.vstack([np.ones((1, n)), counts])
            half = np.zeros(n)
            half[rng.permutation(n)[: n // 2]] = 1.0
            weights[task] = (draws.astype(float), half)
        draws, half = weights[task]
        for variant, mask in (("all", 1.0), ("a", half), ("b", 1.0 - half)):
            w = draws * mask
            with np.errstate(invalid="ignore", divide="ignore"):
                values = (w @ matrix.T) / (w @ denominator)[:, None]
            change = values[:, :-1] - values[:, -1:]
            oriented = change if orientation.higher_is_better else -change
            total[variant] += sign * weight * oriented
    return total


def _seed_means(values: np.ndarray, index: dict[tuple[str, int], int], runs: list[str],
                steps: np.ndarray, layout: Layout, key: GroupKey,
                rng: np.random.Generator) -> np.ndarray:
    """rows × steps: the group's seeds averaged per step — on row 0 and the item rows as
    observed, on the group's own seed rows resampled (inflated, module docstring), on other
    groups' seed rows the observation."""
    k = len(runs)
    stacked = np.full((values.shape[0], k, len(steps)), np.nan)
    for j, run in enumerate(runs):
        for s, step in enumerate(steps):
            i = index.get((run, int(step)))
            if i is not None:
                stacked[:, j, s] = values[:, i]
    with warnings.catch_warnings():  # a step no seed reached stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(stacked, axis=1) if k > 1 else stacked[:, 0, :]
    out = np.empty((layout.rows, len(steps)))
    out[: values.shape[0]] = mean
    out[values.shape[0]:] = mean[0]
    if key in layout.seed_rows:
        rows = layout.seed_rows[key]
        count = rows.stop - rows.start
        picks = rng.multinomial(k, np.full(k, 1.0 / k), size=count).astype(float)
        observed = stacked[0]  # k × steps
        present = ~np.isnan(observed)
        numerator = picks @ np.where(present, observed, 0.0)
        denominator = picks @ present.astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            resampled = numerator / denominator
        resampled = np.where(denominator > 0, resampled, mean[0][None, :])
        out[rows] = mean[0][None, :] + math.sqrt(k / (k - 1)) * (resampled - mean[0][None, :])
    return out

