"""PEFT methods beside LoRA and full finetuning: each method at its best LR, never a claim.

The paper's claims about "LoRA" are judged on LoRA only (``claim_data.is_paper_lora``); every
``kind: peft`` method (VeRA, IA³, LoHa, …) is compared here instead: its final learning and
forgetting at its best LR (mean over seeds with a standard error), the difference from full
finetuning and from LoRA with the verdict engine's error (``ClaimData.compare``: items resampled
jointly for both methods and the base, seeds resampled, best LRs cross-fitted — the same paired
error the claims read), its trainable parameters, the ΔW rank
for 90% of the energy and intruder dimensions (or "no ΔW" for prompt methods), its peak
memory and its training throughput.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from learnforget.analysis.best_lr import AtBestLR, final_rows, reference_label, usable
from learnforget.analysis.claim_data import ClaimData
from learnforget.analysis.estimates import Estimate, seed_mean
from learnforget.analysis.frame import Frame

COLUMNS = ["label", "name", "kind", "lr", "seeds",
           "learn", "learn_stderr", "forget", "forget_stderr",
           "learn_vs_full", "learn_vs_full_stderr", "forget_vs_full", "forget_vs_full_stderr",
           "learn_vs_lora", "learn_vs_lora_stderr", "forget_vs_lora", "forget_vs_lora_stderr",
           "trainable", "rank90", "intruders", "no_delta_w", "peak_memory_mb", "tokens_per_s"]


def _finals(frame: Frame, at_best: AtBestLR, label: str) -> pd.DataFrame:
    """The last checkpoint of each of ``label``'s usable runs at its best LR, by seed."""
    runs = set(at_best.run_ids().get(label, []))
    finals = usable(final_rows(frame))
    return finals[finals["run_id"].isin(runs)].set_index("seed")


def _estimate(rows: pd.DataFrame, column: str) -> Estimate:
    errors = rows.get(f"{column}_stderr", pd.Series(np.nan, index=rows.index))
    return seed_mean(list(rows[column]), list(errors))


def _mean(rows: pd.DataFrame, column: str) -> float:
    return float(rows[column].mean()) if column in rows and rows[column].notna().any() \
        else math.nan


def _lora_reference(frame: Frame, at_best: AtBestLR) -> str | None:
    """The LoRA label the PEFT methods are compared with: the most learning at its best LR."""
    kinds = frame.runs.drop_duplicates("label").set_index("label")["kind"]
    best = [(float(_finals(frame, at_best, label)["learn"].mean()), label)
            for label in at_best.best if kinds.get(label) == "lora"]
    best = [(value, label) for value, label in best if math.isfinite(value)]
    return max(best)[1] if best else None


def peft_comparison(frame: Frame) -> pd.DataFrame:
    """One row per method at its best LR (full finetuning's reference, the best LoRA, every
    PEFT method) with the columns of ``COLUMNS``; empty when the study has no ``kind: peft``
    method."""
    runs = frame.runs
    if runs.empty or not runs["kind"].eq("peft").any():
        return pd.DataFrame(columns=COLUMNS)
    at_best = AtBestLR(frame)
    full, lora = reference_label(frame), _lora_reference(frame, at_best)
    kinds = runs.drop_duplicates("label").set_index("label")["kind"]
    labels = [label for label in frame.labels if label in at_best.best
              and (kinds.get(label) == "peft" or label in (full, lora))]
    refs = {"full": full, "lora": lora}
    data = ClaimData(frame)
    peaks = (frame.train.groupby("run_id")["train/peak_memory_mb"].max()
             if "train/peak_memory_mb" in frame.train else pd.Series(dtype=float))
    speeds = (frame.train.groupby("run_id")["train/tokens_per_s"].mean()
              if "train/tokens_per_s" in frame.train else pd.Series(dtype=float))
    rows = []
    for label in labels:
        finals = _finals(frame, at_best, label)
        row: dict[str, object] = {"label": label, "name": frame.name(label),
                                  "kind": kinds.get(label), "lr": at_best.best[label],
                                  "seeds": len(finals)}
        for column in ("learn", "forget"):
            value = _estimate(finals, column)
            row[column], row[f"{column}_stderr"] = value.value, value.se
            for ref, ref_label in refs.items():
                if ref_label is None:
                    row[f"{column}_vs_{ref}"] = row[f"{column}_vs_{ref}_stderr"] = math.nan
                    continue
                paired = data.compare(label, ref_label, column)
                row[f"{column}_vs_{ref}"] = paired.value
                row[f"{column}_vs_{ref}_stderr"] = paired.se
        row["trainable"] = _mean(finals, "params/trainable")
        row["rank90"] = _mean(finals, "spectrum/rank90")
        row["intruders"] = _mean(finals, "spectrum/intruders")
        row["no_delta_w"] = _mean(finals, "spectrum/no_delta_w") == 1.0
        ids = list(finals["run_id"])
        row["peak_memory_mb"] = float(peaks.reindex(ids).max()) if ids else math.nan
        row["tokens_per_s"] = float(speeds.reindex(ids).mean()) if ids else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)
