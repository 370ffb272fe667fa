"""The report's "How the weights moved" and "Generation diversity" sections and their figures.

Figures read the per-matrix ΔW spectra the runner stores as artifacts (kind ``spectrum``: one
``MatrixSpectrum.to_dict()`` per changed matrix and checkpoint) and the ``spectrum/*`` and
``diversity/*`` summaries of the ``Frame``. Each method is shown at its best learning rate
(``best_lrs``), averaged over seeds. Like ``figures.py``, every figure is a 150-dpi PNG drawn with
matplotlib's object API and raises ``FigureSkipped`` when the study has no data for it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from learnforget.analysis.claim_data import ClaimData
from learnforget.analysis.frame import Frame, best_lrs, usable
from learnforget.measure.intruders import DEFAULT_EPS_VALUES
from learnforget.measure.spectrum import random_singular_values
from learnforget.report.figures import (
    DPI,
    FigureSpec,
    label_colors,
    require,
    save_figure,
)
from learnforget.report.html import Section, escape, paragraph, table
from learnforget.store import Store

if TYPE_CHECKING:  # build.py imports this module, so the context is only a type here
    from learnforget.report.build import ReportContext

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHOWN_MATRIX = ["down_proj", "up_proj", "gate_proj", "o_proj", "v_proj", "q_proj", "k_proj"]
MAX_PANELS = 6  # heatmap panels: full finetuning first, then the other methods
FLOOR = 1e-4  # the spectrum figure cuts singular values below this share of the largest
TOKENS = "training tokens"
Spectra = dict[str, dict[int, list[list[dict]]]]  # label → step → one matrix list per seed


# --- data ---------------------------------------------------------------------------------------
def load_artifacts(out: Path, kind: str, run_ids: Collection[str] | None = None) -> list[dict]:
    """The store's artifacts of ``kind`` (``[{run_id, step, data}]``), only those of ``run_ids``
    when given."""
    store = Store(Path(out) / "results.sqlite")
    try:
        records = store.artifacts(kind)
    finally:
        store.close()
    return records if run_ids is None else [r for r in records if r["run_id"] in set(run_ids)]


def best_run_ids(frame: Frame) -> dict[str, list[str]]:
    """The usable runs of each label at its best learning rate (one per seed)."""
    runs, best = usable(frame.runs), best_lrs(frame)
    return {label: list(runs.loc[(runs["label"] == label)
                                 & np.isclose(runs["lr"].astype(float), lr), "run_id"])
            for label, lr in best.items()}


def best_spectra(frame: Frame, records: list[dict]) -> Spectra:
    """Spectrum artifacts of each label's best-LR runs, by label and step (labels in display
    order; labels without artifacts left out)."""
    owner = {run_id: label for label, ids in best_run_ids(frame).items() for run_id in ids}
    spectra: Spectra = {}
    for record in records:
        label = owner.get(record["run_id"])
        if label is not None and record["data"]:
            spectra.setdefault(label, {}).setdefault(int(record["step"]), []).append(
                record["data"])
    return {label: spectra[label] for label in frame.labels if label in spectra}


def _final(spectra: Spectra, label: str) -> tuple[int, list[list[dict]]]:
    step = max(spectra[label])
    return step, spectra[label][step]


def _tokens_at(frame: Frame, label: str, step: int) -> float:
    cp = frame.checkpoints
    rows = cp.loc[(cp["label"] == label) & (cp["step"] == step), "tokens"]
    return float(rows.max()) if len(rows) else math.nan


def _best_curve(frame: Frame, label: str, columns: list[str]) -> pd.DataFrame:
    """``columns`` of ``label``'s best-LR checkpoints, averaged over seeds per step (the curve
    the claims checklist reads)."""
    return ClaimData(frame).curve(label).reindex(columns=["step", "tokens", *columns])


# --- figure helpers -----------------------------------------------------------------------------
def _figure(ncols: int, width: float, height: float = 4.6) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(width * ncols, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, list(figure.subplots(1, ncols, squeeze=False)[0])


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


# --- ΔW figures -----------------------------------------------------------------------------------
def spectrum_heatmap(frame: Frame, out_dir: Path, spectra: Spectra) -> Path:
    """rank90 of ΔW per layer × module type, one panel per method at its best LR and final
    checkpoint (the paper's SVD summary), with the random baseline under each module name."""
    require(bool(spectra), "no ΔW spectrum was stored for a best-LR run")
    grids, randoms = {}, {}
    for label in list(spectra)[:MAX_PANELS]:
        step, seeds = _final(spectra, label)
        grid, random = rank_grid(seeds)
        if not grid.empty:
            grids[(label, step)] = grid
            randoms.update(random)
    require(bool(grids), "the stored spectra name no layer")
    modules = [m for m in MODULES if m in randoms] + sorted(set(randoms) - set(MODULES))
    layers = sorted({int(layer) for grid in grids.values() for layer in grid.index})
    figure, axes = _figure(len(grids), 3.4 if len(modules) > 4 else 2.6,
                           min(12.0, 1.9 + 0.32 * len(layers)))
    vmax = max(float(np.nanmax(grid.to_numpy())) for grid in grids.values()) or 1.0
    norm = Normalize(0, vmax)
    image = None
    for ax, ((label, step), grid) in zip(axes, grids.items(), strict=True):
        values = grid.reindex(index=layers, columns=modules).to_numpy(dtype=float)
        image = ax.imshow(values, cmap="viridis", norm=norm, aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            if math.isfinite(value):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if value < 0.6 * vmax else "black")
        ax.set_xticks(range(len(modules)),
                      [f"{m.removesuffix('_proj')}\n({randoms[m]:.0f})" for m in modules],
                      fontsize=6)
        ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=6)
        ax.set_title(f"{frame.name(label)}\n{_tokens_label(frame, label, step)}", fontsize=8)
        ax.set_xlabel("module (random matrix's rank90)", fontsize=7)
    axes[0].set_ylabel("layer")
    figure.colorbar(image, ax=axes, label="ΔW rank for 90% of Σσ²", shrink=0.8)
    return save_figure(figure, out_dir, "spectrum_heatmap")


def _tokens_label(frame: Frame, label: str, step: int) -> str:
    tokens = _tokens_at(frame, label, step)
    return f"step {step}" if math.isnan(tokens) else f"{tokens:,.0f} tokens"


def rank_over_tokens(frame: Frame, out_dir: Path) -> Path:
    """Median ΔW rank90 over attention and over MLP matrices vs training tokens, per method at
    its best LR, with each group's random baseline dashed."""
    groups = [(g, f"spectrum/rank90_{g}") for g in ("attention", "mlp")
              if f"spectrum/rank90_{g}" in frame.checkpoints]
    if not groups and "spectrum/rank90" in frame.checkpoints:
        groups = [("all", "spectrum/rank90")]
    require(bool(groups), "no ΔW rank90 was measured")
    colors = label_colors(frame.labels)
    figure, axes = _figure(len(groups), 5.4)
    drawn = False
    for ax, (group, column) in zip(axes, groups, strict=True):
        random_column = column.replace("rank90", "random_rank90")
        for label in frame.labels:
            curve = _best_curve(frame, label, [column]).dropna(subset=[column])
            if curve.empty:
                continue
            drawn = True
            ax.plot(curve["tokens"], curve[column], marker="o", color=colors[label],
                    label=frame.name(label))
        if random_column in frame.checkpoints and frame.checkpoints[random_column].notna().any():
            ax.axhline(float(frame.checkpoints[random_column].max()), color="grey", ls="--",
                       label="random matrix of the same shape")
        ax.set_title(f"ΔW rank90, {group} matrices (median)")
        ax.set_xlabel(TOKENS)
        ax.set_ylabel("directions for 90% of Σσ²")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    require(drawn, "no best-LR checkpoint has a ΔW rank90")
    axes[0].legend(fontsize=7)
    return save_figure(figure, out_dir, "rank_over_tokens")


def _shown_matrix(spectra: Spectra) -> dict | None:
    """A middle layer's matrix of the first method (MLP down/up/gate first)."""
    _, seeds = _final(spectra, next(iter(spectra)))
    matrices = [m for m in seeds[0] if m.get("singular_values")]
    for module in SHOWN_MATRIX:
        found = sorted((m for m in matrices if m["module"] == module and m["layer"] is not None),
                       key=lambda m: m["layer"])
        if found:
            return found[len(found) // 2]
    return matrices[0] if matrices else None


def matrix_spectrum(frame: Frame, out_dir: Path, spectra: Spectra) -> Path:
    """Singular values of ΔW of one matrix (each divided by its largest) for every method,
    beside W_base's and a random matrix's of the same shape, log scale."""
    require(bool(spectra), "no ΔW spectrum was stored for a best-LR run")
    shown = _shown_matrix(spectra)
    require(shown is not None, "the stored spectra hold no singular values")
    colors = label_colors(frame.labels)
    figure, (ax,) = _figure(1, 7.2)
    for label in spectra:
        _, seeds = _final(spectra, label)
        matrix = next((m for m in seeds[0] if m["name"] == shown["name"]), None)
        if matrix is None or not matrix.get("singular_values") or not matrix["singular_values"][0]:
            continue
        values = np.asarray(matrix["singular_values"]) / matrix["singular_values"][0]
        index = np.arange(1, len(values) + 1)
        ax.plot(index, values, color=colors[label], label=f"ΔW {frame.name(label)}")
        k = int(matrix["rank90"])
        if 1 <= k <= len(values):
            ax.scatter([k], [values[k - 1]], color=colors[label], edgecolors="black", zorder=3)
    base = shown.get("base_singular_values") or []
    if base and base[0]:
        ax.plot(np.arange(1, len(base) + 1), np.asarray(base) / base[0], color="black",
                label="W_base")
    rand = random_singular_values(tuple(shown["shape"]))[:len(shown["singular_values"])].numpy()
    ax.plot(np.arange(1, len(rand) + 1), rand / rand[0], color="grey", ls="--",
            label="random matrix, same shape")
    ax.set_yscale("log")
    ax.set_ylim(FLOOR, 1.5)
    ax.set_xlabel("singular value index (largest first)")
    ax.set_ylabel("σ_i / σ_1")
    ax.set_title(f"Spectrum of {shown['name']} {tuple(shown['shape'])} (● = rank90)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(figure, out_dir, "matrix_spectrum")


def intruder_figure(frame: Frame, out_dir: Path, spectra: Spectra) -> Path:
    """Intruder dimensions per matrix: against ε at the final checkpoint (from the stored
    similarities) and against training tokens at ε = 0.5 (``spectrum/intruders``)."""
    colors = label_colors(frame.labels)
    figure, axes = _figure(2, 5.4)
    swept = over_time = False
    for label in spectra:
        counts = intruder_counts(_final(spectra, label)[1])
        if counts:
            swept = True
            axes[0].plot(DEFAULT_EPS_VALUES, counts, marker="o", color=colors[label],
                         label=frame.name(label))
    for label in frame.labels:
        curve = _best_curve(frame, label, ["spectrum/intruders"]).dropna()
        if not curve.empty:
            over_time = True
            axes[1].plot(curve["tokens"], curve["spectrum/intruders"], marker="o",
                         color=colors[label], label=frame.name(label))
    require(swept or over_time, "no intruder similarities or counts were stored")
    axes[0].axvline(0.5, color="grey", ls=":", label="ε = 0.5 (the usual threshold)")
    axes[0].set_xlabel("ε (a top-10 direction is an intruder when its best |cos| with W_base's "
                       "directions is below ε)", fontsize=7)
    axes[0].set_ylabel("intruders per matrix (mean)")
    axes[0].set_title("Intruders vs ε, final checkpoint")
    axes[1].set_xlabel(TOKENS)
    axes[1].set_ylabel("intruders per matrix at ε = 0.5 (mean)")
    axes[1].set_title("Intruders over training")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    return save_figure(figure, out_dir, "intruders")


# --- diversity figure ----------------------------------------------------------------------------
DIVERSITY = ["diversity/mean_distinct", "diversity/mean_pairwise_similarity",
             "diversity/distinct_fraction", "diversity/distinct_2", "diversity/samples",
             "diversity/prompts"]


def diversity_table(frame: Frame) -> pd.DataFrame:
    """Final diversity of each method at its best LR (mean over seeds), base model first; one
    row per label with the ``diversity/*`` columns, indexed by label."""
    rows = {}
    if "diversity/mean_distinct" in frame.base and pd.notna(frame.base["diversity/mean_distinct"]):
        rows["base"] = frame.base.reindex(DIVERSITY).astype(float)
    for label in frame.labels:
        curve = _best_curve(frame, label, DIVERSITY).dropna(subset=[DIVERSITY[0]])
        if not curve.empty:
            rows[label] = curve.iloc[-1][DIVERSITY].astype(float)
    return pd.DataFrame.from_dict(rows, orient="index", columns=DIVERSITY)


def diversity_figure(frame: Frame, out_dir: Path) -> Path:
    """Mean distinct samples per prompt and mean pairwise similarity per method (bars)."""
    data = diversity_table(frame)
    require(not data.empty, "diversity was not measured (evaluation.diversity: true)")
    colors = {**label_colors(frame.labels), "base": (0.5, 0.5, 0.5, 1.0)}
    names = ["base model" if lab == "base" else frame.name(lab) for lab in data.index]
    figure, axes = _figure(2, 5.0)
    x = np.arange(len(data))
    for ax, column, title in (
        (axes[0], "diversity/mean_distinct", "Distinct samples per prompt (higher = more diverse)"),
        (axes[1], "diversity/mean_pairwise_similarity",
         "Mean similarity of two samples (lower = more diverse)"),
    ):
        ax.bar(x, data[column], color=[colors[lab] for lab in data.index], edgecolor="black")
        ax.set_xticks(x, names, rotation=25, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    per_prompt = (data["diversity/samples"] / data["diversity/prompts"]).max()
    if math.isfinite(per_prompt):
        axes[0].axhline(per_prompt, color="black", ls="--", lw=1)
        axes[0].text(-0.4, per_prompt, f"all {per_prompt:.0f} samples distinct", fontsize=7,
                     va="bottom")
        axes[0].set_ylim(0, per_prompt * 1.12)
    axes[1].set_ylim(0, 1)
    return save_figure(figure, out_dir, "diversity")


# --- sections -----------------------------------------------------------------------------------
WEIGHTS_INTRO = (
    "ΔW = W_finetuned − W_base for every weight matrix finetuning changed (embeddings and the LM "
    "head left out). rank90 is the number of singular directions needed for 90% of ΔW's energy "
    "(Σσ²): LoRA's ΔW cannot exceed its rank r, and the paper finds full finetuning's needs "
    "10–100× more. A Gaussian random matrix of the same shape (no low-rank structure at all) is "
    "the yardstick for 'full rank'. Intruder dimensions (Shuttleworth et al. 2024) are new "
    "directions among the top 10 of the finetuned matrix that resemble none of W_base's "
    "(largest |cos| below ε = 0.5); LoRA tends to create them, full finetuning hardly does.")


def _spectrum_specs(frame: Frame, spectra: Spectra) -> list[FigureSpec]:
    bind = functools.partial
    return [
        FigureSpec("spectrum_heatmap", bind(spectrum_heatmap, spectra=spectra),
                   "ΔW rank per layer and module",
                   "Directions needed for 90% of ΔW's energy for each layer (rows) and module "
                   "type (columns), each method at its best LR and final checkpoint (mean over "
                   "seeds). Under each module name, the same number for a random matrix of that "
                   "shape. Lighter = higher rank; LoRA's cells stay at or below its rank r."),
        FigureSpec("rank_over_tokens", rank_over_tokens, "ΔW rank over training",
                   "Median rank90 over the attention (left) and MLP (right) matrices against "
                   "training tokens, best LR per method; dashed: a random matrix of the same "
                   "shape. The paper finds full finetuning's rank high from the first checkpoint "
                   "and rising, higher in MLP than in attention."),
        FigureSpec("matrix_spectrum", bind(matrix_spectrum, spectra=spectra),
                   "One matrix's spectrum",
                   "Singular values of ΔW of one middle-layer matrix, each divided by its "
                   "largest, for each method (● marks its rank90), beside the base weight's "
                   "and a random matrix's. A LoRA ΔW drops to numerical zero after r values "
                   f"(cut at {FLOOR:g}); a flat curve means the change is spread over many "
                   "directions."),
        FigureSpec("intruders", bind(intruder_figure, spectra=spectra), "Intruder dimensions",
                   "Left: intruders per matrix (mean over matrices) at the final checkpoint as "
                   "the similarity threshold ε varies; right: at ε = 0.5 over training. Each "
                   "method at its best LR."),
    ]


def weights_section(ctx: ReportContext) -> Section:
    """ΔW spectrum and intruder figures, with a table of the final summaries per method."""
    frame = ctx.frame
    records = load_artifacts(ctx.out, "spectrum",
                             {i for ids in best_run_ids(frame).values() for i in ids})
    spectra = best_spectra(frame, records)
    if not spectra:
        return Section("How the weights moved", paragraph(
            "No per-matrix ΔW spectrum is stored for a best-LR run yet, so the weight analysis "
            "is left out (it is measured at every checkpoint when evaluation.spectrum is true)."))
    refs, notes = ctx.draw(_spectrum_specs(frame, spectra))
    return Section("How the weights moved", paragraph(WEIGHTS_INTRO) + _summary_table(frame),
                   refs, notes)


SUMMARY_COLUMNS = [("rank90", "rank90"), ("rank90_attention", "rank90 attention"),
                   ("rank90_mlp", "rank90 MLP"), ("random_rank90", "random matrix's rank90"),
                   ("intruders", "intruders per matrix"), ("delta_fro_norm", "‖ΔW‖_F"),
                   ("matrices_changed", "matrices changed")]


def _summary_table(frame: Frame) -> str:
    columns = [f"spectrum/{c}" for c, _ in SUMMARY_COLUMNS]
    rows = []
    for label in frame.labels:
        curve = _best_curve(frame, label, columns).dropna(subset=["spectrum/rank90"])
        if not curve.empty:
            final = curve.iloc[-1]
            rows.append([frame.name(label), final["tokens"],
                         *(None if pd.isna(final[c]) else float(final[c]) for c in columns)])
    if not rows:
        return ""
    return (table(["method (best LR)", "final tokens", *(h for _, h in SUMMARY_COLUMNS)], rows)
            + paragraph("Medians over the changed matrices at the final checkpoint (mean over "
                        "seeds); ‖ΔW‖_F over all of them.", "muted"))


DIVERSITY_INTRO = (
    "Several completions were sampled for each of a fixed set of prompts at the final checkpoint. "
    "Distinct = exactly different samples of one prompt; similarity = token-level similarity of "
    "two samples (difflib ratio, 1 = identical), averaged over all pairs; distinct-2 = unique "
    "token bigrams / all bigrams. The paper finds full finetuning's generations collapse more "
    "than LoRA's.")


def diversity_section(ctx: ReportContext) -> Section:
    """The diversity bar chart, its numbers per method and a few samples of the first prompt."""
    frame = ctx.frame
    data = diversity_table(frame)
    if data.empty:
        return Section("Generation diversity", paragraph(
            "Generation diversity was not measured in this study (set evaluation.diversity: "
            "true to sample completions at the final checkpoint)."))
    refs, notes = ctx.draw([FigureSpec(
        "diversity", diversity_figure, "Generation diversity",
        "Left: distinct samples per prompt (dashed: every sample distinct); right: mean pairwise "
        "similarity of the samples of one prompt. Each method at its best LR, final checkpoint.")])
    rows = [["base model" if label == "base" else frame.name(label),
             *(float(row[c]) for c in DIVERSITY[:4])] for label, row in data.iterrows()]
    body = paragraph(DIVERSITY_INTRO) + table(
        ["method (best LR)", "distinct per prompt", "mean pairwise similarity",
         "distinct fraction", "distinct-2"], rows) + _samples(ctx, frame)
    return Section("Generation diversity", body, refs, notes)


def _samples(ctx: ReportContext, frame: Frame, shown: int = 3, chars: int = 240) -> str:
    """The first ``shown`` samples of the first prompt for each method (a best-LR run)."""
    ids = best_run_ids(frame)
    first = {run_ids[0]: label for label, run_ids in ids.items() if run_ids}
    records = load_artifacts(ctx.out, "diversity_samples", set(first))
    latest = {r["run_id"]: r for r in sorted(records, key=lambda r: r["step"])}
    items = []
    for label in frame.labels:
        record = next((r for run_id, r in latest.items() if first.get(run_id) == label), None)
        if record is None or not record["data"] or not record["data"][0]:
            continue
        samples = "".join(f"<pre>{escape(_cut(text, chars))}</pre>"
                          for text in record["data"][0][:shown])
        items.append(f"<li><b>{escape(frame.name(label))}</b>{samples}</li>")
    if not items:
        return ""
    return (paragraph(f"The first {shown} samples of the first prompt (cut at {chars} "
                      "characters):") + f"<ul>{''.join(items)}</ul>")


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars] + " …"

