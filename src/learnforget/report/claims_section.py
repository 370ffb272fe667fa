"""The report's "Claims checklist": the paper's nine claims judged on this study
(``learnforget.analysis.claims``) as a table, also written to ``OUT/claims.json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from learnforget.analysis.claims import (
    FAILS,
    HOLDS,
    PARETO_TOLERANCE,
    SEVERAL,
    ClaimVerdict,
    judge_claims,
)
from learnforget.report.frame import Frame
from learnforget.report.html import Cell, Section, escape, paragraph, table
from learnforget.report.weights import best_run_ids, load_artifacts

if TYPE_CHECKING:  # build.py imports this module, so the context is only a type here
    from learnforget.report.build import ReportContext

VERDICT_COLORS = {HOLDS: "#1e7b34", FAILS: "#b03a2e"}  # "not testable" in grey
UNTESTED_COLOR = "#777777"

INTRO = (
    "Each of the paper's nine claims (what a faithful reproduction must show) judged on this "
    "study's measurements, each method at its best learning rate. A claim holds only when its "
    "main part and every other part the study can test hold; it does not hold when any tested "
    "part fails; it is not testable when the study lacks the runs or measurements for its main "
    "part (the last column says which). The evidence gives the numbers behind each verdict and "
    "the rule used; docs/report.md lists every rule. "
    f"Tolerances: 'several times' = {SEVERAL:g}×; 'near one curve' = within "
    f"{PARETO_TOLERANCE:.0%} of the forgetting full finetuning's frontier spans up to the "
    "most learning a LoRA checkpoint reaches.")


def verdict_cell(verdict: str) -> Cell:
    """The verdict as a coloured, bold table cell."""
    color = VERDICT_COLORS.get(verdict, UNTESTED_COLOR)
    return Cell(f'<span style="color:{color};font-weight:bold">{escape(verdict)}</span>')


def multiline(text: str) -> Cell:
    """Escaped text with its line breaks kept."""
    return Cell("<br>".join(escape(line) for line in text.splitlines()) or "—")


def claims_table(verdicts: Sequence[ClaimVerdict]) -> str:
    """The checklist as an HTML table: number, claim, verdict, evidence, what is missing."""
    rows = [[v.number, v.claim, verdict_cell(v.verdict), multiline(v.evidence),
             v.missing or "—"] for v in verdicts]
    return table(["#", "claim", "verdict", "evidence", "missing to test the rest"], rows)


def claims_record(frame: Frame, verdicts: Sequence[ClaimVerdict]) -> dict:
    """What ``OUT/claims.json`` holds: the study, its target and every verdict."""
    study = frame.study
    return {"study": study.name if study else None,
            "target": study.target.model_dump(mode="json") if study else None,
            "claims": [v.to_dict() for v in verdicts]}


def write_claims_json(out: Path, frame: Frame, verdicts: Sequence[ClaimVerdict]) -> Path:
    """Write ``OUT/claims.json`` (see ``claims_record``); returns its path."""
    path = Path(out) / "claims.json"
    path.write_text(json.dumps(claims_record(frame, verdicts), indent=2, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    return path


def claims_section(ctx: ReportContext) -> Section:
    """The claims checklist of this study (and ``OUT/claims.json``)."""
    run_ids = {run_id for ids in best_run_ids(ctx.frame).values() for run_id in ids}
    verdicts = judge_claims(ctx.frame, load_artifacts(ctx.out, "spectrum", run_ids))
    write_claims_json(ctx.out, ctx.frame, verdicts)
    counts = {verdict: sum(v.verdict == verdict for v in verdicts)
              for verdict in (HOLDS, FAILS, "not testable")}
    summary = "; ".join(f"{verdict}: {n}" for verdict, n in counts.items() if n)
    body = (paragraph(INTRO) + paragraph(f"The nine claims — {summary}.", "sentence")
            + claims_table(verdicts)
            + paragraph("Claim 1's comparison of CPT with IFT needs two studies: a multi-study "
                        "run judges it on its index page. The verdicts are also in claims.json "
                        "beside the report folder.", "muted"))
    return Section("Claims checklist", body)
