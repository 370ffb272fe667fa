"""Paired standard errors: two checkpoints scored on the same items, compared item by item.

When learning or forgetting of two checkpoints is compared, both were scored on the same
questions, passages or problems. The error of their difference is then the standard error of the
per-item differences (``measure.uncertainty.paired_stderr``), which removes the variation of item
difficulty that both share: on 50 code files whose bits per byte range from 0.5 to 3, two models
can differ clearly while each value alone carries ± 0.1. √(se_a² + se_b²) (``uncertainty.
difference``) ignores that pairing and is kept only as the fallback for stores without per-item
values.

A derived column is a weighted sum of task metrics (``Frame.parts``: one metric for ``learn``,
the mean of k accuracy drops for ``forget``); tasks use disjoint items, so the variance of the
difference is Σ weight² · paired variance of each metric. Several seeds of one method are averaged
per item first (``average_items``), as their values are averaged in the curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from learnforget.analysis.frame import Frame
from learnforget.measure.uncertainty import average_items, combination_stderr

Checkpoint = tuple[str, int]  # (run_id, step)


def combination_se(frame: Frame, terms: Sequence[tuple[Sequence[Checkpoint], float]],
                   column: str) -> float:
    """The standard error of ``Σ coefficient · column(checkpoints)`` over ``terms`` (each term's
    checkpoints averaged, e.g. seeds), paired over items: e.g. a checkpoint's gap to a frontier
    interpolated between two others. The coefficients must sum to 0, so the base model's part
    of ``learn`` / ``forget`` cancels. NaN when a term lacks per-item values of a task the
    column reads, or the items differ."""
    parts = frame.parts(column)
    if not parts or not terms or any(not checkpoints for checkpoints, _ in terms):
        return math.nan
    coefficients = [coefficient for _, coefficient in terms]
    variance = 0.0
    for orientation, weight in parts:
        sides = []
        for checkpoints, _ in terms:
            values = [frame.items.get(key, {}).get(orientation.task) for key in checkpoints]
            if any(v is None for v in values):
                return math.nan
            sides.append(average_items(values))
        se = combination_stderr(sides, coefficients, orientation.metric)
        if not math.isfinite(se):
            return math.nan
        variance += (weight * se) ** 2
    return math.sqrt(variance)


def paired_se(frame: Frame, a: Sequence[Checkpoint], b: Sequence[Checkpoint],
              column: str) -> float:
    """The standard error of ``column`` (``learn`` / ``forget``) of checkpoints ``a`` minus that
    of checkpoints ``b`` (each side the mean over its runs, e.g. seeds), paired over items. NaN
    when any side lacks per-item values of a task the column reads, or the items differ."""
    return combination_se(frame, [(a, 1.0), (b, -1.0)], column)
