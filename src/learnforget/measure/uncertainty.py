"""Standard errors of the scores, computed from per-item values.

- A mean of per-item values (accuracy, exact match, per-problem pass@k): the standard error of
  the mean, ``sample standard deviation (ddof=1) / sqrt(n)`` — lm-evaluation-harness's
  ``mean_stderr`` (``lm_eval/api/metrics.py``: ``sample_stddev(arr) / sqrt(len(arr))``), which it
  reports as ``acc_stderr`` / ``exact_match_stderr``.
- A ratio of sums (bits per byte = Σ bits / Σ bytes over documents): the delta-method standard
  error of a ratio estimator over documents,
  ``sqrt(Σ (b_i − R·y_i)² / (n (n − 1))) / ȳ`` with ``b_i`` the bits and ``y_i`` the bytes of
  document ``i``, ``R`` the ratio and ``ȳ`` the mean bytes per document.

With fewer than two items there is no spread to estimate: the standard error is NaN (stored as
NULL; lm-eval prints "N/A").

Metric names: a metric ``m`` has its standard error in ``m_stderr`` (``STDERR_SUFFIX``) and its
task's item count in the metric ``n`` (``COUNT_METRIC``); neither gets a ``_delta`` from the
base model (``has_delta``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

STDERR_SUFFIX = "_stderr"
COUNT_METRIC = "n"
DELTA_SUFFIX = "_delta"


def stderr_name(metric: str) -> str:
    """The name under which ``metric``'s standard error is reported: ``<metric>_stderr``."""
    return metric + STDERR_SUFFIX


def has_delta(metric: str) -> bool:
    """Whether a change from the base model is recorded for ``metric``: not for standard errors,
    item counts, or changes themselves."""
    return not (metric.endswith(STDERR_SUFFIX) or metric.endswith(DELTA_SUFFIX)
                or metric == COUNT_METRIC)


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean of ``values``: sample std (ddof=1) / sqrt(n), as lm-eval's
    ``mean_stderr``; NaN for fewer than two values."""
    n = len(values)
    if n < 2:
        return math.nan
    mu = sum(values) / n
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def ratio_stderr(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Delta-method standard error of ``R = Σ numerators / Σ denominators`` over items:
    ``sqrt(Σ (b_i − R·y_i)² / (n (n − 1))) / ȳ``; NaN for fewer than two items."""
    n = len(numerators)
    if n != len(denominators):
        raise ValueError(f"{n} numerators for {len(denominators)} denominators")
    total = sum(denominators)
    if n < 2 or total == 0:
        return math.nan
    ratio = sum(numerators) / total
    residuals = sum((b - ratio * y) ** 2 for b, y in zip(numerators, denominators, strict=True))
    return math.sqrt(residuals / (n * (n - 1))) / (total / n)


def mean_with_stderr(per_item: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """``{metric: mean, metric_stderr: its standard error}`` for each metric's per-item values
    (booleans count as 0/1); the mean is ``sum / n``."""
    scores: dict[str, float] = {}
    for metric, values in per_item.items():
        if not values:
            raise ValueError(f"no items to average for {metric}")
        numbers = [float(v) for v in values]
        scores[metric] = sum(values) / len(values)
        scores[stderr_name(metric)] = mean_stderr(numbers)
    return scores
