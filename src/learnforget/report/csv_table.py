"""``OUT/measurements.csv``: every stored number in one long table, each row with its study, its
run's structured settings, its unit, standard error and item count.

One row per (run, step, task, metric) of the store, with ``<metric>_stderr`` and ``n`` folded
into the ``stderr`` and ``n`` columns of the metric they belong to, plus the derived ``learn``,
``forget`` (and ``forget_mean``) of each checkpoint as task ``derived``, whose ``derived_from``
names the task metrics they are computed from.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from learnforget.analysis.frame import Frame
from learnforget.analysis.method_names import METHOD_COLUMNS
from learnforget.store import Store

SETTINGS = [c for c in METHOD_COLUMNS if c != "kind"]
CSV_COLUMNS = ["study", "run_id", "label", "method", *SETTINGS, "lr", "seed", "status", "step",
               "tokens", "task", "metric", "value", "stderr", "n", "unit", "derived_from"]
DERIVED = ("learn", "forget", "forget_mean")
INTEGER_COLUMNS = ("r", "seed", "step", "tokens", "n")
STDERR = "_stderr"
COUNT = "n"
UNITS = {  # metric (without _delta) → unit
    "bpb": "bits/byte", "acc": "fraction", "acc_norm": "fraction",
    "exact_match_strict": "fraction", "exact_match_flexible": "fraction",
    "majority_baseline": "fraction", "loss": "nats/token", "lr": "learning rate",
    "tokens_per_s": "tokens/s", "rank90": "directions", "rank90_sigma": "directions",
    "random_rank90": "directions", "intruders": "directions per matrix",
    "mean_distinct": "samples per prompt", "prompts": "count", "samples": "count",
    "matrices_changed": "count", "trainable": "parameters", "total": "parameters",
}


def unit_of(task: str, metric: str) -> str:
    """The unit of a stored ``task/metric`` (empty when it is a plain ratio or unknown)."""
    base = metric.removesuffix("_delta")
    if base.startswith("pass@"):
        return "fraction"
    for suffix in ("_attention", "_mlp"):
        base = base.removesuffix(suffix)
    if base.startswith("rank90_ratio"):
        return "share of a random matrix's rank90"
    return UNITS.get(base, "")


def _derived_sources(frame: Frame) -> dict[str, str]:
    """What each derived score is computed from, e.g. ``{"learn": "code_bpb/bpb"}``."""
    sources: dict[str, str] = {}
    if frame.learning:
        sources["learn"] = frame.learning[0].column
    if frame.forget_mean_tasks:
        columns = [o.column for o in frame.forgetting if o.task in frame.forget_mean_tasks]
        sources["forget_mean"] = "mean of " + ", ".join(columns)
    if frame.forgetting:
        first = frame.forgetting[0]
        sources["forget"] = sources.get("forget_mean", first.column) \
            if first.higher_is_better and frame.forget_mean_tasks else first.column
    return sources


def _derived_unit(frame: Frame, name: str) -> str:
    orientation = (frame.learning or [None])[0] if name == "learn" else \
        (frame.forgetting or [None])[0]
    if orientation is None:
        return ""
    return unit_of(orientation.task, orientation.metric)


def measurement_table(out: Path, frame: Frame) -> pd.DataFrame:
    """The rows of ``measurements.csv`` (see the module docstring), sorted by run, step, task
    and metric."""
    store = Store(out / "results.sqlite")
    try:
        rows = pd.DataFrame(store.measurements(),
                            columns=["run_id", "step", "tokens", "task", "metric", "value"])
    finally:
        store.close()
    keys = ["run_id", "step", "task"]
    is_error = rows["metric"].str.endswith(STDERR)
    is_count = rows["metric"].eq(COUNT)
    errors = rows[is_error].assign(metric=rows.loc[is_error, "metric"].str.removesuffix(STDERR))
    errors = errors.rename(columns={"value": "stderr"})[[*keys, "metric", "stderr"]]
    counts = rows[is_count].rename(columns={"value": "n"})[[*keys, "n"]]
    values = rows[~is_error & ~is_count]
    values = values.merge(errors, on=[*keys, "metric"], how="left")
    values = values.merge(counts, on=keys, how="left")
    values["unit"] = [unit_of(t, m) for t, m in zip(values["task"], values["metric"], strict=True)]

    cp = pd.concat([frame.checkpoints, frame.base.to_frame().T], ignore_index=True)
    sources = _derived_sources(frame)
    derived = []
    for name in DERIVED:
        if name not in cp:
            continue
        stderr_column = name + STDERR
        se = cp[stderr_column] if stderr_column in cp else pd.Series(float("nan"), index=cp.index)
        derived.append(pd.DataFrame({
            "run_id": cp["run_id"], "step": cp["step"], "tokens": cp["tokens"],
            "task": "derived", "metric": name, "value": cp[name], "stderr": se,
            "unit": _derived_unit(frame, name), "derived_from": sources.get(name, "")}))
    table = pd.concat([values, *derived], ignore_index=True)

    runs = frame.runs.rename(columns={"kind": "method"})
    table = table.merge(runs[["run_id", "label", "method", *SETTINGS, "lr", "seed", "status"]],
                        on="run_id", how="left")
    is_base = table["label"].isna()
    table.loc[is_base, ["label", "method", "status"]] = ["base", "base", "finished"]
    table["study"] = frame.study.name if frame.study else out.name
    for column in INTEGER_COLUMNS:
        table[column] = pd.to_numeric(table[column], errors="coerce").round().astype("Int64")
    table = table.sort_values(["run_id", "step", "task", "metric"], kind="stable")
    columns = CSV_COLUMNS if table["peft"].notna().any() else \
        [c for c in CSV_COLUMNS if c != "peft"]  # a study without PEFT methods: as before
    return table.reindex(columns=columns).reset_index(drop=True)


def write_measurements_csv(out: Path, frame: Frame) -> Path:
    """Write ``OUT/measurements.csv`` (see ``measurement_table``); returns its path."""
    path = Path(out) / "measurements.csv"
    measurement_table(Path(out), frame).to_csv(path, index=False)
    return path
