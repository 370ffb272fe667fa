"""The learning–forgetting Pareto frontier.

Points are ``(learn, forget)`` pairs: higher learn is better, lower forget is better. A point is
on the frontier when no other point learns at least as much while forgetting at most as much
(and is strictly better in one of the two). The frontier, sorted by learning, rises: each step
right (more learning) costs more forgetting.

Written by hand because it is a dozen lines on a sort; the libraries that offer it (pymoo,
paretoset) would be a heavy dependency for this.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[float, float]


def _finite(point: Point) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in point)
    except (TypeError, ValueError):
        return False


def pareto_front(points: Sequence[Point]) -> list[int]:
    """Indices (ascending) of the non-dominated points: more learn, less forget. Points with a
    NaN or infinite coordinate are never on the front; of exact duplicates only the first is."""
    order = sorted((i for i, p in enumerate(points) if _finite(p)),
                   key=lambda i: (-points[i][0], points[i][1], i))
    front: list[int] = []
    best_forget = math.inf
    # walking from most to least learning, a point is on the front when it forgets strictly
    # less than every point that learns at least as much
    for i in order:
        if points[i][1] < best_forget:
            front.append(i)
            best_forget = points[i][1]
    return sorted(front)


def frontier(points: Sequence[Point]) -> list[Point]:
    """The frontier as a polyline: its points sorted by learning (ascending)."""
    return sorted((points[i] for i in pareto_front(points)), key=lambda p: p[0])


def distance_to_front(point: Point, front: Sequence[Point]) -> float:
    """Vertical gap in forgetting between ``point`` and the frontier polyline ``front`` at the
    same learning (linear interpolation between frontier points): positive = the point forgets
    more than the frontier would at equal learning, negative = it lies below (beyond) it.

    NaN when the point's learning lies outside the frontier's learning range (no
    extrapolation) or a coordinate is not finite. Include the base model's ``(0, 0)`` in the
    frontier to cover learning from zero."""
    if not _finite(point) or not front:
        return math.nan
    line = sorted(front, key=lambda p: p[0])
    learn, forget = point
    if learn < line[0][0] or learn > line[-1][0]:
        return math.nan
    for (x0, y0), (x1, y1) in zip(line, line[1:], strict=False):
        if x0 <= learn <= x1:
            at = y0 if x1 == x0 else y0 + (y1 - y0) * (learn - x0) / (x1 - x0)
            return forget - at
    return forget - line[0][1]  # a one-point frontier at exactly this learning
