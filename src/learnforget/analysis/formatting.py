"""How the claims write their numbers: three significant digits, token counts, and how a
comparison reads against its noise."""

from __future__ import annotations

import math

from learnforget.analysis.comparison import Difference


def fmt(value: float) -> str:
    """Three significant digits; ``—`` for NaN."""
    return f"{value:.3g}" if math.isfinite(value) else "—"


def fmt_tokens(value: float) -> str:
    """A token count: 295k, 1.2M, 20B."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def reading(diff: Difference) -> str:
    """How a comparison reads: beyond noise for, within noise, or beyond noise against."""
    result = diff.exceeds()
    return "within noise" if result is None else "" if result else "against"
