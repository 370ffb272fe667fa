"""Claims 3 and 4 of the checklist: LoRA's checkpoints against full finetuning's learn–forget
frontier, and against regularised full finetuning's. Both measure the vertical gap in forgetting
at equal learning (``pareto.distance_to_front``) of each LoRA best-LR checkpoint. The frontier
there is an interpolation between two checkpoints (or the base model), so the gap is a
combination of three checkpoints' scores on the same items, and its standard error is paired
over those items (``paired.combination_se``); √2 × the LoRA checkpoint's own error where
per-item values are missing.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from learnforget.analysis.claim_data import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    PARETO_TOLERANCE,
    SEED_NOISE,
    ClaimData,
    ClaimVerdict,
    Part,
    combine,
    fmt,
    fmt_tokens,
    needs_pair,
    tri_state,
    untestable,
)
from learnforget.analysis.frame import Frame, usable
from learnforget.analysis.paired import Checkpoint, combination_se
from learnforget.analysis.pareto import distance_to_front, frontier_weights, pareto_front
from learnforget.analysis.uncertainty import Difference, Z, diff_se


# --- 3: one Pareto curve -----------------------------------------------------------------------
class Frontier(NamedTuple):
    """A label's frontier: its points sorted by learning, and the checkpoint behind each (the
    base model's for its (0, 0); none when the base has no run id)."""

    points: list[tuple[float, float]]
    checkpoints: list[list[Checkpoint]]


def _frontier_of(frame: Frame, label: str) -> Frontier:
    """Frontier of a label's usable checkpoints at every LR, with the base model's (0, 0)."""
    cp = usable(frame.checkpoints[frame.checkpoints["label"] == label])
    cp = cp.dropna(subset=["learn", "forget"])
    base_id = frame.base.get("run_id")
    points = [(0.0, 0.0), *zip(cp["learn"].astype(float), cp["forget"].astype(float),
                               strict=True)]
    keys = [[(str(base_id), 0)] if base_id is not None else [],
            *([(str(run_id), int(step))] for run_id, step in zip(cp["run_id"], cp["step"],
                                                                  strict=True))]
    front = sorted(pareto_front(points), key=lambda i: points[i][0])
    return Frontier([points[i] for i in front], [keys[i] for i in front])


class Gap(NamedTuple):
    """A LoRA checkpoint's vertical distance to a full-FT frontier (+ = forgets more)."""

    label: str
    tokens: float
    learn: float
    gap: float
    se: float = math.nan  # the gap's standard error (the checkpoint's and the frontier's)

    def below(self) -> bool | None:
        """Whether the checkpoint forgets less than the frontier: True / False when resolved
        beyond noise, None within it (the plain sign without an error estimate)."""
        return Difference(0.0, self.gap, self.se).exceeds()


def _lora_gaps(s: ClaimData, front: Frontier, labels: list[str]) -> tuple[list[Gap], int]:
    """[Gap] of every best-LR checkpoint of ``labels`` against ``front``, and how many
    checkpoints lie outside its learning range."""
    gaps, outside = [], 0
    for label in labels:
        for row in s.curve(label).dropna(subset=["learn", "forget"]).itertuples():
            learn = float(row.learn)
            gap = distance_to_front((learn, float(row.forget)), front.points)
            if not math.isfinite(gap):
                outside += 1
                continue
            terms = [(s.checkpoints_of(label, int(row.step)), 1.0)]
            terms += [(front.checkpoints[i], -weight)
                      for i, weight in frontier_weights(learn, front.points) if weight]
            se = combination_se(s.frame, terms, "forget")
            if not math.isfinite(se):  # no per-item values: the frontier's error taken as
                own = float(getattr(row, "forget_se", math.nan))  # the checkpoint's own
                se = diff_se(own, own)
            gaps.append(Gap(label, float(row.tokens), learn, gap, se))
    return gaps, outside


def _frontier_forgetting_at(line: list[tuple[float, float]], learn: float) -> float:
    """Forgetting on the frontier polyline ``line`` at ``learn`` (linear interpolation)."""
    return -distance_to_front((learn, 0.0), line)


def seed_noise(s: ClaimData, labels: list[str]) -> tuple[float, int]:
    """The pooled standard deviation of forgetting across seeds (√ of the mean variance over
    every best-LR checkpoint of ``labels`` run with two or more seeds) and how many checkpoints
    it pools; (NaN, 0) when every checkpoint has one seed."""
    variances = []
    for label in labels:
        curve = s.curve(label)
        if "forget_sd" in curve:
            rows = curve[(curve["seeds"] >= 2) & curve["forget_sd"].notna()]
            variances += list(rows["forget_sd"].astype(float) ** 2)
    if not variances:
        return math.nan, 0
    return math.sqrt(sum(variances) / len(variances)), len(variances)


def claim_one_curve(s: ClaimData, tolerance: float = PARETO_TOLERANCE) -> ClaimVerdict:
    """Claim 3: every judged LoRA best-LR checkpoint within full FT's learning range lies near
    full FT's frontier (all its LRs and the base model) at equal learning: within a band of
    ±max(``tolerance`` × the forgetting that frontier spans over the learning the judged LoRA
    checkpoints reach, ``SEED_NOISE`` × the seeds' pooled standard deviation of forgetting).
    With one seed there is no noise estimate and the verdict says so.

    The band is tied to the part of the frontier LoRA is compared with: a full-FT LR that
    overshoots (far more learning or forgetting than any LoRA reaches) must not widen it."""
    if (missing := needs_pair(s, 3)) is not None:
        return missing
    front = _frontier_of(s.frame, s.ref)
    line = front.points
    gaps, outside = _lora_gaps(s, front, s.judged())
    if not gaps:
        return untestable(
            3,
            f"LoRA checkpoints whose learning lies within full FT's frontier "
            f"(0 … {fmt(max(p[0] for p in line))}); {outside} lie outside",
            s.scope,
        )
    reach = max(g.learn for g in gaps)
    spread = _frontier_forgetting_at(line, reach) - line[0][1]
    if spread <= 0:
        return untestable(
            3, f"full FT checkpoints that forgot at the learning LoRA reaches (≤ {fmt(reach)})",
            s.scope,
        )
    noise, pooled = seed_noise(s, [s.ref, *s.judged()])
    allowed = max(tolerance * spread, SEED_NOISE * noise if math.isfinite(noise) else 0.0)
    near = [g for g in gaps if abs(g.gap) <= allowed]
    worst = max(gaps, key=lambda g: abs(g.gap))
    if math.isfinite(noise):
        floor = (f"{SEED_NOISE:g} × the seeds' standard deviation of forgetting ({fmt(noise)}, "
                 f"pooled over {pooled} checkpoints)")
        settle = ""
    else:
        floor = "no noise estimate: every checkpoint has one seed"
        settle = "two or more seeds per run give the band its noise floor"
    evidence = (
        f"rule: a LoRA checkpoint (best LR) is near the curve when its forgetting is within "
        f"±max({tolerance:.0%} of the forgetting full FT's frontier (all its LRs and the base "
        f"model) spans up to the most learning a LoRA checkpoint reaches ({fmt(spread)} at "
        f"{fmt(reach)} learned); {floor}), i.e. ±{fmt(allowed)}, of that frontier at equal "
        f"learning. {len(near)} of {len(gaps)} are; largest gap {worst.gap:+.3g} "
        f"({s.name(worst.label)} at {fmt_tokens(worst.tokens)} tokens; + = forgets more)"
    )
    if outside:
        evidence += f"; {outside} outside full FT's learning range not judged"
    return combine(
        3,
        [Part("near full FT's frontier", HOLDS if len(near) == len(gaps) else FAILS, evidence,
              main=True, settle=settle)],
        s.scope,
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
    judged_loras = s.judged()
    if not judged_loras:
        return untestable(4, "a measured LoRA run (the paper's: default init, no rsLoRA or DoRA)")
    optimizer = s.methods["optimizer"]
    lines, results = [], []
    for label in labels:
        same_opt = [lab for lab in judged_loras if optimizer[lab] == optimizer[label]]
        gaps, outside = _lora_gaps(s, _frontier_of(s.frame, label), same_opt)
        if not gaps:
            lines.append(f"vs {s.name(label)}: no LoRA checkpoint within its learning range")
            continue
        readings = [g.below() for g in gaps]
        results += readings
        noisy = sum(r is None for r in readings)
        lines.append(
            f"vs {s.name(label)}: {sum(r is True for r in readings)} of {len(gaps)} LoRA "
            f"checkpoints forget less at equal learning"
            + (f", {noisy} within noise" if noisy else "")
            + f" (gaps {min(g.gap for g in gaps):+.3g} … {max(g.gap for g in gaps):+.3g})"
        )
    if not results:
        return untestable(
            4,
            "LoRA checkpoints whose learning lies within the regularised runs' "
            "learning range; " + "; ".join(lines),
            s.scope,
        )
    verdict = tri_state(results)
    return combine(
        4,
        [
            Part(
                "forgets less at equal learning",
                verdict,
                "; ".join(lines) + f" ({s.frame.forget_label}; a gap within {Z} standard "
                "errors is within noise)"
                + ("; no standard errors stored" if s.no_noise_estimate else ""),
                main=True,
                settle="more items or seeds" if verdict == INCONCLUSIVE else "",
            )
        ],
        s.scope,
    )
