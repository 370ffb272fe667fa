"""The index page of a multi-study run (the demo): one link per study report, the claims that
need several studies (claim 1: the gap is larger in CPT than in IFT) and each study's claims
checklist side by side, as analysis judged them (``learnforget.analysis.judge.judge_run``)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from learnforget.analysis.judge import RunJudgement
from learnforget.analysis.verdicts import CLAIMS
from learnforget.report.claims_section import claims_table, verdict_cell
from learnforget.report.html import paragraph, relative_folder, table

WITHIN_STUDY_CLAIM_1 = (
    "Within the study: full finetuning learns at least as much as LoRA at every budget and the "
    "gap narrows as the rank grows (the CPT-vs-IFT part is judged across studies, above).")
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>learnforget: {title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
li{{margin:.4rem 0}} table{{border-collapse:collapse;margin:.8em 0;font-size:.88em}}
th,td{{border:1px solid #d0d0d0;padding:.3em .6em;text-align:left;vertical-align:top}}
th{{background:#f3f3f5}} .muted{{color:#666;font-size:.9em}}
.scroll{{overflow-x:auto;max-width:100%}}</style></head>
<body><h1>learnforget: {title}</h1>
<p>One report per study (target domain and regime). Each has its figures, verdict table,
recommendation and claims checklist; every number is in that study's measurements.csv.</p>
<ul>{items}</ul>
{claims}</body></html>
"""


def claims_html(judged: RunJudgement) -> str:
    """The index page's claims: the cross-study verdicts, then a claim × study table of each
    study's checklist verdicts, and a note for each folder without a store."""
    if not judged.studies:
        return "".join(paragraph(note, "muted") for note in judged.notes)
    parts = ["<h2>Claims across studies</h2>",
             paragraph("What no single study can show: the paper finds full finetuning's lead over "
                       "LoRA larger in continued pretraining than in instruction finetuning."),
             claims_table(judged.across)]
    names = [study.name for study in judged.studies]
    texts = {**CLAIMS, 1: WITHIN_STUDY_CLAIM_1}
    rows = [[number, text, *(verdict_cell(study.verdicts.get(number, "not testable"))
                             for study in judged.studies)]
            for number, text in texts.items()]
    parts += ["<h2>Each study's claims checklist</h2>",
              paragraph("The verdicts of each study's report (its Claims checklist section has "
                        "the evidence and what is missing)."),
              table(["#", "claim", *names], rows)]
    parts += [paragraph(note, "muted") for note in judged.notes]
    return "\n".join(parts)


def recommendations_html(judged: RunJudgement) -> str:
    """Each study's verdict sentence and recommended checkpoint (balanced goal)."""
    rows = []
    for study in judged.studies:
        found, out = study.findings, study.out
        rec = found.recommendation
        rows.append([found.study, found.verdict, rec.name or "—",
                     None if rec.lr is None else f"{rec.lr:g}", rec.step,
                     relative_folder(rec.checkpoint, out.parent),
                     ", ".join(f"{n} {state}" for state, n in found.claims.items() if n)])
    if not rows:
        return ""
    return ("<h2>Findings and recommendations</h2>"
            + paragraph("Each study's verdict (its best LoRA against full finetuning) and the "
                        "checkpoint to use for a balanced goal (the knee of the learning–"
                        "forgetting frontier); the study's report gives the other goals.")
            + table(["study", "verdict", "recommended method", "LR", "step", "checkpoint",
                     "claims"], rows))


def write_index(root: Path, outs: list[Path], judged: RunJudgement) -> Path:
    """Write ``root/index.html`` linking each study's ``report/index.html`` (relative links),
    with each study's findings, the cross-study claims and every study's checklist verdicts
    (``judged``: ``judge_run(outs)``)."""
    items = []
    for out in outs:
        study = json.loads((out / "study.json").read_text())
        target = study["target"]
        link = (out / "report" / "index.html").relative_to(root)
        items.append(
            f'<li><a href="{html.escape(str(link))}">{html.escape(study["name"])}</a>: '
            f'{html.escape(target["domain"])} {html.escape(target["regime"].upper())} on '
            f'{html.escape(study["base"]["model"])}</li>'
        )
    index = root / "index.html"
    index.write_text(PAGE.format(title=html.escape(root.name), items="".join(items),
                                 claims=recommendations_html(judged) + claims_html(judged)),
                     encoding="utf-8")
    return index
