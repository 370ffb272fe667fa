"""Build the study report: ``OUT/report/index.html`` (self-contained), the figures beside it in
``OUT/report/`` and ``OUT/measurements.csv`` with every number the figures and tables use. The
report renders what analysis concluded (a ``StudyJudgement`` of
``learnforget.analysis.judge``); the pipeline judges the study and writes ``OUT/claims.json``.

The page is a list of sections, each made by a *section builder*: a function
``(ReportContext) -> Section | None`` listed in ``SECTION_BUILDERS``. To add a part to the
report (a claims checklist, ΔW spectra, diversity), write such a function and append it to the
list (or pass a list to ``build_report``); see docs/report.md. A builder that fails does not
stop the report: its section shows the error instead.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import traceback
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from learnforget.analysis.best_lr import final_rows
from learnforget.analysis.comparison import Z
from learnforget.analysis.judge import StudyJudgement
from learnforget.report import figures as figs
from learnforget.report.claims_section import claims_section
from learnforget.report.context import ReportContext, SectionBuilder
from learnforget.report.csv_table import write_measurements_csv
from learnforget.report.html import (
    Cell,
    Section,
    escape,
    number,
    paragraph,
    percent,
    relative_folder,
    render_page,
    table,
)
from learnforget.report.weights import diversity_section, weights_section


# --- sections -----------------------------------------------------------------------------------
def summary_section(ctx: ReportContext) -> Section:
    """The study: base model, target, tasks, budgets, runs by status, the LR search (grid, or
    successive halving and the training tokens it saved), base model's scores."""
    frame, study = ctx.frame, ctx.frame.study
    rows: list[tuple[str, object]] = []
    if study is not None:
        target = study.target
        rows += [("study", study.name), ("base model", study.base.model),
                 ("target", f"{target.domain} ({target.regime.upper()})"
                  + (f", data {target.data}" if target.data else "")),
                 ("budgets", f"{study.budgets.unit}: "
                  + ", ".join(f"{v:g}" for v in study.budgets.values)),
                 ("optimizer", study.optimizer.name),
                 ("schedule", f"{study.schedule.name}, warmup {study.schedule.warmup:g}")]
    for word, tasks in (("learning", frame.learning), ("forgetting", frame.forgetting)):
        described = [f"{o.task} ({o.metric}, {'higher' if o.higher_is_better else 'lower'} is "
                     f"better; base {uncertain_text(frame.base, o.column) or '—'})"
                     for o in tasks]
        rows.append((f"{word} tasks", "; ".join(described) or "none"))
    rows += [("learning axis", frame.learn_label), ("forgetting axis", frame.forget_label)]
    if "data/heldout_examples" in frame.base:
        base = frame.base
        rows.append(("held-out split", f"{int(base['data/heldout_examples'])} of "
                     f"{int(base['data/examples'])} examples, "
                     f"{int(base['data/near_duplicate_groups'])} groups of near-duplicates kept "
                     f"on one side; {float(base['data/heldout_near_duplicate_share']):.1%} of "
                     "held-out examples have a near-duplicate in train"))
    counts = frame.runs["status"].value_counts()
    rows.append(("runs", f"{len(frame.runs)} ("
                 + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")"))
    rows.append(("LR search", ctx.judgement.search.text()))
    body = table(None, rows)
    body += ("<p>Every number of this report is in <code>measurements.csv</code> beside the "
             "<code>report</code> folder (with the derived <code>learn</code>/<code>forget</code> "
             "as task <code>derived</code>).</p>")
    return Section("Study", body)


HOW_TO_READ = [
    ("learning", "the improvement of the first learning task's main metric over the base model, "
     "signed so that higher = learned more (bits/byte: base − value; accuracy: value − base)."),
    ("forgetting", "the degradation of the first forgetting task's main metric relative to the "
     "base model, signed so that higher = forgot more (bits/byte: value − base; accuracy: "
     "base − value). With several accuracy-type forgetting tasks it is their mean drop."),
    ("best learning rate", "for each method, the learning rate whose runs (mean over seeds) "
     "learned the most by their final checkpoint; diverged and failed runs never count, and "
     "under successive halving only the LRs trained to the method's last budget compete."),
    ("shares of full finetuning", "a method's final learning (forgetting) at its best LR divided "
     "by full finetuning's at its best LR: a LoRA that keeps most of the learning and a small "
     "share of the forgetting is the paper's 'learns less, forgets less'."),
    ("Pareto frontier", "the checkpoints that no other checkpoint beats on both axes (learns at "
     "least as much and forgets at most as much)."),
    ("forgetting above full FT's frontier", "how much more a method forgets than full "
     "finetuning's frontier at the same learning (interpolated): negative = it is beyond full "
     "finetuning's frontier, — = its learning lies outside that frontier's range."),
]


def how_to_read_section(ctx: ReportContext) -> Section:
    """The definitions behind every number of the report, with this study's own example."""
    items = "".join(f"<li><b>{escape(term)}</b>: {escape(text)}</li>" for term, text in HOW_TO_READ)
    if not ctx.frame.checkpoints.empty:
        items += (f"<li><b>in this study</b>: {escape(ctx.judgement.headline)} "
                  f"({escape(ctx.frame.learn_label)}; {escape(ctx.frame.forget_label)})</li>")
    items += ("<li><b>± and n</b>: a value ± 1.96 standard errors (its 95% interval) and the "
              "number of items it was measured on; accuracies move in steps of 1/n.</li>")
    return Section("How to read this report", f"<ul>{items}</ul>")


def verdict_section(ctx: ReportContext) -> Section:
    """Each method at its best LR against full finetuning: sentences and a table."""
    rows = ctx.judgement.methods
    if not rows:
        return Section("Verdict", paragraph("No run has been registered yet."))
    sentences = "".join(paragraph(r.sentence, "sentence") for r in rows if not r.is_reference)
    headers = ["method", "best LR", "runs", "diverged", "failed", "pending", "final tokens",
               "final learning", "final forgetting", "learning vs full FT",
               "forgetting vs full FT", "forgetting above full FT's frontier",
               "ΔW rank90 (median)"]
    body_rows = [[r.name, Cell(number(r.lr, 3), True), r.runs, r.diverged, r.failed, r.pending,
                  r.tokens, r.learn, r.forget, Cell(percent(r.learn_share), True),
                  Cell(percent(r.forget_share), True), r.frontier_gap, r.rank90] for r in rows]
    classes = ["reference" if r.is_reference else "" for r in rows]
    body = sentences + table(headers, body_rows, classes)
    body += paragraph(f"learning = {ctx.frame.learn_label}; forgetting = "
                      f"{ctx.frame.forget_label}. The highlighted row is the reference.", "muted")
    return Section("Verdict", body)


def recommendation_section(ctx: ReportContext) -> Section:
    """Which finetuning to use, for each of the three goals."""
    recs = ctx.judgement.recommendations
    goal_names = {"learn": "learn the most", "balanced": "balanced",
                  "retain": "retain the most"}
    rows = [[goal_names[r.goal], r.name or "—", Cell(number(r.lr, 3), True),
             r.r, r.targets, r.tokens, r.learn, r.forget, relative_folder(r.checkpoint, ctx.out),
             r.reason] for r in recs]
    body = table(["goal", "method", "LR", "rank", "targets", "stop at tokens", "learning",
                  "forgetting", "checkpoint", "why"], rows)
    body += paragraph(ctx.judgement.frontier_note)
    return Section("Recommendation", body)


def _figure_section(title: str, specs: list[figs.FigureSpec], intro: str = "") -> SectionBuilder:
    def build(ctx: ReportContext) -> Section:
        refs, notes = ctx.draw(specs)
        return Section(title, paragraph(intro) if intro else "", refs, notes)

    build.__name__ = f"figure_section_{title}"
    build.__doc__ = f"The figures: {', '.join(s.title for s in specs)}."
    return build


def _main(*names: str) -> list[figs.FigureSpec]:
    return [s for s in figs.MAIN_FIGURES if s.name in names]


def runs_section(ctx: ReportContext) -> Section:
    """One row per run (base model first) with its status and last measured values."""
    frame = ctx.frame
    tasks = [*frame.learning, *frame.forgetting]
    finals = final_rows(frame).set_index("run_id") if len(frame.checkpoints) else None
    headers = ["run id", "method", "LR", "optimizer", "seed", "status", "last step",
               "tokens", "learning", "forgetting", *(f"{o.task} {o.metric}" for o in tasks),
               "peak memory (MiB)", "error"]
    peaks = _peak_memory(frame.train)
    base = frame.base
    rows = [[base["run_id"], "base model", None, None, None, base["status"], 0, 0, 0.0, 0.0,
             *(with_uncertainty(base, o.column) for o in tasks), None, None]]
    for run in frame.runs.itertuples():
        final = finals.loc[run.run_id] if finals is not None and run.run_id in finals.index \
            else None
        values = [None] * (4 + len(tasks)) if final is None else [
            int(final["step"]), int(final["tokens"]), final["learn"], final["forget"],
            *(with_uncertainty(final, o.column) for o in tasks)]
        error = str(run.error).strip().splitlines()[-1][:300] if isinstance(run.error, str) \
            and run.error.strip() else None
        rows.append([run.run_id, frame.name(run.label), Cell(number(run.lr, 3), True),
                     run.optimizer, None if pd.isna(run.seed) else int(run.seed), run.status,
                     *[_plain(v) for v in values], peaks.get(run.run_id), error])
    return Section("Runs", table(headers, rows))


def _peak_memory(train: pd.DataFrame) -> dict[str, int]:
    """Each run's largest recorded ``train/peak_memory_mb`` (peak RSS on a CPU, CUDA's max
    allocated on a GPU), rounded to MiB."""
    column = "train/peak_memory_mb"
    if column not in train:
        return {}
    peaks = train.groupby("run_id")[column].max().dropna()
    return {run_id: round(float(value)) for run_id, value in peaks.items()}


def uncertain_text(row: pd.Series, column: str) -> str | None:
    """``column``'s value in ``row`` with ± 1.96 standard errors and its item count when the
    store holds them: ``0.412 ± 0.043 (n=500)``; None without a value."""
    value = _plain(row.get(column))
    if value is None:
        return None
    text = number(value)
    se = _plain(row.get(f"{column}_stderr"))
    if se is not None:
        text += f" ± {number(Z * se, 2)}"
    n = _plain(row.get(f"{column.split('/')[0]}/n"))
    if n is not None:
        text += f" (n={int(n)})"
    return text


def with_uncertainty(row: pd.Series, column: str) -> Cell | None:
    """``uncertain_text`` as a right-aligned table cell (None without a value)."""
    text = uncertain_text(row, column)
    return None if text is None else Cell(escape(text), True)


def _plain(value: object) -> object:
    """numpy scalars → Python numbers (so ``table`` formats them), NaN → None."""
    if value is None:
        return None
    try:
        number_value = float(value)
    except (TypeError, ValueError):
        return value
    return None if math.isnan(number_value) else number_value


SECTION_BUILDERS: list[SectionBuilder] = [
    summary_section,
    verdict_section,
    claims_section,
    recommendation_section,
    _figure_section("Learning and forgetting over training",
                    _main("learning_curves", "forgetting_curves")),
    _figure_section("The learning–forgetting trade-off", _main("tradeoff")),
    _figure_section("Learning-rate sensitivity", _main("lr_sensitivity")),
    _figure_section("Design choices", figs.EXTRA_FIGURES,
                    "Drawn when the study varies LoRA rank and target modules, regularises full "
                    "finetuning, or compares optimizers."),
    weights_section,
    diversity_section,
    _figure_section("Training loss", _main("training_loss")),
    runs_section,
    how_to_read_section,
]


# --- the report ---------------------------------------------------------------------------------
def _run_builder(builder: SectionBuilder, ctx: ReportContext) -> Section | None:
    try:
        return builder(ctx)
    except Exception as exc:  # one broken section must not cost the whole report
        name = getattr(builder, "__name__", "section").replace("_", " ")
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return Section(name, errors=[f"this section could not be built: {detail}"])


def build_report(judgement: StudyJudgement, builders: Sequence[SectionBuilder] | None = None,
                 index: Path | None = None) -> Path:
    """Write ``OUT/report/index.html`` of the judged study (OUT: ``judgement.out``), its figures
    and ``OUT/measurements.csv``; returns the path of the HTML page. ``builders`` defaults to
    ``SECTION_BUILDERS``. The page links back to ``index`` (the index of a multi-study run;
    default: OUT's parent's index.html when it exists)."""
    out, frame = judgement.out, judgement.frame
    if index is None and (out.parent / "index.html").is_file():
        index = out.parent / "index.html"
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    write_measurements_csv(out, frame)
    ctx = ReportContext(out, judgement, report_dir)
    sections = [s for b in (builders or SECTION_BUILDERS) if (s := _run_builder(b, ctx))]
    name = frame.study.name if frame.study else out.name
    target = (f"{frame.study.target.domain} {frame.study.target.regime.upper()}"
              if frame.study else "the target domain")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = (f"What each finetuning method learned on {target} and what it made the model "
                f"forget, measured against the base model. Generated {stamp}.")
    back = os.path.relpath(index, report_dir) if index is not None else None
    page = render_page(f"learnforget report: {name}", subtitle, sections, back)
    index = report_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
