"""One checkpoint's ΔW analysis folded into a few numbers for the ``measurements`` table.

The per-matrix details stay in the ``artifacts`` table (kind ``spectrum``); these summaries are
what the curves and the claims checklist read.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from learnforget.measure.spectrum import MatrixSpectrum
from learnforget.methods import ATTENTION_MODULES, MLP_MODULES


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def spectrum_summary(spectra: Iterable[MatrixSpectrum]) -> dict[str, float]:
    """Medians of rank-for-90% (ΔW and the random baseline) overall, for attention and for MLP
    matrices, the rank/random ratio, and intruder counts."""
    spectra = list(spectra)
    if not spectra:
        return {"matrices_changed": 0.0}
    out: dict[str, float] = {"matrices_changed": float(len(spectra))}
    groups = {"": spectra,
              "_attention": [s for s in spectra if s.module in ATTENTION_MODULES],
              "_mlp": [s for s in spectra if s.module in MLP_MODULES]}
    for suffix, group in groups.items():
        if not group:
            continue
        out[f"rank90{suffix}"] = _median([s.rank90 for s in group])
        out[f"random_rank90{suffix}"] = _median([s.random_rank90 for s in group])
        out[f"rank90_sigma{suffix}"] = _median([s.rank90_sigma for s in group])
        out[f"rank90_ratio{suffix}"] = _median([s.rank90 / s.random_rank90 for s in group])
        intruders = [s.intruders for s in group if s.intruders is not None]
        if intruders:
            out[f"intruders{suffix}"] = float(sum(intruders)) / len(intruders)
    out["delta_fro_norm"] = float(sum(s.fro_norm**2 for s in spectra) ** 0.5)
    return out
