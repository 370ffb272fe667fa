"""How sure a comparison is: the standard error of a difference, a three-way comparison (clearly
above, clearly below, or within noise) and what it would take to resolve a difference.

Every accuracy-type value in the store carries ``<metric>_stderr`` (lm-eval's sample standard
deviation / √n) and bits per byte a standard error over documents. Two checkpoints scored on the
same items are compared paired, item by item (``learnforget.analysis.paired``); ``difference``
here takes the standard error √(se_a² + se_b²) of independent values, the fallback when per-item
values are not stored (it errs towards calling a difference unresolved). A difference is
resolved when it exceeds ``Z`` standard errors (95% two-sided).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Z = 1.96  # a difference is resolved beyond Z standard errors (95%, two-sided)
Comparison = Literal["above", "below", "equal", "within noise", "no estimate"]


def diff_se(*errors: float) -> float:
    """The standard error of a sum or difference of independent values: √Σse² (NaN when any
    error is unknown)."""
    values = [as_float(e) for e in errors]
    if not values or any(not math.isfinite(v) for v in values):
        return math.nan
    return math.sqrt(sum(v * v for v in values))


def as_float(value: object) -> float:
    """``value`` as a float; NaN for None, pandas' NA and anything not numeric."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True)
class Difference:
    """``a − b`` with its standard error and the three-way reading of it."""

    a: float
    b: float
    se: float

    @property
    def value(self) -> float:
        """a − b."""
        return self.a - self.b

    @property
    def comparison(self) -> Comparison:
        """``above`` / ``below`` when |a − b| ≥ Z·se, ``within noise`` otherwise,
        ``no estimate`` when the standard error is unknown, ``equal`` when a and b are the same
        (two models that score every item alike: a difference of exactly 0 ± 0)."""
        if self.value == 0 and self.se == 0:
            return "equal"
        if not math.isfinite(self.se):
            return "no estimate"
        if abs(self.value) < Z * self.se:
            return "within noise"
        return "above" if self.value > 0 else "below"

    def exceeds(self, strict: bool = True) -> bool | None:
        """Whether a is above b: True / False when the difference is resolved, None when it lies
        within noise. Without an error estimate the plain comparison decides (``strict``: a > b,
        otherwise a ≥ b)."""
        reading = self.comparison
        if reading in ("no estimate", "equal"):
            return self.a > self.b if strict else self.a >= self.b
        if reading == "within noise":
            return None
        return reading == "above"

    def text(self) -> str:
        """``+0.031 ± 0.012`` (the ± is Z standard errors) or the bare difference."""
        if not math.isfinite(self.se):
            return f"{self.value:+.3g}"
        return f"{self.value:+.3g} ± {Z * self.se:.2g}"

    def items_to_resolve(self, n: int | float) -> float:
        """Roughly how many items (now ``n``) would resolve this difference if it is real:
        n·(Z·se / |a − b|)², since the standard error shrinks as 1/√n."""
        if not math.isfinite(self.se) or self.value == 0 or not n:
            return math.inf
        return float(n) * (Z * self.se / abs(self.value)) ** 2


def difference(a: float, se_a: float, b: float, se_b: float) -> Difference:
    """``a − b`` with the standard error √(se_a² + se_b²)."""
    return Difference(as_float(a), as_float(b), diff_se(se_a, se_b))
