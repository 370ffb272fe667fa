"""The estimate arithmetic the weight and diversity claims share: a value with its standard
error and degrees of freedom (``Estimate``), and how each kind of estimate gets its error.

- ``mean_estimate``: the mean of one run's per-matrix values, error sd / √n over the matrices,
  n − 1 degrees of freedom (no error below two values).
- ``median_estimate``: the median of one run's per-matrix values, error the spread of
  ``BOOTSTRAP`` medians of the matrices resampled with replacement (seeded with
  ``BOOTSTRAP_SEED`` by the caller, so that a verdict does not change between calls), n − 1
  degrees of freedom.
- ``constant_estimate``: a threshold, exact (error 0).
- ``seed_mean`` / ``over_seeds``: the mean over seeds. Seeds share their items (the same
  matrices, the same prompts), so a seed mean's error is not the runs' errors shrunk by √seeds:
  it is their mean standard error with the between-seed variance sd² / k added (k − 1 degrees
  of freedom), the degrees of freedom combined Welch–Satterthwaite style (``welch_df``).
- ``seed_estimate``: a stored column of a method's final best-LR runs as a ``seed_mean``, each
  run's error read from ``<column>_stderr`` (its error over items), item degrees of freedom from
  the item count.
- ``difference_of``: ``scale``·a − b of two independent estimates, error √(scale²·se_a² + se_b²),
  degrees of freedom Welch–Satterthwaite; the ``Difference`` the verdict rules read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from learnforget.analysis.claim_data import ClaimData
from learnforget.analysis.comparison import Difference, as_float
from learnforget.measure.uncertainty import stderr_name

BOOTSTRAP = 400  # draws over matrices for the standard error of a median
BOOTSTRAP_SEED = 0  # the bootstrap's generator is seeded: a verdict does not change between calls


class Estimate(NamedTuple):
    """A value with its standard error (NaN: no noise estimate), degrees of freedom (∞ when only
    item noise with a known error moves it) and how many seeds it averages."""

    value: float
    se: float
    df: float = math.inf
    seeds: int = 1


def welch_df(components: Sequence[tuple[float, float]]) -> float:
    """Welch–Satterthwaite degrees of freedom of a sum of variance components ``(variance, df)``:
    (Σv)² / Σ(v² / df); ∞ when no component with finite df contributes or the sum is unknown."""
    total = sum(v for v, _ in components)
    tail = sum(v * v / df for v, df in components if v > 0 and math.isfinite(df))
    if not math.isfinite(total) or tail <= 0:
        return math.inf
    return max(total * total / tail, 1.0)


def seed_mean(values: Sequence[float], errors: Sequence[float],
              item_df: float = math.inf) -> Estimate:
    """The mean over seeds of ``values`` (one per seed) whose standard errors over items are
    ``errors``, when the seeds share their items (the same prompts, the same matrices): the item
    part of the error is the mean of the runs' standard errors (the seeds' item errors move
    together; √Σse² / k would shrink as if each seed had items of its own), and with k ≥ 2 seeds
    the between-seed variance sd² / k (k − 1 degrees of freedom) is added, the degrees of freedom
    combined Welch–Satterthwaite style (``item_df`` for the item part). Duplicating a seed leaves
    the error as it is. Conservative: the seeds' spread also holds the item noise they do not
    share. An unknown error (NaN) gives NaN: no noise estimate."""
    pairs = [(as_float(v), as_float(e)) for v, e in zip(values, errors, strict=True)]
    pairs = [(v, e) for v, e in pairs if math.isfinite(v)]
    if not pairs:
        return Estimate(math.nan, math.nan, math.inf, 0)
    k = len(pairs)
    mean = float(np.mean([v for v, _ in pairs]))
    item = float(np.mean([e for _, e in pairs]))
    if k < 2:
        return Estimate(mean, item, item_df, 1)
    between = float(np.var([v for v, _ in pairs], ddof=1)) / k
    se = math.sqrt(item * item + between)
    return Estimate(mean, se, welch_df([(item * item, item_df), (between, k - 1.0)]), k)


def difference_of(a: Estimate, b: Estimate, scale: float = 1.0) -> Difference:
    """``scale``·a − b for independent estimates: error √(scale²·se_a² + se_b²), degrees of
    freedom Welch–Satterthwaite."""
    va, vb = (scale * a.se) ** 2, b.se**2
    return Difference(scale * a.value, b.value, math.sqrt(va + vb),
                      welch_df([(va, a.df), (vb, b.df)]))


def constant_estimate(value: float) -> Estimate:
    """A threshold: a value without error."""
    return Estimate(float(value), 0.0)


def mean_estimate(values: Sequence[float]) -> Estimate:
    """The mean of ``values`` (one per matrix) with its standard error sd / √n and n − 1 degrees
    of freedom (no error below two values)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(math.nan, math.nan)
    if x.size < 2:
        return Estimate(float(x[0]), math.nan)
    return Estimate(float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)), x.size - 1.0)


def median_estimate(values: Sequence[float], rng: np.random.Generator) -> Estimate:
    """The median of ``values`` (one per matrix) with its standard error from ``BOOTSTRAP``
    resamplings of the matrices and n − 1 degrees of freedom (no error below two values)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(math.nan, math.nan)
    if x.size < 2:
        return Estimate(float(x[0]), math.nan)
    draws = np.median(x[rng.integers(0, x.size, size=(BOOTSTRAP, x.size))], axis=1)
    return Estimate(float(np.median(x)), float(draws.std(ddof=1)), x.size - 1.0)


def over_seeds(estimates: Sequence[Estimate]) -> Estimate:
    """``seed_mean`` of per-run estimates (item degrees of freedom: the smallest of theirs)."""
    if not estimates:
        return Estimate(math.nan, math.nan, math.inf, 0)
    return seed_mean([e.value for e in estimates], [e.se for e in estimates],
                     min(e.df for e in estimates))


def seeds_noise(seeds: int) -> str:
    """How seeds enter the errors, in words."""
    if seeds >= 2:
        return (f"seeds: up to {seeds} per method, their spread added to the item error (not "
                "divided by √seeds: the seeds share their items; Student's t on "
                "Welch–Satterthwaite degrees of freedom)")
    return "one seed per run: seed noise unmeasured"


def _final_rows(s: ClaimData, label: str, column: str) -> pd.DataFrame:
    """The rows of ``label``'s usable best-LR runs (one per seed) at its last checkpoint holding
    ``column``."""
    row = s.final(label, column)
    if row is None:
        return pd.DataFrame(columns=[column])
    chosen = s.at_best.checkpoints(label)
    return chosen[chosen["step"] == row["step"]].dropna(subset=[column])


def seed_estimate(s: ClaimData, label: str, column: str, count: str | None = None) -> Estimate:
    """``column`` of ``label`` at its last best-LR checkpoint, averaged over seeds that share
    their items (``seed_mean``), its item error from ``<column>_stderr`` with ``count`` − 1
    degrees of freedom (``count``: the column holding the number of items; ∞ when None)."""
    rows = _final_rows(s, label, column)
    se_column = stderr_name(column)
    errors = rows[se_column] if se_column in rows else [math.nan] * len(rows)
    items = as_float(rows[count].min()) if count and count in rows and len(rows) else math.nan
    return seed_mean(list(rows[column]), list(errors),
                     items - 1.0 if math.isfinite(items) and items > 1 else math.inf)
