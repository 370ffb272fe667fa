"""What every claim of the checklist shares: the verdict record, the claims' texts and
tolerances, how a claim's parts combine into one verdict, and ``ClaimData`` (a study's frame with
each method's best LR and best-LR curves). The claims themselves are in
``learnforget.analysis.claims`` (learning, forgetting, learning rates, modules) and
``learnforget.analysis.weight_claims`` (ΔW rank, diversity, intruders).

How a verdict is reached (docs/report.md lists every rule):

- Each method is taken at its best learning rate (``best_lrs``: most final learning), averaged
  over seeds per checkpoint; diverged and failed runs never count. "Full finetuning" is the
  reference label (``reference_label``), "LoRA" every LoRA label trained with the same optimizer.
- A claim has parts; one is its main part. A claim **does not hold** when any tested part fails,
  it **holds** when its main part and every other testable part hold (untested parts are named
  under ``missing``), and it is **not testable** when its main part cannot be tested.
- Comparisons are strict: "at least as much" means ≥ at every budget, "smaller" means <, with no
  tolerance beyond the ones named here (claims 3, 5, 7, 9).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from learnforget.report.frame import Frame, best_lrs, pretty_label, reference_label, usable

Verdict = Literal["holds", "does not hold", "not testable"]
HOLDS: Verdict = "holds"
FAILS: Verdict = "does not hold"
UNTESTABLE: Verdict = "not testable"

SEVERAL = 2.0  # claims 5 and 7: "several times" = at least twice
PARETO_TOLERANCE = 0.10  # claim 3: share of full finetuning's forgetting range
HIGH_EARLY = 0.5  # claim 7: the first checkpoint's rank90 reaches half of the final one
MIN_INTRUDERS = 1.0  # claim 9: "creates intruders" = at least one per matrix on average
FEW_INTRUDERS = 0.5  # claim 9: "few" = at most half of low-rank LoRA's count
PLAIN_LORA = re.compile(r"^lora-r(\d+)-(attention|mlp|all)(-lion)?$")

CLAIMS: dict[int, str] = {
    1: "Full finetuning learns at least as much as LoRA at every budget (each at its best LR); "
    "the gap is larger in CPT than in IFT and narrows as the rank grows.",
    2: "LoRA forgets less; forgetting grows with training for both, faster for full finetuning.",
    3: "All checkpoints lie near one learning–forgetting curve.",
    4: "At equal learning, LoRA forgets less than full finetuning with weight decay or dropout.",
    5: "LoRA's best LR is several times full finetuning's, and LoRA is more sensitive to the LR.",
    6: "Target modules: all > MLP > attention; the modules matter more than the rank.",
    7: "Full finetuning's ΔW needs far more rank for 90% of its variance than the LoRA rank; it "
    "is high early, rises with training and is higher in MLP than in attention.",
    8: "LoRA keeps generations more diverse than full finetuning.",
    9: "Low-rank LoRA creates intruder dimensions; full finetuning creates few.",
}


@dataclass(frozen=True)
class ClaimVerdict:
    """One claim judged: its number (paper.md's list), short text, verdict, the numbers behind
    the verdict (one line per part) and what is missing to test the rest."""

    number: int
    claim: str
    verdict: Verdict
    evidence: str
    missing: str = ""

    def to_dict(self) -> dict:
        """A JSON-ready dict of the fields."""
        return asdict(self)


@dataclass(frozen=True)
class Part:
    """One part of a claim: its verdict, the numbers behind it, what is missing to test it, and
    whether it is the claim's main part."""

    name: str
    verdict: Verdict
    evidence: str = ""
    missing: str = ""
    main: bool = False


def combine(number: int, parts: list[Part]) -> ClaimVerdict:
    """The claim's verdict from its parts (rule in the module docstring)."""
    tested = [p for p in parts if p.verdict != UNTESTABLE]
    if any(p.verdict == FAILS for p in tested):
        verdict = FAILS
    elif not tested or any(p.main and p.verdict == UNTESTABLE for p in parts):
        verdict = UNTESTABLE
    else:
        verdict = HOLDS
    evidence = "\n".join(f"{p.name} — {p.verdict}: {p.evidence}" for p in tested)
    missing = [f"{p.name}: {p.missing}" for p in parts if p.verdict == UNTESTABLE and p.missing]
    missing += [p.missing for p in tested if p.missing]
    return ClaimVerdict(number, CLAIMS[number], verdict, evidence, "; ".join(missing))


def untestable(number: int, missing: str) -> ClaimVerdict:
    """Claim ``number`` not testable, for want of ``missing``."""
    return ClaimVerdict(number, CLAIMS[number], UNTESTABLE, "", missing)


# --- formatting ---------------------------------------------------------------------------------
def fmt(value: float) -> str:
    """Three significant digits; ``—`` for NaN."""
    return f"{value:.3g}" if math.isfinite(value) else "—"


def fmt_tokens(value: float) -> str:
    """A token count: 295k, 1.2M, 20B."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


# --- the study's data at each method's best LR -------------------------------------------------
@dataclass
class ClaimData:
    """A study's frame with what every claim reads: the best LR of each label, the reference
    (full finetuning) label, label kinds and best-LR curves (cached)."""

    frame: Frame
    best: dict[str, float] = field(init=False)
    ref: str | None = field(init=False)
    kinds: dict[str, str] = field(init=False)
    _curves: dict[str, pd.DataFrame] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.best = best_lrs(self.frame)
        self.ref = reference_label(self.frame)
        runs = self.frame.runs
        self.kinds = runs.drop_duplicates("label").set_index("label")["kind"].astype(str).to_dict()

    @property
    def lion(self) -> bool:
        """Whether the reference was trained with Lion (its label ends in ``-lion``)."""
        return bool(self.ref and self.ref.endswith("-lion"))

    def loras(self) -> list[str]:
        """LoRA labels with a best LR, trained with the reference's optimizer, display order."""
        return [
            lab
            for lab in self.frame.labels
            if self.kinds.get(lab) == "lora"
            and lab in self.best
            and lab.endswith("-lion") == self.lion
        ]

    def curve(self, label: str) -> pd.DataFrame:
        """Usable checkpoints of ``label`` at its best LR, averaged over seeds per step."""
        if label not in self._curves:
            cp = usable(self.frame.checkpoints)
            best = self.best.get(label)
            rows = cp[
                (cp["label"] == label)
                & np.isclose(cp["lr"].astype(float), best if best is not None else np.nan)
            ]
            curve = rows.groupby("step", as_index=False).mean(numeric_only=True)
            self._curves[label] = curve.sort_values("step").reset_index(drop=True)
        return self._curves[label]

    def final(self, label: str, column: str = "learn") -> pd.Series | None:
        """The last best-LR checkpoint of ``label`` with a value in ``column``."""
        curve = self.curve(label)
        if column not in curve:
            return None
        curve = curve.dropna(subset=[column])
        return None if curve.empty else curve.iloc[-1]

    def value(self, label: str, column: str) -> float:
        """``column`` at ``label``'s last best-LR checkpoint holding it (NaN when none)."""
        row = self.final(label, column)
        return math.nan if row is None else float(row[column])

    def lrs_tried(self, label: str) -> list[float]:
        """Every LR the study ran for ``label``, whatever the runs' status."""
        runs = self.frame.runs
        return sorted(set(runs.loc[runs["label"] == label, "lr"].dropna().astype(float)))

    def name(self, label: str) -> str:
        """Readable method name."""
        return "full FT" if label == "full" else pretty_label(label)


def needs_pair(s: ClaimData, number: int) -> ClaimVerdict | None:
    """A not-testable verdict when the study lacks a measured full FT or LoRA method."""
    if s.ref is None or not s.loras():
        return untestable(number, "a measured full-finetuning run and a measured LoRA run")
    return None
