"""The report's figures: one function per figure, each drawing from a ``Frame`` into a 150-dpi PNG
and returning its path, or raising ``FigureSkipped`` (with the reason) when the study has no
data for it.

Figures use matplotlib's object API (``Figure`` + Agg canvas, no pyplot state), so they can be
drawn from any thread or process without a display. A method keeps its colour in every figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from learnforget.analysis.best_lr import best_lrs, lr_table, mean_curves, reference_label, usable
from learnforget.analysis.claim_data import is_plain_lora
from learnforget.analysis.frame import Frame
from learnforget.analysis.method_names import METHOD_COLUMNS
from learnforget.analysis.pareto import frontier

DPI = 150
FAINT = 0.25  # alpha of the non-best learning rates
TOKENS = "training tokens"


class FigureSkipped(Exception):
    """The study has no data for this figure; the message says what is missing."""


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: its file stem, drawing function, title and caption."""

    name: str
    draw: Callable[[Frame, Path], Path]
    title: str
    caption: str


def label_colors(labels: list[str]) -> dict[str, tuple]:
    """A fixed colour per label: full finetuning in shades of red, every other method a
    distinct tab10/tab20 colour that is not red or brown."""
    from matplotlib import colormaps

    full = [lab for lab in labels if lab.startswith("full")]
    other = [lab for lab in labels if not lab.startswith("full")]
    reds = colormaps["Reds"]
    colors: dict[str, tuple] = {
        label: reds(0.85 - 0.5 * i / max(len(full) - 1, 1)) for i, label in enumerate(full)
    }
    tab10, tab20 = colormaps["tab10"], colormaps["tab20"]
    slots = [tab10(i) for i in (0, 2, 4, 1, 6, 9, 8, 7)]  # tab10 without red (3) and brown (5)
    slots += [tab20(i) for i in (1, 5, 9, 13, 17, 19, 3, 15)]  # their lighter shades
    for i, label in enumerate(other):
        colors[label] = slots[i % len(slots)]
    return colors


def _colors(frame: Frame) -> dict[str, tuple]:
    return label_colors(frame.labels)


def _marker(kind: str) -> str:
    return {"full": "o", "lora": "^"}.get(kind, "s")


def _figure(ncols: int = 1, width: float = 6.4) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(width * ncols if ncols > 1 else width, 4.6), dpi=DPI,
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return figure, list(axes)


def save_figure(figure: Figure, out_dir: Path, name: str) -> Path:
    """Write ``figure`` as ``out_dir/name.png`` at the report's resolution."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    figure.savefig(path, dpi=DPI)
    return path


def _legend(figure: Figure, ax: Axes) -> None:
    """A legend inside the axes when it is short, to the right of the figure when it is long
    (so it never hides data)."""
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) <= 5:
        ax.legend(fontsize=8, loc="best")
    else:
        figure.legend(handles, labels, fontsize=7, loc="outside right upper")
        figure.set_figwidth(figure.get_figwidth() + 2.6)


def _kinds(frame: Frame) -> dict[str, str]:
    return frame.runs.drop_duplicates("label").set_index("label")["kind"].astype(str).to_dict()


def require(condition: bool, reason: str) -> None:
    """Skip the figure (``FigureSkipped(reason)``) unless ``condition`` holds."""
    if not condition:
        raise FigureSkipped(reason)


# --- 1, 2: learning and forgetting over training -----------------------------------------------
def _over_tokens(frame: Frame, out_dir: Path, column: str, name: str) -> Path:
    curves = mean_curves(frame).dropna(subset=[column])
    which = "learning" if column == "learn" else "forgetting"
    require(not curves.empty, f"no usable checkpoint has a {which} value yet")
    colors, kinds = _colors(frame), _kinds(frame)
    figure, (ax,) = _figure()
    ax.axhline(0, color="black", lw=1, ls="--", label="base model")
    for label in frame.labels:
        for lr, group in curves[curves["label"] == label].groupby("lr"):
            best = bool(group["best"].iloc[0])
            group = group.sort_values("tokens")
            ax.plot([0, *group["tokens"]], [0, *group[column]], color=colors[label],
                    marker=_marker(kinds.get(label, "")), lw=2 if best else 1,
                    alpha=1 if best else FAINT,
                    label=f"{frame.name(label)}, lr={lr:g}" if best else None)
    axis = frame.learn_label if column == "learn" else frame.forget_label
    direction = "higher = learned more" if column == "learn" else "higher = forgot more"
    ax.set_title(f"{which.capitalize()} vs {TOKENS} (best LR per method; others faint)")
    ax.set_xlabel(TOKENS)
    ax.set_ylabel(f"{axis}\n({direction})")
    _legend(figure, ax)
    return save_figure(figure, out_dir, name)


def learning_curves(frame: Frame, out_dir: Path) -> Path:
    """Learning vs training tokens per method at its best LR (the paper's Fig. 1)."""
    return _over_tokens(frame, out_dir, "learn", "learning_curves")


def forgetting_curves(frame: Frame, out_dir: Path) -> Path:
    """Forgetting vs training tokens per method at its best LR (the paper's Fig. 2)."""
    return _over_tokens(frame, out_dir, "forget", "forgetting_curves")


# --- 3: the trade-off --------------------------------------------------------------------------
def _plane_axes(ax: Axes, frame: Frame) -> None:
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel(f"{frame.learn_label}\n(higher = learned more →)")
    ax.set_ylabel(f"{frame.forget_label}\n(higher = forgot more ↑)")


def tradeoff(frame: Frame, out_dir: Path) -> Path:
    """Learning vs forgetting of every checkpoint with the Pareto frontier (the paper's Fig. 4)."""
    cp = usable(frame.checkpoints).dropna(subset=["learn", "forget"])
    require(not cp.empty, "no usable checkpoint has both learning and forgetting values")
    colors, best = _colors(frame), best_lrs(frame)
    figure, (ax,) = _figure(width=7.2)
    _plane_axes(ax, frame)
    largest = float(cp["tokens"].max()) or 1.0
    for label in frame.labels:
        rows = cp[cp["label"] == label]
        if rows.empty:
            continue
        at_best = np.isclose(rows["lr"].astype(float), best.get(label, np.nan))
        for chosen, alpha in ((at_best, 0.9), (~at_best, 0.35)):
            part = rows[chosen]
            ax.scatter(part["learn"], part["forget"], s=15 + 110 * part["tokens"] / largest,
                       color=colors[label], marker=_marker(str(rows["kind"].iloc[0])),
                       alpha=alpha, edgecolors="black", linewidths=0.4,
                       label=frame.name(label) if alpha == 0.9 and len(part) else None)
    ax.scatter([0], [0], marker="*", s=160, color="black", label="base model", zorder=3)
    line = frontier([(0.0, 0.0), *zip(cp["learn"], cp["forget"], strict=True)])
    ax.plot([p[0] for p in line], [p[1] for p in line], color="black", lw=1.5, ls="-",
            label="Pareto frontier", zorder=2)
    ax.set_title("Learning vs forgetting: every checkpoint (marker size = training tokens)")
    _legend(figure, ax)
    return save_figure(figure, out_dir, "tradeoff")


# --- 4: training loss --------------------------------------------------------------------------
def training_loss(frame: Frame, out_dir: Path) -> Path:
    """Training loss vs training tokens, one line per run."""
    train = frame.train
    require("train/loss" in train and train["train/loss"].notna().any(),
             "no training loss was logged")
    train = train.dropna(subset=["train/loss"])
    colors, best = _colors(frame), best_lrs(frame)
    figure, (ax,) = _figure()
    few = train["run_id"].nunique() <= 10
    for label in frame.labels:
        named = False  # with many runs, one legend entry per label (its best LR)
        for _, group in train[train["label"] == label].groupby("run_id", sort=False):
            lr, status = float(group["lr"].iloc[0]), str(group["status"].iloc[0])
            is_best = bool(np.isclose(lr, best.get(label, np.nan)))
            broken = status in ("diverged", "failed")
            name = None
            if few:
                name = f"{frame.name(label)}, lr={lr:g}" + (f" ({status})" if broken else "")
            elif is_best and not named:
                name, named = frame.name(label), True
            ax.plot(group["tokens"], group["train/loss"], color=colors[label],
                    lw=1.6 if is_best else 1, alpha=1 if is_best else 0.5,
                    ls=":" if broken else "-", label=name)
    ax.set_title("Training loss vs training tokens (dotted = diverged or failed)")
    ax.set_xlabel(TOKENS)
    ax.set_ylabel("training loss, nats/token (lower = fits the target better)")
    _legend(figure, ax)
    return save_figure(figure, out_dir, "training_loss")


# --- 5: LR sensitivity --------------------------------------------------------------------------
def lr_sensitivity(frame: Frame, out_dir: Path) -> Path:
    """Final learning and forgetting vs learning rate per method, log x (the paper's Fig. 8)."""
    table = lr_table(frame).dropna(subset=["lr"])
    require(table["learn"].notna().any(), "no usable run has a final learning value")
    colors, kinds, best = _colors(frame), _kinds(frame), best_lrs(frame)
    figure, axes = _figure(ncols=2, width=5.6)
    for ax, column, axis, direction in (
        (axes[0], "learn", frame.learn_label, "higher = learned more"),
        (axes[1], "forget", frame.forget_label, "higher = forgot more"),
    ):
        for label in frame.labels:
            rows = table[table["label"] == label].sort_values("lr")
            measured = rows.dropna(subset=[column])
            ax.plot(measured["lr"], measured[column], color=colors[label],
                    marker=_marker(kinds.get(label, "")), label=frame.name(label))
            if label in best:
                pick = measured[np.isclose(measured["lr"], best[label])]
                ax.scatter(pick["lr"], pick[column], marker="*", s=200, color=colors[label],
                           edgecolors="black", zorder=3)
            broken = rows[(rows["diverged"] + rows["failed"] > 0) & rows[column].isna()]
            ax.scatter(broken["lr"], np.full(len(broken), 0.03), marker="x", s=50,
                       color=colors[label], transform=ax.get_xaxis_transform(), zorder=3)
        ax.axhline(0, color="black", lw=1, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel(f"final {axis}\n({direction})")
    axes[0].set_title("Learning vs LR (★ best LR, × diverged/failed)")
    axes[1].set_title("Forgetting vs LR")
    _legend(figure, axes[0])
    return save_figure(figure, out_dir, "lr_sensitivity")


# --- study-dependent extras ---------------------------------------------------------------------
def _final_at_best(frame: Frame) -> pd.DataFrame:
    """lr_table rows at each label's best LR."""
    table, best = lr_table(frame), best_lrs(frame)
    keep = pd.Series([bool(np.isclose(lr, best[lab])) if lab in best else False
                      for lab, lr in zip(table["label"], table["lr"], strict=True)],
                     index=table.index, dtype=bool)
    return table[keep].set_index("label")


def rank_by_module(frame: Frame, out_dir: Path) -> Path:
    """Final learning and forgetting per LoRA (target modules, rank) at each best LR."""
    finals = _final_at_best(frame)
    methods = frame.methods
    ref = reference_label(frame)
    optimizer = methods.at[ref, "optimizer"] if ref in methods.index else "adamw"
    cells = {lab: (str(methods.at[lab, "targets"]), int(methods.at[lab, "r"]))
             for lab in finals.index if lab in methods.index
             and is_plain_lora(methods.loc[lab]) and methods.at[lab, "optimizer"] == optimizer}
    require(len(set(cells.values())) >= 2,
             "needs LoRA runs at two or more (rank, target modules) settings")
    ranks = sorted({r for _, r in cells.values()})
    targets = [t for t in ("attention", "mlp", "all") if t in {t for t, _ in cells.values()}]
    figure, axes = _figure(ncols=2, width=5.6)
    width = 0.8 / len(targets)
    colors = {"attention": "tab:blue", "mlp": "tab:green", "all": "tab:purple"}
    for ax, column, axis, direction in (
        (axes[0], "learn", frame.learn_label, "higher = learned more"),
        (axes[1], "forget", frame.forget_label, "higher = forgot more"),
    ):
        for j, target in enumerate(targets):
            values = [finals.loc[lab, column] if (target, r) in cells.values() else np.nan
                      for r in ranks for lab in [_cell_label(cells, target, r)]]
            ax.bar(np.arange(len(ranks)) + (j - (len(targets) - 1) / 2) * width, values,
                   width, color=colors[target], label=f"LoRA on {target}")
        if ref is not None and ref in finals.index:
            ax.axhline(finals.loc[ref, column], color="firebrick", ls="--",
                       label=f"{frame.name(ref)} (reference)")
        ax.set_xticks(np.arange(len(ranks)), [f"r={r}" for r in ranks])
        ax.set_xlabel("LoRA rank")
        ax.set_ylabel(f"final {axis}\n({direction})")
        ax.axhline(0, color="black", lw=0.8)
    axes[0].set_title("Learning by rank and target modules (best LR each)")
    axes[1].set_title("Forgetting by rank and target modules")
    axes[0].legend(fontsize=7)
    return save_figure(figure, out_dir, "rank_by_module")


def _cell_label(cells: dict[str, tuple[str, int]], target: str, r: int) -> str | None:
    return next((lab for lab, cell in cells.items() if cell == (target, r)), None)


def _plane_curves(ax: Axes, frame: Frame, labels: list[str]) -> None:
    """Each label's best-LR checkpoints on the learn–forget plane, joined in token order."""
    curves = mean_curves(frame)
    curves = curves[curves["best"]].dropna(subset=["learn", "forget"])
    colors, kinds = _colors(frame), _kinds(frame)
    for label in labels:
        rows = curves[curves["label"] == label].sort_values("tokens")
        if rows.empty:
            continue
        ax.plot([0, *rows["learn"]], [0, *rows["forget"]], color=colors[label],
                marker=_marker(kinds.get(label, "")), label=frame.name(label))
    ax.scatter([0], [0], marker="*", s=160, color="black", label="base model", zorder=3)


def regularisation(frame: Frame, out_dir: Path) -> Path:
    """Full finetuning with weight decay / attention dropout vs LoRA on the learn–forget plane."""
    runs = frame.runs
    regular = runs[runs["kind"].eq("full") & ((runs["weight_decay"].fillna(0) > 0)
                                              | (runs["attention_dropout"].fillna(0) > 0))]
    require(not regular.empty, "needs full finetuning runs with weight decay or dropout")
    ref = reference_label(frame)
    labels = [lab for lab in frame.labels
              if lab in set(regular["label"]) or lab == ref or _kinds(frame)[lab] == "lora"]
    figure, (ax,) = _figure(width=7.2)
    _plane_axes(ax, frame)
    _plane_curves(ax, frame, labels)
    ax.set_title("Regularised full finetuning vs LoRA (best LR each; points = checkpoints)")
    _legend(figure, ax)
    return save_figure(figure, out_dir, "regularisation")


def optimizer_pairs(frame: Frame, labels: list[str]) -> dict[str, str]:
    """{AdamW label: Lion label} for the methods among ``labels`` run with both optimizers
    (every other setting equal)."""
    methods = frame.methods.loc[[lab for lab in labels if lab in frame.methods.index]]
    settings = [c for c in METHOD_COLUMNS if c != "optimizer"]

    def key(label: str) -> tuple:
        return tuple(str(methods.at[label, c]) for c in settings)

    lion = {key(lab): lab for lab in methods.index if methods.at[lab, "optimizer"] == "lion"}
    return {lab: lion[key(lab)] for lab in frame.labels if lab in methods.index
            and methods.at[lab, "optimizer"] == "adamw" and key(lab) in lion}


def optimizers(frame: Frame, out_dir: Path) -> Path:
    """AdamW vs Lion per method family: final learning and forgetting at each best LR."""
    require({"adamw", "lion"} <= set(frame.runs["optimizer"].dropna()),
             "needs runs with both AdamW and Lion")
    finals = _final_at_best(frame)
    pairs = optimizer_pairs(frame, list(finals.index))
    families = list(pairs)
    require(bool(families), "no method was run (and measured) with both AdamW and Lion")
    figure, axes = _figure(ncols=2, width=5.6)
    x = np.arange(len(families))
    for ax, column, axis, direction in (
        (axes[0], "learn", frame.learn_label, "higher = learned more"),
        (axes[1], "forget", frame.forget_label, "higher = forgot more"),
    ):
        ax.bar(x - 0.2, [finals.loc[f, column] for f in families], 0.4, color="tab:blue",
               label="AdamW")
        ax.bar(x + 0.2, [finals.loc[pairs[f], column] for f in families], 0.4,
               color="tab:orange", label="Lion")
        ax.set_xticks(x, [frame.name(f) for f in families], rotation=20, ha="right",
                      fontsize=7)
        ax.set_ylabel(f"final {axis}\n({direction})")
        ax.axhline(0, color="black", lw=0.8)
    axes[0].set_title("Learning: AdamW vs Lion (best LR each)")
    axes[1].set_title("Forgetting: AdamW vs Lion")
    axes[0].legend(fontsize=8)
    return save_figure(figure, out_dir, "optimizers")


MAIN_FIGURES = [
    FigureSpec("learning_curves", learning_curves, "Learning over training",
               "How much each method improved the target-domain metric over the base model as "
               "training went on. Bold: each method at its best learning rate; faint: the other "
               "learning rates. Higher is better; the dashed line is the base model."),
    FigureSpec("forgetting_curves", forgetting_curves, "Forgetting over training",
               "How much each method degraded the source-domain metric relative to the base "
               "model as training went on (same colours). Higher = more forgetting; below the "
               "dashed line the source domain improved."),
    FigureSpec("tradeoff", tradeoff, "The learning–forgetting trade-off",
               "Every measured checkpoint (all learning rates; faded = not the best LR) as a "
               "point: right = learned more, up = forgot more. Larger markers were trained on "
               "more tokens. The black line is the Pareto frontier: no checkpoint learns more "
               "while forgetting less than a point on it. Points far above the line are "
               "inefficient; the lower-right corner is the goal."),
    FigureSpec("lr_sensitivity", lr_sensitivity, "Learning-rate sensitivity",
               "Final learning (left) and forgetting (right) of each run against its learning "
               "rate, averaged over seeds. ★ marks the best LR (most learning); × marks learning "
               "rates whose runs diverged or failed. A flat curve means the method forgives a "
               "poorly chosen LR."),
    FigureSpec("training_loss", training_loss, "Training loss",
               "The training loss on the target data against training tokens, one line per run. "
               "Lower is a better fit to the target data (not by itself better learning on the "
               "held-out evaluation)."),
]

EXTRA_FIGURES = [
    FigureSpec("rank_by_module", rank_by_module, "LoRA rank × target modules",
               "Final learning and forgetting of each LoRA configuration at its best LR, grouped "
               "by rank, one bar per set of target modules; the dashed line is full finetuning."),
    FigureSpec("regularisation", regularisation, "Regularised full finetuning vs LoRA",
               "Best-LR checkpoints of full finetuning with weight decay or attention dropout and "
               "of LoRA on the learning–forgetting plane, joined in training order from the base "
               "model (★). A method whose line lies lower at the same learning forgets less."),
    FigureSpec("optimizers", optimizers, "AdamW vs Lion",
               "Final learning and forgetting of each method trained with AdamW and with Lion, "
               "each at its own best learning rate."),
]
