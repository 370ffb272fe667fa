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

Per-item values (``ItemValues``) are kept beside the scores, so that two checkpoints scored on
the same items can be compared item by item (a paired difference, whose standard error is far
smaller than √(se_a² + se_b²) when the items' difficulty varies): ``{metric: [value per item]}``
for a mean (``acc``, ``exact_match_strict``, ``pass@1``) and ``{"bits": [...], "bytes": [...]}``
for bits per byte (``BITS``, ``BYTES``). The runner stores them as artifacts of kind
``items:<task>`` (``items_kind``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

STDERR_SUFFIX = "_stderr"
COUNT_METRIC = "n"
DELTA_SUFFIX = "_delta"
BITS, BYTES = "bits", "bytes"  # per-item values behind bits per byte
ITEMS_KIND_PREFIX = "items:"

ItemValues = dict[str, list[float]]


def items_kind(task: str) -> str:
    """The artifact kind under which ``task``'s per-item values are stored: ``items:<task>``."""
    return ITEMS_KIND_PREFIX + task


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


def combination_stderr(sides: Sequence[ItemValues], coefficients: Sequence[float],
                       metric: str) -> float:
    """The standard error of ``Σ coefficient_k · metric(side_k)`` when every side was scored on
    the same items (in the same order): the standard error of the per-item combinations — of
    their mean for a mean metric, of the ratio Σ(Σ_k c_k · bits_k) / Σbytes for bits per byte
    (``metric`` "bpb"). NaN when a side lacks the values or the items do not match."""
    if len(sides) != len(coefficients) or not sides:
        raise ValueError(f"{len(sides)} sides for {len(coefficients)} coefficients")
    key = BITS if metric == "bpb" else metric
    columns = [side.get(key) for side in sides]
    if any(c is None for c in columns) or len({len(c) for c in columns}) != 1:
        return math.nan
    combined = [sum(c * float(v) for c, v in zip(coefficients, values, strict=True))
                for values in zip(*columns, strict=True)]
    if metric != "bpb":
        return mean_stderr(combined)
    if sides[0].get(BYTES) is None or any(side.get(BYTES) != sides[0].get(BYTES)
                                          for side in sides):
        return math.nan
    return ratio_stderr(combined, sides[0][BYTES])


def paired_stderr(a: ItemValues, b: ItemValues, metric: str) -> float:
    """The standard error of ``metric(a) − metric(b)`` when both were scored on the same items
    (in the same order): the standard error of the per-item differences — of their mean for a
    mean metric, of the ratio Σ(bits_a − bits_b) / Σbytes for bits per byte (``metric`` "bpb").
    NaN when either side lacks the values or the items do not match."""
    return combination_stderr([a, b], [1.0, -1.0], metric)


def average_items(sides: Sequence[ItemValues]) -> ItemValues:
    """Per-item values averaged over several runs scored on the same items (seeds of one
    method): each item's mean; keys missing from any run, or of another length, are dropped."""
    if not sides:
        return {}
    shared = set(sides[0]).intersection(*sides[1:])
    averaged: ItemValues = {}
    for key in sorted(shared):
        columns = [side[key] for side in sides]
        if len({len(c) for c in columns}) == 1:
            averaged[key] = [sum(float(v) for v in values) / len(values)
                             for values in zip(*columns, strict=True)]
    return averaged


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
