"""The report's "Claims checklist": the paper's nine claims as analysis judged them on this study
(``StudyJudgement.verdicts``, also in ``OUT/claims.json``) as a table, with the variants compared
apart."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from learnforget.analysis.comparison import Z
from learnforget.analysis.frame import Frame
from learnforget.analysis.verdicts import (
    CPT_SIMILAR,
    FAILS,
    FAR_MORE,
    HOLDS,
    INCONCLUSIVE,
    PARETO_TOLERANCE,
    SEVERAL,
    ClaimVerdict,
    count_verdicts,
)
from learnforget.report.context import ReportContext
from learnforget.report.html import Cell, Section, escape, number, paragraph, table

VERDICT_COLORS = {HOLDS: "#1e7b34", FAILS: "#b03a2e", INCONCLUSIVE: "#b7791f"}  # untested grey
UNTESTED_COLOR = "#777777"

INTRO = (
    "Each of the paper's nine claims (what a faithful reproduction must show) judged on this "
    "study's measurements, each method at its best learning rate. \"LoRA\" is the paper's LoRA "
    "(all linear modules, default init, α = 2r, no rsLoRA, DoRA, dropout or weight decay) unless "
    "the study has none; the scope line of each claim says which runs stand for it, and other "
    "targets and variants are compared apart below the table. Every part of a claim is a set of "
    "comparisons with their 95% intervals: items resampled jointly for every checkpoint (both "
    "axes of a learn–forget point move together), seeds resampled (Student's t on their degrees "
    "of freedom), each best LR chosen on one half of the items and judged on the other. A part "
    "holds when every comparison supports it beyond its interval; it fails only when one lies "
    "against it beyond Holm's threshold over all of the claim's comparisons; otherwise it is "
    "inconclusive. A claim does not hold when a part fails; it is not testable when the study "
    "lacks the runs or measurements for its main part; it is inconclusive when a part is "
    "unsettled; otherwise it holds. Under the evidence: how many comparisons the claim made and "
    "which sources of noise its errors count; the last column says what would settle the rest. "
    "docs/report.md lists every rule and the calibration behind it. "
    f"Thresholds: best-LR ratio ≥ {SEVERAL:g}× in IFT, within {CPT_SIMILAR:g}× in CPT; ΔW rank "
    f"≥ {FAR_MORE:g}× the LoRA rank; 'near one curve' = within ±{PARETO_TOLERANCE:.0%} of the "
    "forgetting full finetuning's frontier spans up to the most learning a LoRA checkpoint "
    "reaches.")


def verdict_cell(verdict: str) -> Cell:
    """The verdict as a coloured, bold table cell."""
    color = VERDICT_COLORS.get(verdict, UNTESTED_COLOR)
    return Cell(f'<span style="color:{color};font-weight:bold">{escape(verdict)}</span>')


def multiline(text: str) -> Cell:
    """Escaped text with its line breaks kept."""
    return Cell("<br>".join(escape(line) for line in text.splitlines()) or "—")


def _claim_cell(v: ClaimVerdict) -> Cell:
    """The claim's text with its scope (which runs stand for LoRA) below it."""
    scope = f'<br><span class="muted">{escape(v.scope)}</span>' if v.scope else ""
    return Cell(escape(v.claim) + scope)


def _evidence_cell(v: ClaimVerdict) -> Cell:
    """The evidence, one line per part, with the noise its errors count below it."""
    evidence = multiline(v.evidence)
    if not v.noise:
        return evidence
    return Cell(f'{evidence.html}<br><span class="muted">{escape(v.noise)}</span>')


def _settle_cell(v: ClaimVerdict) -> Cell:
    """What is missing to test the claim and what would settle its inconclusive parts."""
    lines = [text for text in (v.missing, v.settle) if text]
    return multiline("\n".join(lines)) if lines else Cell("—")


def claims_table(verdicts: Sequence[ClaimVerdict]) -> str:
    """The checklist as an HTML table: number, claim (with its scope), verdict, evidence, and
    what would test or settle the rest."""
    rows = [[v.number, _claim_cell(v), verdict_cell(v.verdict), _evidence_cell(v),
             _settle_cell(v)] for v in verdicts]
    return table(["#", "claim", "verdict", "evidence", "what would test or settle it"], rows)


def summary_line(verdicts: Sequence[ClaimVerdict]) -> str:
    """``holds: 4; does not hold: 2; inconclusive: 1; not testable: 2`` (states with none
    left out)."""
    return "; ".join(f"{state}: {n}" for state, n in count_verdicts(verdicts).items() if n)


def _with_se(value: float, se: float) -> str:
    text = number(value, 3)
    return f"{text} ± {number(Z * se, 2)}" if se == se else text  # NaN: no error stored


def variants_table(frame: Frame, table_rows: pd.DataFrame) -> str:
    """Other target sets and LoRA variants (``table_rows``: ``variant_comparison``) beside the
    reference and the judged LoRA ("" when the study has none)."""
    if table_rows.empty:
        return ""
    rows = [[r.name, r.role, Cell(number(r.best_lr, 3), True),
             Cell(_with_se(r.learn, r.learn_stderr), True),
             Cell(_with_se(r.forget, r.forget_stderr), True),
             Cell(number(r.learn_share, 2), True), Cell(number(r.forget_share, 2), True),
             Cell(number(r.rank90, 3), True), Cell(number(r.intruders, 3), True)]
            for r in table_rows.itertuples()]
    return (paragraph("Other target sets and LoRA variants — not part of the verdicts above. "
                      "Each method at its best LR and last checkpoint; learning and forgetting "
                      f"± {Z} standard errors, and as shares of full finetuning's.", "sentence")
            + table(["method", "role", "best LR", f"learn ({frame.learn_label})",
                     f"forget ({frame.forget_label})", "learn / full FT", "forget / full FT",
                     "ΔW rank90", "intruders / matrix"], rows))


def claims_section(ctx: ReportContext) -> Section:
    """The claims checklist of this study."""
    verdicts = ctx.judgement.verdicts
    body = (paragraph(INTRO)
            + paragraph(f"The nine claims — {summary_line(verdicts)}.", "sentence")
            + claims_table(verdicts) + variants_table(ctx.frame, ctx.judgement.variants)
            + paragraph("Claim 1's comparison of CPT with IFT needs two studies: a multi-study "
                        "run judges it on its index page. The verdicts are also in claims.json "
                        "beside the report folder.", "muted"))
    return Section("Claims checklist", body)
