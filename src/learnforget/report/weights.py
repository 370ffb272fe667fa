"""The report's "How the weights moved" and "Generation diversity" sections and their figures.

They draw what analysis read from the store (``learnforget.analysis.weights``, handed over in the
``StudyJudgement``): the per-matrix ΔW spectra of each method's best-LR runs, its final
diversity and a few samples, beside the ``spectrum/*`` curves of the ``Frame``. Each method is
shown at its best learning rate, averaged over seeds. Like ``figures.py``, every figure is a
150-dpi PNG drawn with matplotlib's object API and raises ``FigureSkipped`` when the study has no
data for it.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from learnforget.analysis.best_lr import AtBestLR
from learnforget.analysis.frame import Frame
from learnforget.analysis.weights import (
    DIVERSITY,
    SPECTRUM_SUMMARIES,
    Spectra,
    best_curve,
    final_spectra,
    final_summaries,
    intruder_counts,
    rank_grid,
    shown_matrix,
    tokens_at,
)
from learnforget.measure.intruders import DEFAULT_EPS_VALUES
from learnforget.measure.spectrum import random_singular_values
from learnforget.methods import TARGET_MODULES
from learnforget.report.context import ReportContext
from learnforget.report.figures import (
    DPI,
    FigureSpec,
    label_colors,
    require,
    save_figure,
)
from learnforget.report.html import Section, escape, paragraph, table

MAX_PANELS = 6  # heatmap panels: full finetuning first, then the other methods
FLOOR = 1e-4  # the spectrum figure cuts singular values below this share of the largest
TOKENS = "training tokens"


# --- figure helpers -----------------------------------------------------------------------------
def _figure(ncols: int, width: float, height: float = 4.6) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(width * ncols, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, list(figure.subplots(1, ncols, squeeze=False)[0])


# --- ΔW figures -----------------------------------------------------------------------------------
def spectrum_heatmap(frame: Frame, out_dir: Path, spectra: Spectra) -> Path:
    """rank90 of ΔW per layer × module type, one panel per method at its best LR and final
    checkpoint (the paper's SVD summary), with the random baseline under each module name."""
    require(bool(spectra), "no ΔW spectrum was stored for a best-LR run")
    grids, randoms = {}, {}
    for label in list(spectra)[:MAX_PANELS]:
        step, seeds = final_spectra(spectra, label)
        grid, random = rank_grid(seeds)
        if not grid.empty:
            grids[(label, step)] = grid
            randoms.update(random)
    require(bool(grids), "the stored spectra name no layer")
    modules = ([m for m in TARGET_MODULES["all"] if m in randoms]
               + sorted(set(randoms) - set(TARGET_MODULES["all"])))
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
    tokens = tokens_at(frame, label, step)
    return f"step {step}" if math.isnan(tokens) else f"{tokens:,.0f} tokens"


def rank_over_tokens(frame: Frame, out_dir: Path) -> Path:
    """Median ΔW rank90 over attention and over MLP matrices vs training tokens, per method at
    its best LR, with each group's random baseline dashed."""
    groups = [(g, f"spectrum/rank90_{g}") for g in ("attention", "mlp")
              if f"spectrum/rank90_{g}" in frame.checkpoints]
    if not groups and "spectrum/rank90" in frame.checkpoints:
        groups = [("all", "spectrum/rank90")]
    require(bool(groups), "no ΔW rank90 was measured")
    colors, at_best = label_colors(frame.labels), AtBestLR(frame)
    figure, axes = _figure(len(groups), 5.4)
    drawn = False
    for ax, (group, column) in zip(axes, groups, strict=True):
        random_column = column.replace("rank90", "random_rank90")
        for label in frame.labels:
            curve = best_curve(at_best, label, [column]).dropna(subset=[column])
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


def matrix_spectrum(frame: Frame, out_dir: Path, spectra: Spectra) -> Path:
    """Singular values of ΔW of one matrix (each divided by its largest) for every method,
    beside W_base's and a random matrix's of the same shape, log scale."""
    require(bool(spectra), "no ΔW spectrum was stored for a best-LR run")
    shown = shown_matrix(spectra)
    require(shown is not None, "the stored spectra hold no singular values")
    colors = label_colors(frame.labels)
    figure, (ax,) = _figure(1, 7.2)
    for label in spectra:
        _, seeds = final_spectra(spectra, label)
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
    colors, at_best = label_colors(frame.labels), AtBestLR(frame)
    figure, axes = _figure(2, 5.4)
    swept = over_time = False
    for label in spectra:
        counts = intruder_counts(final_spectra(spectra, label)[1])
        if counts:
            swept = True
            axes[0].plot(DEFAULT_EPS_VALUES, counts, marker="o", color=colors[label],
                         label=frame.name(label))
    for label in frame.labels:
        curve = best_curve(at_best, label, ["spectrum/intruders"]).dropna()
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
def diversity_figure(frame: Frame, out_dir: Path, data: pd.DataFrame) -> Path:
    """Mean distinct samples per prompt and mean pairwise similarity per method (bars), from
    ``data`` (``diversity_table``)."""
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
    frame, spectra = ctx.frame, ctx.judgement.weights.spectra
    if not spectra:
        return Section("How the weights moved", paragraph(
            "No per-matrix ΔW spectrum is stored for a best-LR run yet, so the weight analysis "
            "is left out (it is measured at every checkpoint when evaluation.spectrum is true)."))
    refs, notes = ctx.draw(_spectrum_specs(frame, spectra))
    return Section("How the weights moved", paragraph(WEIGHTS_INTRO) + _summary_table(frame),
                   refs, notes)


SUMMARY_HEADERS = {"rank90": "rank90", "rank90_attention": "rank90 attention",
                   "rank90_mlp": "rank90 MLP", "random_rank90": "random matrix's rank90",
                   "intruders": "intruders per matrix", "delta_fro_norm": "‖ΔW‖_F",
                   "matrices_changed": "matrices changed"}


def _summary_table(frame: Frame) -> str:
    columns = [f"spectrum/{c}" for c in SPECTRUM_SUMMARIES]
    rows = [[frame.name(label), final["tokens"],
             *(None if pd.isna(final[c]) else float(final[c]) for c in columns)]
            for label, final in final_summaries(AtBestLR(frame))]
    if not rows:
        return ""
    return (table(["method (best LR)", "final tokens",
                   *(SUMMARY_HEADERS[c] for c in SPECTRUM_SUMMARIES)], rows)
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
    frame, data = ctx.frame, ctx.judgement.weights.diversity
    if data.empty:
        return Section("Generation diversity", paragraph(
            "Generation diversity was not measured in this study (set evaluation.diversity: "
            "true to sample completions at the final checkpoint)."))
    refs, notes = ctx.draw([FigureSpec(
        "diversity", functools.partial(diversity_figure, data=data), "Generation diversity",
        "Left: distinct samples per prompt (dashed: every sample distinct); right: mean pairwise "
        "similarity of the samples of one prompt. Each method at its best LR, final checkpoint.")])
    rows = [["base model" if label == "base" else frame.name(label),
             *(float(row[c]) for c in DIVERSITY[:4])] for label, row in data.iterrows()]
    body = paragraph(DIVERSITY_INTRO) + table(
        ["method (best LR)", "distinct per prompt", "mean pairwise similarity",
         "distinct fraction", "distinct-2"], rows) + _samples(ctx)
    return Section("Generation diversity", body, refs, notes)


def _samples(ctx: ReportContext, shown: int = 3, chars: int = 240) -> str:
    """The first ``shown`` samples of the first prompt for each method (a best-LR run)."""
    items = []
    for label, samples in ctx.judgement.weights.samples.items():
        texts = "".join(f"<pre>{escape(_cut(text, chars))}</pre>" for text in samples[:shown])
        items.append(f"<li><b>{escape(ctx.frame.name(label))}</b>{texts}</li>")
    if not items:
        return ""
    return (paragraph(f"The first {shown} samples of the first prompt (cut at {chars} "
                      "characters):") + f"<ul>{''.join(items)}</ul>")


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars] + " …"
