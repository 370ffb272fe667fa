"""How sure a comparison is: the standard error of a difference, a three-way comparison (clearly
above, clearly below, or within noise) and what it would take to resolve a difference.

Every accuracy-type value in the store carries ``<metric>_stderr`` (lm-eval's sample standard
deviation / √n) and bits per byte a standard error over documents. The claims read their
differences through the noise draws of ``learnforget.analysis.draws`` (items resampled jointly,
seeds resampled), which give each ``Difference`` its standard error and degrees of freedom;
``difference`` here takes √(se_a² + se_b²) of independent values (diversity, tables). A
difference is resolved when it exceeds its critical value: ``Z`` standard errors (95%
two-sided), or Student's t when seeds give it finite degrees of freedom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from scipy import stats

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


def critical(df: float) -> float:
    """The two-sided 95% critical value for ``df`` degrees of freedom: ``Z`` when infinite,
    Student's t otherwise (two seeds give few degrees of freedom and a wide interval)."""
    if not math.isfinite(df):
        return Z
    return float(stats.t.ppf(0.975, max(df, 1.0)))


@dataclass(frozen=True)
class Difference:
    """``a − b`` with its standard error, its degrees of freedom (∞ when only item noise moves
    it; finite when seeds do) and the three-way reading of it."""

    a: float
    b: float
    se: float
    df: float = math.inf

    @property
    def critical(self) -> float:
        """How many standard errors resolve the difference (``critical(df)``)."""
        return critical(self.df)

    def p_below(self) -> float:
        """The one-sided p-value of a − b ≤ 0 against a − b > 0 reversed: how likely a value
        this far below 0 is if a − b were 0 (NaN without an error estimate)."""
        if not math.isfinite(self.se) or self.se <= 0:
            return math.nan
        t = self.value / self.se
        return float(stats.norm.cdf(t) if not math.isfinite(self.df)
                     else stats.t.cdf(t, max(self.df, 1.0)))

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
        if abs(self.value) < self.critical * self.se:
            return "within noise"
        return "above" if self.value > 0 else "below"

    def exceeds(self, strict: bool = True) -> bool | None:
        """Whether a is above b: True / False when the difference is resolved beyond its critical
        value, None when it lies within noise or has no error estimate (nothing is judged from a
        point estimate). An exact tie 0 ± 0 (every item scored alike) is a ≥ b, not a > b
        (``strict``)."""
        reading = self.comparison
        if reading == "equal":
            return not strict
        if reading in ("within noise", "no estimate"):
            return None
        return reading == "above"

    def text(self) -> str:
        """``+0.031 ± 0.012`` (the ± is the critical value × the standard error: Z, or
        Student's t when seeds give few degrees of freedom) or the bare difference."""
        if not math.isfinite(self.se):
            return f"{self.value:+.3g}"
        return f"{self.value:+.3g} ± {self.critical * self.se:.2g}"

    def items_to_resolve(self, n: int | float) -> float:
        """Roughly how many items (now ``n``) would resolve this difference if it is real:
        n·(Z·se / |a − b|)², since the standard error shrinks as 1/√n."""
        if not math.isfinite(self.se) or self.value == 0 or not n:
            return math.inf
        return float(n) * (self.critical * self.se / abs(self.value)) ** 2


def difference(a: float, se_a: float, b: float, se_b: float) -> Difference:
    """``a − b`` with the standard error √(se_a² + se_b²)."""
    return Difference(as_float(a), as_float(b), diff_se(se_a, se_b))
