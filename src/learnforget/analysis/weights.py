"""The weight and generation data the report shows, read from a study's store and folded per
method at its best learning rate.

The runner stores each checkpoint's per-matrix ΔW spectra as artifacts (kind ``spectrum``: one
``MatrixSpectrum.to_dict()`` per changed matrix) and a few sampled generations (kind
``diversity_samples``); the ``spectrum/*`` and ``diversity/*`` summaries are columns of the
``Frame``. ``load_weights`` reads what the report and the claims need, once: the spectra of each
method's best-LR runs, the final diversity of each method and the first samples of one prompt.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from learnforget.analysis.best_lr import AtBestLR
from learnforget.analysis.frame import Frame
from learnforget.measure.intruders import DEFAULT_EPS_VALUES
from learnforget.store import Store

Spectra = dict[str, dict[int, list[list[dict]]]]  # label → step → one matrix list per seed
DIVERSITY = ["diversity/mean_distinct", "diversity/mean_pairwise_similarity",
             "diversity/distinct_fraction", "diversity/distinct_2", "diversity/samples",
             "diversity/prompts"]
SPECTRUM_SUMMARIES = ["rank90", "rank90_attention", "rank90_mlp", "random_rank90", "intruders",
                      "delta_fro_norm", "matrices_changed"]  # the ``spectrum/*`` shown per method
# The matrix whose spectrum the report draws: a middle layer's, MLP down/up/gate first.
SHOWN_MATRIX = ["down_proj", "up_proj", "gate_proj", "o_proj", "v_proj", "q_proj", "k_proj"]


@dataclass(frozen=True)
class StudyWeights:
    """What a study's store holds about its weights and generations, each method at its best
    LR: the raw ``spectrum`` artifacts of the best-LR runs (``records``, what the claims read),
    the same grouped by label and step (``spectra``), the final diversity per method
    (``diversity``, base model first) and the first samples of the first prompt per method
    (``samples``)."""

    records: list[dict] = field(default_factory=list)
    spectra: Spectra = field(default_factory=dict)
    diversity: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DIVERSITY))
    samples: dict[str, list[str]] = field(default_factory=dict)


def load_artifacts(out: Path, kind: str, run_ids: Collection[str] | None = None) -> list[dict]:
    """The store's artifacts of ``kind`` (``[{run_id, step, data}]``), only those of ``run_ids``
    when given."""
    store = Store(Path(out) / "results.sqlite")
    try:
        records = store.artifacts(kind)
    finally:
        store.close()
    return records if run_ids is None else [r for r in records if r["run_id"] in set(run_ids)]


def load_weights(out: Path, at_best: AtBestLR) -> StudyWeights:
    """The spectra, diversity and samples of each method at its best LR (``StudyWeights``)."""
    run_ids = at_best.run_ids()
    records = load_artifacts(out, "spectrum", {i for ids in run_ids.values() for i in ids})
    return StudyWeights(records, best_spectra(at_best, records), diversity_table(at_best),
                        first_samples(out, at_best))


def best_spectra(at_best: AtBestLR, records: list[dict]) -> Spectra:
    """Spectrum artifacts of each label's best-LR runs, by label and step (labels in display
    order; labels without artifacts left out)."""
    owner = {run_id: label for label, ids in at_best.run_ids().items() for run_id in ids}
    spectra: Spectra = {}
    for record in records:
        label = owner.get(record["run_id"])
        if label is not None and record["data"]:
            spectra.setdefault(label, {}).setdefault(int(record["step"]), []).append(
                record["data"])
    return {label: spectra[label] for label in at_best.frame.labels if label in spectra}


def final_spectra(spectra: Spectra, label: str) -> tuple[int, list[list[dict]]]:
    """(the last step, its matrix list per seed) of ``label``'s spectra."""
    step = max(spectra[label])
    return step, spectra[label][step]


def tokens_at(frame: Frame, label: str, step: int) -> float:
    """The training tokens of ``label``'s checkpoints at ``step`` (NaN when none)."""
    cp = frame.checkpoints
    rows = cp.loc[(cp["label"] == label) & (cp["step"] == step), "tokens"]
    return float(rows.max()) if len(rows) else math.nan


def best_curve(at_best: AtBestLR, label: str, columns: list[str]) -> pd.DataFrame:
    """``columns`` of ``label``'s best-LR checkpoints, averaged over seeds per step (the curve
    the claims checklist reads)."""
    return at_best.curve(label).reindex(columns=["step", "tokens", *columns])


def final_summaries(at_best: AtBestLR) -> list[tuple[str, pd.Series]]:
    """Each method's last best-LR checkpoint holding a ΔW rank90 (step, tokens and the
    ``spectrum/*`` summaries of ``SPECTRUM_SUMMARIES``, mean over seeds), in display order."""
    columns = [f"spectrum/{c}" for c in SPECTRUM_SUMMARIES]
    finals = []
    for label in at_best.frame.labels:
        curve = best_curve(at_best, label, columns).dropna(subset=["spectrum/rank90"])
        if not curve.empty:
            finals.append((label, curve.iloc[-1]))
    return finals


def rank_grid(seeds: list[list[dict]]) -> tuple[pd.DataFrame, dict[str, float]]:
    """(rank90 per layer × module, averaged over the seeds' matrix lists; the random baseline's
    rank90 per module). Matrices without a layer index are left out."""
    rows = pd.DataFrame([m for matrices in seeds for m in matrices],
                        columns=["layer", "module", "rank90", "random_rank90"])
    rows = rows.dropna(subset=["layer"]).astype({"layer": int})
    if rows.empty:
        return pd.DataFrame(), {}
    grid = rows.groupby(["layer", "module"])["rank90"].mean().unstack()
    return grid, rows.groupby("module")["random_rank90"].first().astype(float).to_dict()


def intruder_counts(seeds: list[list[dict]],
                    eps_values: Sequence[float] = DEFAULT_EPS_VALUES) -> list[float]:
    """Mean intruders per matrix at each ε, from the stored similarities (``max_similarity``:
    for each top-k direction of W_tuned its largest |cos| with W_base's; an intruder below ε).
    Empty when no matrix holds similarities."""
    sims = [m["max_similarity"] for matrices in seeds for m in matrices if m.get("max_similarity")]
    if not sims:
        return []
    return [float(np.mean([sum(v < eps for v in row) for row in sims])) for eps in eps_values]


def shown_matrix(spectra: Spectra) -> dict | None:
    """A middle layer's matrix of the first method (MLP down/up/gate first, ``SHOWN_MATRIX``)."""
    _, seeds = final_spectra(spectra, next(iter(spectra)))
    matrices = [m for m in seeds[0] if m.get("singular_values")]
    for module in SHOWN_MATRIX:
        found = sorted((m for m in matrices if m["module"] == module and m["layer"] is not None),
                       key=lambda m: m["layer"])
        if found:
            return found[len(found) // 2]
    return matrices[0] if matrices else None


def diversity_table(at_best: AtBestLR) -> pd.DataFrame:
    """Final diversity of each method at its best LR (mean over seeds), base model first; one
    row per label with the ``diversity/*`` columns, indexed by label."""
    frame = at_best.frame
    rows = {}
    if "diversity/mean_distinct" in frame.base and pd.notna(frame.base["diversity/mean_distinct"]):
        rows["base"] = frame.base.reindex(DIVERSITY).astype(float)
    for label in frame.labels:
        curve = best_curve(at_best, label, DIVERSITY).dropna(subset=[DIVERSITY[0]])
        if not curve.empty:
            rows[label] = curve.iloc[-1][DIVERSITY].astype(float)
    return pd.DataFrame.from_dict(rows, orient="index", columns=DIVERSITY)


def first_samples(out: Path, at_best: AtBestLR) -> dict[str, list[str]]:
    """The samples of the first prompt at the last step of one best-LR run (the first seed's)
    of each method, in display order; methods without samples left out."""
    first = {run_ids[0]: label for label, run_ids in at_best.run_ids().items() if run_ids}
    records = load_artifacts(out, "diversity_samples", set(first))
    latest = {r["run_id"]: r for r in sorted(records, key=lambda r: r["step"])}
    samples = {}
    for label in at_best.frame.labels:
        record = next((r for run_id, r in latest.items() if first.get(run_id) == label), None)
        if record is not None and record["data"] and record["data"][0]:
            samples[label] = list(record["data"][0])
    return samples
