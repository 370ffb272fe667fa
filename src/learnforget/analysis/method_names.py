"""Naming methods: a run's typed method read back from its stored config (``stored_method``),
its settings as structured columns (``METHOD_COLUMNS``), the readable name rendered from the
typed method (``plan.method_name``, never parsed from a label) and the display order of method
labels (full finetuning first, then LoRA by targets and rank)."""

from __future__ import annotations

import math

import pandas as pd
from pydantic import ValidationError

from learnforget.plan import MethodConfig, method_name

# A run's settings as structured columns, straight from its stored config (never parsed from
# the label): every field of the method's identity (``MethodConfig``) but the LR, which is a
# column of its own, and the optimizer.
METHOD_COLUMNS = [*(name for name in MethodConfig.model_fields if name != "lr"), "optimizer"]
TARGET_ORDER = {"attention": 0, "mlp": 1, "all": 2}


def stored_method(config: dict) -> MethodConfig | None:
    """The method of a run's stored config as the typed value ``plan`` made it from; None when
    the config holds no method or one that is not a valid method setting (fields a later
    version added are left out)."""
    method = config.get("method")
    if not isinstance(method, dict) or not method:
        return None
    known = {key: value for key, value in method.items() if key in MethodConfig.model_fields}
    try:
        return MethodConfig.model_validate(known)
    except ValidationError:
        return None


def method_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per label with the method's settings (``METHOD_COLUMNS``) and ``name``, rendered
    from the typed method (``plan.method_name``)."""
    if runs.empty:
        return pd.DataFrame(columns=[*METHOD_COLUMNS, "name"])
    first = runs.drop_duplicates("label").set_index("label")
    table = first[METHOD_COLUMNS].copy()
    table["name"] = [
        method_name(method, optimizer) if isinstance(method, MethodConfig) else str(kind)
        for method, optimizer, kind in zip(first["method_config"], first["optimizer"],
                                           first["kind"], strict=True)]
    return table


def is_set(value: object) -> bool:
    """A setting that is present (not None / NaN / NA)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value)) \
        and value is not pd.NA


def sort_labels(runs: pd.DataFrame) -> list[str]:
    """Labels ordered full finetuning first, then LoRA by targets and rank, then the rest."""
    if runs.empty:
        return []
    first = runs.drop_duplicates("label").set_index("label")

    def key(label: str) -> tuple:
        row = first.loc[label]
        kind_rank = {"full": 0, "lora": 1}.get(str(row["kind"]), 2)
        r = row["r"] if pd.notna(row["r"]) else 0
        targets = TARGET_ORDER.get(str(row["targets"]), 9)
        return (kind_rank, str(row["optimizer"]) != "adamw", targets, r, label)

    return sorted(first.index, key=key)
