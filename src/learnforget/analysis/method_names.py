"""Naming methods: a run's settings as structured columns (``METHOD_COLUMNS``), the readable
name built from them (``method_name``, never parsed from a label) and the display order of
method labels (full finetuning first, then LoRA by targets and rank)."""

from __future__ import annotations

import math

import pandas as pd

# A run's settings as structured columns, straight from its stored config (never parsed from
# the label): the method's kind and every field that tells one method from another.
METHOD_COLUMNS = ["kind", "r", "alpha", "targets", "init", "use_rslora", "use_dora", "dropout",
                  "weight_decay", "attention_dropout", "train_embeddings", "optimizer"]
TARGET_ORDER = {"attention": 0, "mlp": 1, "all": 2}


def method_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per label with the method's settings (``METHOD_COLUMNS``) and ``name``."""
    if runs.empty:
        return pd.DataFrame(columns=[*METHOD_COLUMNS, "name"])
    table = runs.drop_duplicates("label").set_index("label")[METHOD_COLUMNS].copy()
    table["name"] = [method_name(row) for row in table.itertuples()]
    return table


def is_set(value: object) -> bool:
    """A setting that is present (not None / NaN / NA)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value)) \
        and value is not pd.NA


def method_name(method) -> str:
    """A readable method name from its settings (a row or any object with ``METHOD_COLUMNS``
    attributes): ``LoRA r=8 (all)``, ``LoRA r=64 (mlp, DoRA, Lion)``, ``full finetuning
    (frozen embeddings, weight decay 0.1)``."""
    extras: list[str] = []
    if method.kind == "lora":
        r = int(method.r) if is_set(method.r) else "?"
        name = f"LoRA r={r}"
        extras.append(str(method.targets))
        if is_set(method.alpha) and is_set(method.r) and float(method.alpha) != 2 * int(r):
            extras.append(f"α={float(method.alpha):g}")
        if method.use_rslora is True:
            extras.append("rsLoRA")
        if method.use_dora is True:
            extras.append("DoRA")
        if is_set(method.init) and method.init != "default":
            extras.append(f"{method.init} init")
        if is_set(method.dropout) and float(method.dropout) > 0:
            extras.append(f"dropout {float(method.dropout):g}")
        if is_set(method.weight_decay) and float(method.weight_decay) > 0:
            extras.append(f"weight decay {float(method.weight_decay):g}")
    elif method.kind == "full":
        name = "full finetuning"
        if method.train_embeddings is False:
            extras.append("frozen embeddings")
        if is_set(method.weight_decay) and float(method.weight_decay) > 0:
            extras.append(f"weight decay {float(method.weight_decay):g}")
        if is_set(method.attention_dropout) and float(method.attention_dropout) > 0:
            extras.append(f"attention dropout {float(method.attention_dropout):g}")
    else:
        name = str(method.kind)
    if method.optimizer == "lion":
        extras.append("Lion")
    return f"{name} ({', '.join(extras)})" if extras else name


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
