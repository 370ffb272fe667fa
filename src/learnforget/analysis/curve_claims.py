"""Claims 3 and 4 of the checklist: LoRA's checkpoints against full finetuning's learn–forget
frontier, and against regularised full finetuning's. Both measure the vertical gap in forgetting
at equal learning (``pareto.distance_to_front``) of each LoRA best-LR checkpoint.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from learnforget.analysis.claim_data import (
    FAILS,
    HOLDS,
    PARETO_TOLERANCE,
    ClaimData,
    ClaimVerdict,
    Part,
    combine,
    fmt,
    fmt_tokens,
    needs_pair,
    untestable,
)
from learnforget.analysis.pareto import distance_to_front, frontier
from learnforget.report.frame import Frame, usable


# --- 3: one Pareto curve -----------------------------------------------------------------------
def _frontier_of(frame: Frame, label: str) -> list[tuple[float, float]]:
    """Frontier of a label's usable checkpoints at every LR, with the base model's (0, 0)."""
    cp = usable(frame.checkpoints[frame.checkpoints["label"] == label])
    cp = cp.dropna(subset=["learn", "forget"])
    return frontier(
        [(0.0, 0.0), *zip(cp["learn"].astype(float), cp["forget"].astype(float), strict=True)]
    )


class Gap(NamedTuple):
    """A LoRA checkpoint's vertical distance to a full-FT frontier (+ = forgets more)."""

    label: str
    tokens: float
    learn: float
    gap: float


def _lora_gaps(
    s: ClaimData, line: list[tuple[float, float]], labels: list[str]
) -> tuple[list[Gap], int]:
    """[Gap] of every best-LR checkpoint of ``labels`` against
    ``line``, and how many checkpoints lie outside its learning range."""
    gaps, outside = [], 0
    for label in labels:
        for row in s.curve(label).dropna(subset=["learn", "forget"]).itertuples():
            gap = distance_to_front((float(row.learn), float(row.forget)), line)
            if math.isfinite(gap):
                gaps.append(Gap(label, float(row.tokens), float(row.learn), gap))
            else:
                outside += 1
    return gaps, outside


def _frontier_forgetting_at(line: list[tuple[float, float]], learn: float) -> float:
    """Forgetting on the frontier polyline ``line`` at ``learn`` (linear interpolation)."""
    return -distance_to_front((learn, 0.0), line)


def claim_one_curve(s: ClaimData, tolerance: float = PARETO_TOLERANCE) -> ClaimVerdict:
    """Claim 3: every LoRA best-LR checkpoint within full FT's learning range lies within
    ±``tolerance`` × the forgetting that full FT's frontier (all its LRs and the base model)
    spans over the learning the judged LoRA checkpoints reach, at equal learning.

    The band is tied to the part of the frontier LoRA is compared with: a full-FT LR that
    overshoots (far more learning or forgetting than any LoRA reaches) must not widen it."""
    if (missing := needs_pair(s, 3)) is not None:
        return missing
    line = _frontier_of(s.frame, s.ref)
    gaps, outside = _lora_gaps(s, line, s.loras())
    if not gaps:
        return untestable(
            3,
            f"LoRA checkpoints whose learning lies within full FT's frontier "
            f"(0 … {fmt(max(p[0] for p in line))}); {outside} lie outside",
        )
    reach = max(g.learn for g in gaps)
    spread = _frontier_forgetting_at(line, reach) - line[0][1]
    if spread <= 0:
        return untestable(
            3, f"full FT checkpoints that forgot at the learning LoRA reaches (≤ {fmt(reach)})"
        )
    allowed = tolerance * spread
    near = [g for g in gaps if abs(g.gap) <= allowed]
    worst = max(gaps, key=lambda g: abs(g.gap))
    evidence = (
        f"rule: a LoRA checkpoint (best LR) is near the curve when its forgetting is within "
        f"±{tolerance:.0%} of the forgetting full FT's frontier (all its LRs and the base "
        f"model) spans up to the most learning a LoRA checkpoint reaches ({fmt(spread)} at "
        f"{fmt(reach)} learned), i.e. ±{fmt(allowed)}, of that frontier at equal learning. "
        f"{len(near)} of {len(gaps)} are; largest gap {worst.gap:+.3g} "
        f"({s.name(worst.label)} at {fmt_tokens(worst.tokens)} tokens; + = forgets more)"
    )
    if outside:
        evidence += f"; {outside} outside full FT's learning range not judged"
    return combine(
        3,
        [
            Part(
                "near full FT's frontier",
                HOLDS if len(near) == len(gaps) else FAILS,
                evidence,
                main=True,
            )
        ],
    )


# --- 4: regularised full finetuning ------------------------------------------------------------
def claim_beats_regularised(s: ClaimData) -> ClaimVerdict:
    """Claim 4: every LoRA best-LR checkpoint within a regularised full-FT label's learning range
    (weight decay or attention dropout > 0) forgets less than that label's frontier (all its LRs
    and the base model) at equal learning."""
    runs = s.frame.runs
    regular = runs[
        runs["kind"].eq("full")
        & ((runs["weight_decay"].fillna(0) > 0) | (runs["attention_dropout"].fillna(0) > 0))
    ]
    labels = [lab for lab in s.frame.labels if lab in set(regular["label"]) and lab in s.best]
    if not labels:
        return untestable(
            4,
            "measured full-finetuning runs with weight decay or attention "
            "dropout (e.g. weight_decay: [0.1] or attention_dropout: [0.1])",
        )
    loras = [lab for lab in s.frame.labels if s.kinds.get(lab) == "lora" and lab in s.best]
    if not loras:
        return untestable(4, "a measured LoRA run")
    lines, judged, below = [], 0, 0
    for label in labels:
        same_opt = [lab for lab in loras if lab.endswith("-lion") == label.endswith("-lion")]
        gaps, outside = _lora_gaps(s, _frontier_of(s.frame, label), same_opt)
        if not gaps:
            lines.append(f"vs {s.name(label)}: no LoRA checkpoint within its learning range")
            continue
        judged += len(gaps)
        below += sum(g.gap < 0 for g in gaps)
        lines.append(
            f"vs {s.name(label)}: {sum(g.gap < 0 for g in gaps)} of {len(gaps)} LoRA "
            f"checkpoints forget less at equal learning (gaps "
            f"{min(g.gap for g in gaps):+.3g} … {max(g.gap for g in gaps):+.3g})"
        )
    if not judged:
        return untestable(
            4,
            "LoRA checkpoints whose learning lies within the regularised runs' "
            "learning range; " + "; ".join(lines),
        )
    return combine(
        4,
        [
            Part(
                "forgets less at equal learning",
                HOLDS if below == judged else FAILS,
                "; ".join(lines) + f" ({s.frame.forget_label})",
                main=True,
            )
        ],
    )
