"""The report's comparison of PEFT methods with LoRA and full finetuning (built from
``analysis.peft_comparison``: a table, not a claim)."""

from __future__ import annotations

import math

from learnforget.analysis.comparison import Z
from learnforget.analysis.peft_comparison import peft_comparison
from learnforget.report.context import ReportContext
from learnforget.report.html import Cell, Section, escape, number, paragraph, table

INTRO = (
    "Every PEFT method of the study beside full finetuning and the LoRA that learned most, each "
    "at its best learning rate, at its last checkpoint. The paper's claims above are judged on "
    "LoRA only; these methods are never counted as LoRA. Values are means over seeds ± 1.96 "
    "standard errors; a difference is paired by seed (each seed's difference, its item errors "
    "added in quadrature — conservative, as both runs score the same items). Learning: higher "
    "is more learned; forgetting: higher is more forgotten. ΔW rank: median rank holding 90% "
    "of the update's energy, from the merged weights; prompt and prefix tuning change no "
    "weight: no ΔW.")


def _with_error(value: object, se: object) -> Cell | None:
    value, se = float(value), float(se)  # type: ignore[arg-type]
    if math.isnan(value):
        return None
    text = number(value)
    if not math.isnan(se):
        text += f" ± {number(Z * se, 2)}"
    return Cell(escape(text), True)


def _count(value: object) -> int | None:
    value = float(value)  # type: ignore[arg-type]
    return None if math.isnan(value) else round(value)


def peft_section(ctx: ReportContext) -> Section | None:
    """"PEFT methods beside LoRA": one row per method at its best LR; none without a
    ``kind: peft`` method in the study."""
    rows = peft_comparison(ctx.frame)
    if rows.empty:
        return None
    headers = ["method", "LR", "seeds", "learning", "forgetting", "learning − full",
               "forgetting − full", "learning − LoRA", "forgetting − LoRA",
               "trainable parameters", "ΔW rank90", "intruders", "peak memory (MiB)",
               "tokens/s"]
    body = []
    for row in rows.itertuples():
        versus = []
        for ref in ("full", "lora"):
            own = row.kind == ref
            for column in ("learn", "forget"):
                versus.append(None if own else _with_error(
                    getattr(row, f"{column}_vs_{ref}"), getattr(row, f"{column}_vs_{ref}_stderr")))
        no_delta_w = bool(row.no_delta_w)
        body.append([
            row.name, Cell(number(row.lr, 3), True), int(row.seeds),
            _with_error(row.learn, row.learn_stderr), _with_error(row.forget, row.forget_stderr),
            *versus, _count(row.trainable),
            "no ΔW" if no_delta_w else _with_error(row.rank90, math.nan),
            "no ΔW" if no_delta_w else _with_error(row.intruders, math.nan),
            _count(row.peak_memory_mb), _count(row.tokens_per_s)])
    return Section("PEFT methods beside LoRA", paragraph(INTRO) + table(headers, body))
