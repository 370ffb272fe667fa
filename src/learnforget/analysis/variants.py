"""The LoRA runs that the claims are not judged on — other target sets, rsLoRA, DoRA, PiSSA and
other initialisations, other optimizers — set beside full finetuning and the paper's LoRA in one
table, so a study that tries variants still shows how each learned and forgot, apart from the
verdicts (``ClaimData.judged`` says which runs the verdicts use)."""

from __future__ import annotations

import math

import pandas as pd

from learnforget.analysis.claim_data import ClaimData
from learnforget.analysis.frame import Frame

VARIANT_COLUMNS = ["label", "name", "role", "best_lr", "tokens", "learn", "learn_stderr", "forget",
                   "forget_stderr", "learn_share", "forget_share", "rank90", "intruders"]


def variant_comparison(frame: Frame) -> pd.DataFrame:
    """One row per method at its best LR and last checkpoint: the full-FT reference, the LoRA
    runs the claims are judged on (``role`` "judged") and every other LoRA ("compared apart"),
    with learning and forgetting (± standard error), both as shares of full FT's, the ΔW rank90
    and intruders per matrix. Empty when the study has no LoRA left out of the verdicts."""
    s = ClaimData(frame)
    if not s.others():
        return pd.DataFrame(columns=VARIANT_COLUMNS)
    full_learn = s.value(s.ref, "learn") if s.ref else math.nan
    full_forget = s.value(s.ref, "forget") if s.ref else math.nan
    rows = []
    roles = ([(s.ref, "full-FT reference")] if s.ref else []) \
        + [(lab, "judged") for lab in s.judged()] + [(lab, "compared apart") for lab in s.others()]
    for label, role in roles:
        learn, forget = s.value(label, "learn"), s.value(label, "forget")
        final = s.final(label, "learn")
        rows.append({
            "label": label, "name": s.name(label), "role": role,
            "best_lr": s.best.get(label, math.nan),
            "tokens": float(final["tokens"]) if final is not None else math.nan,
            "learn": learn, "learn_stderr": s.error(label, "learn"),
            "forget": forget, "forget_stderr": s.error(label, "forget"),
            "learn_share": learn / full_learn if full_learn and full_learn > 0 else math.nan,
            "forget_share": forget / full_forget if full_forget and full_forget > 0
            else math.nan,
            "rank90": s.value(label, "spectrum/rank90"),
            "intruders": s.value(label, "spectrum/intruders"),
        })
    return pd.DataFrame(rows, columns=VARIANT_COLUMNS)
