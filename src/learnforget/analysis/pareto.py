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


def frontier_weights(learn: float, front: Sequence[Point]) -> list[tuple[int, float]]:
    """The frontier polyline ``front`` at ``learn`` as a weighted sum of its points (linear
    interpolation between the two around it): ``(index into front, weight)`` pairs whose weights
    sum to 1; empty when ``learn`` is not finite or outside the frontier's learning range."""
    if not front or not _finite((learn, 0.0)):
        return []
    order = sorted(range(len(front)), key=lambda i: front[i][0])
    if learn < front[order[0]][0] or learn > front[order[-1]][0]:
        return []
    for i0, i1 in zip(order, order[1:], strict=False):
        x0, x1 = front[i0][0], front[i1][0]
        if x0 <= learn <= x1:
            t = 0.0 if x1 == x0 else (learn - x0) / (x1 - x0)
            return [(i0, 1.0 - t), (i1, t)]
    return [(order[0], 1.0)]  # a one-point frontier at exactly this learning


def distance_to_front(point: Point, front: Sequence[Point]) -> float:
    """Vertical gap in forgetting between ``point`` and the frontier polyline ``front`` at the
    same learning (linear interpolation between frontier points, ``frontier_weights``): positive
    = the point forgets more than the frontier would at equal learning, negative = it lies below
    (beyond) it.

    NaN when the point's learning lies outside the frontier's learning range (no
    extrapolation) or a coordinate is not finite. Include the base model's ``(0, 0)`` in the
    frontier to cover learning from zero."""
    weights = frontier_weights(point[0], front) if _finite(point) else []
    if not weights:
        return math.nan
    return point[1] - sum(weight * front[i][1] for i, weight in weights)
