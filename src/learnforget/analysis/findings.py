"""What a finished study found, in a few lines for the end of ``learnforget run`` and ``demo``:
the verdict sentence of the paper's LoRA, the recommended checkpoint with its folder, the claims
count by state and where the report is.

A judged study gives its findings directly (``StudyJudgement.findings``); ``study_findings`` reads
them back from a study's output folder (the claims from ``OUT/claims.json``, which the pipeline
writes with the study's report; a folder without it is judged here without spectra).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from learnforget.analysis.claim_data import ClaimData
from learnforget.analysis.frame import Frame, load_frame
from learnforget.analysis.recommend import Recommendation, recommend, verdict
from learnforget.analysis.verdicts import VERDICTS


@dataclass(frozen=True)
class Findings:
    """One study's findings (see the module docstring)."""

    study: str
    verdict: str  # e.g. "LoRA r=8 (all) kept 61% of full finetuning's learning and 40% …"
    recommendation: Recommendation
    claims: dict[str, int]  # verdict state → count, every state present
    report: Path

    def lines(self) -> list[str]:
        """The findings as terminal lines."""
        rec = self.recommendation
        if rec.label is None:
            advice = rec.reason
        else:
            where = f" — checkpoint {rec.checkpoint}" if rec.checkpoint else ""
            tokens = f", {rec.tokens:,.0f} tokens" if rec.tokens is not None and math.isfinite(
                rec.tokens) else ""
            advice = f"{rec.name}, lr {rec.lr:g}, step {rec.step}{tokens}{where}"
        counts = ", ".join(f"{n} {state}" for state, n in self.claims.items())
        return [f"verdict: {self.verdict}",
                f"recommended (balanced): {advice}",
                f"claims: {counts}",
                f"report: {self.report}"]


def headline(frame: Frame) -> str:
    """The verdict sentence of the judged LoRA (the paper's, when the study has it) that kept
    the largest share of full finetuning's learning; another method's when none is judged."""
    data = ClaimData(frame)
    rows = {row.label: row for row in verdict(frame)}
    judged = [rows[label] for label in data.judged() if label in rows]
    others = [row for row in rows.values() if not row.is_reference and row not in judged]
    candidates = [row for row in judged or others if math.isfinite(row.learn_share)]
    if candidates:
        return max(candidates, key=lambda row: row.learn_share).sentence
    if rows:
        return next(iter(rows.values())).sentence
    return "no run has been measured"


def study_findings(out: Path, frame: Frame | None = None) -> Findings:
    """The findings of the study in ``out`` (its claims.json should have been written); ``frame``
    is its frame when the caller has read it already."""
    out = Path(out)
    frame = frame if frame is not None else load_frame(out)
    claims_file = out / "claims.json"
    if claims_file.is_file():
        states = [c["verdict"] for c in
                  json.loads(claims_file.read_text(encoding="utf-8"))["claims"]]
    else:
        from learnforget.analysis.claims import judge_claims

        states = [v.verdict for v in judge_claims(frame)]
    counts = {state: states.count(state) for state in VERDICTS}
    name = frame.study.name if frame.study else out.name
    return Findings(name, headline(frame), recommend(frame, "balanced"), counts,
                    out / "report" / "index.html")
