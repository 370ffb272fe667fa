"""``ClaimData``, what every claim of the checklist reads: a study's frame with each method at
its best LR (``AtBestLR``), the reference (full finetuning), which LoRA runs the paper's claims
are judged on (``is_paper_lora``, the claims' policy) and the noise draws every comparison is
read through. The claims themselves are in ``learnforget.analysis.claims`` (learning,
forgetting, modules), ``curve_claims`` (the learn–forget frontier), ``lr_claims`` (learning
rates), ``weight_claims`` (ΔW rank, intruders) and ``diversity_claim`` (diversity), with the
estimate arithmetic of the last three in ``estimates``; the verdict rules are in
``learnforget.analysis.verdicts``.

- Each method is taken at its best learning rate (``best_lrs``: most final learning), averaged
  over seeds per checkpoint; diverged and failed runs never count. "Full finetuning" is the
  reference label (``reference_label``). "LoRA" in claims 1–5 and 7–9 is the paper's LoRA
  (``is_paper_lora``: all linear modules, default init, α = 2r, no rsLoRA or DoRA) trained with
  the reference's optimizer; when a study has none on all linear modules, the plain LoRA on the
  targets it has, and the verdict says so. Other targets and the variants are compared apart
  (``variant_comparison``), never inside a verdict.
- Every comparison's error comes from the study's noise draws (``learnforget.analysis.draws``:
  items resampled jointly for every checkpoint, seeds resampled, each method's best LR
  cross-fitted on item halves). Nothing is judged from a point estimate: a study without
  standard errors gets inconclusive verdicts that say so.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from learnforget.analysis.best_lr import AtBestLR, reference_label
from learnforget.analysis.comparison import Difference, as_float
from learnforget.analysis.draws import Draws, build_draws
from learnforget.analysis.frame import Frame
from learnforget.analysis.method_names import is_set
from learnforget.analysis.verdicts import ClaimVerdict, untestable
from learnforget.measure.uncertainty import stderr_name


# --- which runs stand for "LoRA" (the claims' policy) -------------------------------------------
def is_paper_lora(method) -> bool:
    """Whether a method is the paper's LoRA: all linear modules and ``is_plain_lora``."""
    return method.targets == "all" and is_plain_lora(method)


def is_plain_lora(method) -> bool:
    """The paper's LoRA on any target set (claim 6 compares target sets): default init, α/r
    scaling with α = 2r, no rsLoRA or DoRA, no dropout or weight decay (a method that differs in
    any of them is another method, compared apart)."""
    return (method.kind == "lora" and method.init == "default" and method.use_rslora is not True
            and method.use_dora is not True
            and (not is_set(method.alpha) or float(method.alpha) == 2 * int(method.r))
            and not (is_set(method.dropout) and float(method.dropout) > 0)
            and not (is_set(method.weight_decay) and float(method.weight_decay) > 0))


@dataclass
class ClaimData:
    """A study's frame with what every claim reads: the best LR of each label, the reference
    (full finetuning) label, each label's structured settings, the LoRA labels the claims are
    judged on, and best-LR curves (cached)."""

    frame: Frame
    best: dict[str, float] = field(init=False)
    ref: str | None = field(init=False)
    methods: pd.DataFrame = field(init=False)
    kinds: dict[str, str] = field(init=False)
    at_best: AtBestLR = field(init=False)

    def __post_init__(self) -> None:
        self.at_best = AtBestLR(self.frame)
        self.best = self.at_best.best
        self.ref = reference_label(self.frame)
        self.methods = self.frame.methods
        self.kinds = self.methods["kind"].astype(str).to_dict()

    @property
    def optimizer(self) -> str | None:
        """The reference's optimizer (LoRA is compared with full FT trained the same way)."""
        return str(self.methods.at[self.ref, "optimizer"]) if self.ref else None

    def _same_optimizer(self, label: str) -> bool:
        return self.optimizer is None or self.methods.at[label, "optimizer"] == self.optimizer

    def loras(self) -> list[str]:
        """Every LoRA label with a best LR trained with the reference's optimizer (variants
        and every target set included), in display order."""
        return [lab for lab in self.frame.labels
                if self.kinds.get(lab) == "lora" and lab in self.best and self._same_optimizer(lab)]

    def plain_loras(self) -> list[str]:
        """``loras()`` that are the paper's LoRA on any target set (claim 6)."""
        return [lab for lab in self.loras() if is_plain_lora(self.methods.loc[lab])]

    def judged(self) -> list[str]:
        """The LoRA labels claims 1–5 and 7–9 are judged on: the paper's LoRA (all linear
        modules) when the study has it, otherwise the plain LoRA on the targets it has."""
        paper = [lab for lab in self.loras() if is_paper_lora(self.methods.loc[lab])]
        return paper or self.plain_loras()

    def others(self) -> list[str]:
        """LoRA labels left out of the verdicts (other targets, variants, other optimizers)."""
        judged = set(self.judged())
        return [lab for lab in self.frame.labels
                if self.kinds.get(lab) == "lora" and lab not in judged]

    @property
    def scope(self) -> str:
        """Which runs stand for "LoRA" in the verdicts, in words."""
        judged = self.judged()
        if not judged:
            return ""
        names = ", ".join(self.name(lab) for lab in judged)
        if all(is_paper_lora(self.methods.loc[lab]) for lab in judged):
            text = f"LoRA = the paper's configuration: {names}"
        else:
            text = (f"LoRA = {names}: this study has no LoRA on all linear modules (the paper's "
                    "configuration), so the claims are judged on the targets it has")
        left = self.others()
        if left:
            text += f"; compared apart, not judged: {', '.join(self.name(lab) for lab in left)}"
        return text

    def curve(self, label: str) -> pd.DataFrame:
        """``label``'s curve at its best LR, averaged over seeds (``AtBestLR.curve``)."""
        return self.at_best.curve(label)

    def final(self, label: str, column: str = "learn") -> pd.Series | None:
        """The last best-LR checkpoint of ``label`` with a value in ``column``."""
        curve = self.curve(label)
        if column not in curve:
            return None
        curve = curve.dropna(subset=[column])
        return None if curve.empty else curve.iloc[-1]

    def value(self, label: str, column: str) -> float:
        """``column`` at ``label``'s last best-LR checkpoint holding it (NaN when none)."""
        row = self.final(label, column)
        return math.nan if row is None else as_float(row[column])

    @functools.cached_property
    def draws(self) -> Draws:
        """The study's noise draws (``learnforget.analysis.draws``), built once."""
        return build_draws(self.frame)

    def draw(self, label: str, column: str, step: int | None = None) -> np.ndarray:
        """``column`` (``learn`` / ``forget``) of ``label`` at its best LR on every draw row, at
        ``step`` (its last step with a value when None); NaN rows when not measured."""
        draws = self.draws
        if not draws.lrs(label):
            return np.full(draws.layout.rows, np.nan)
        return draws.best_value(label, column, step)

    def compare(self, a: str, b: str, column: str, step: int | None = None) -> Difference:
        """``column`` of label ``a`` minus that of label ``b`` at ``step`` (or each one's last
        checkpoint holding it), each at its best LR (cross-fitted), with the error of the
        draws: items resampled jointly, seeds resampled."""
        return self.draws.layout.difference(self.draw(a, column, step),
                                            self.draw(b, column, step))

    def change_from_base(self, label: str, column: str, step: int) -> Difference:
        """``column`` (0 on the base model) of ``label`` at ``step`` against the base model,
        with the error of the draws (the base's items are resampled with the checkpoint's)."""
        return self.draws.layout.difference(self.draw(label, column, step), 0.0)

    def noise(self, columns: tuple[str, ...] = ("learn", "forget"),
              seeded: list[str] | None = None) -> str:
        """Which sources of noise the errors of ``columns`` count, in words: items (resampled
        jointly, or standard errors), seeds (resampled, or unmeasured with one seed) and how the
        best LR is chosen (cross-fitted, or not corrected)."""
        draws = self.draws
        words = {"items": "items resampled jointly for every checkpoint and the base model "
                          f"({draws.layout.item_rows.stop - 1} draws)",
                 "errors": "stored standard errors (no per-item values: checkpoints compared "
                           "as independent, seeds of one method × LR as sharing their items)",
                 "none": "no standard errors stored: no noise estimate"}
        parts = [f"{column}: {words[draws.modes[column]]}" for column in columns]
        seeds = max((draws.seeds(label) for label in (seeded or [])), default=draws.seeds())
        parts.append(f"seeds: up to {seeds} per method × LR, resampled (Student's t on their "
                     "degrees of freedom)" if seeds >= 2 else
                     "one seed per run: seed noise unmeasured")
        parts.append("best LRs chosen on one half of the items and judged on the other "
                     "(cross-fitted against the winner's curse)" if draws.halves else
                     "best LRs chosen and judged on the same items (the winner's curse not "
                     "corrected: no per-item values to split)")
        return "; ".join(parts)

    def error(self, label: str, column: str) -> float:
        """The standard error of ``value(label, column)`` (NaN when not stored)."""
        row = self.final(label, column)
        stderr_column = stderr_name(column)
        if row is None or stderr_column not in row.index:
            return math.nan
        return as_float(row[stderr_column])

    def lrs_tried(self, label: str) -> list[float]:
        """Every LR the study ran for ``label``, whatever the runs' status."""
        runs = self.frame.runs
        return sorted(set(runs.loc[runs["label"] == label, "lr"].dropna().astype(float)))

    def r(self, label: str) -> int | None:
        """The LoRA rank of ``label`` (None for other methods)."""
        value = self.methods.at[label, "r"] if label in self.methods.index else None
        return None if value is None or pd.isna(value) else int(value)

    def targets(self, label: str) -> str | None:
        """The LoRA target set of ``label`` (None for other methods)."""
        value = self.methods.at[label, "targets"] if label in self.methods.index else None
        return None if value is None or pd.isna(value) else str(value)

    def name(self, label: str) -> str:
        """Readable method name."""
        return "full FT" if label == "full" else self.frame.name(label)

    @property
    def no_noise_estimate(self) -> bool:
        """Whether the store holds no standard errors for learning and forgetting."""
        cp = self.frame.checkpoints
        return cp.empty or (cp["learn_stderr"].isna().all() and cp["forget_stderr"].isna().all())


def needs_pair(s: ClaimData, number: int) -> ClaimVerdict | None:
    """A not-testable verdict when the study lacks a measured full FT or LoRA method."""
    if s.ref is None or not s.judged():
        return untestable(number, "a measured full-finetuning run and a measured LoRA run (the "
                          "paper's: default init, no rsLoRA or DoRA)", s.scope)
    return None


# --- what would settle a part ------------------------------------------------------------
def item_count(s: ClaimData, column: str) -> float:
    """The number of items behind ``learn`` or ``forget`` (its task's stored ``n``; the smallest
    over the averaged tasks of ``forget_mean``), NaN when not stored."""
    frame = s.frame
    if column == "learn":
        tasks = [frame.learning[0].task] if frame.learning else []
    elif frame.forget_mean_tasks and frame.forgetting and frame.forgetting[0].higher_is_better:
        tasks = frame.forget_mean_tasks
    else:
        tasks = [frame.forgetting[0].task] if frame.forgetting else []
    counts = [frame.checkpoints[f"{t}/n"].max() for t in tasks if f"{t}/n" in frame.checkpoints]
    return float(min(counts)) if counts else math.nan


def settle_text(s: ClaimData, column: str, tests: Sequence[Difference]) -> str:
    """What would resolve the comparisons within noise: more items (how many) or seeds."""
    unresolved = [t for t in tests if t.exceeds() is None]
    if not unresolved:
        return ""
    if any(not math.isfinite(t.se) for t in unresolved):
        return "standard errors or per-item values in the store (re-measure the checkpoints)"
    n = item_count(s, column)
    smallest = min(unresolved, key=lambda d: abs(d.value))
    needed = smallest.items_to_resolve(n) if math.isfinite(n) else math.inf
    if math.isfinite(needed):
        return (f"{len(unresolved)} comparison(s) within noise; about {needed:,.0f} items (now "
                f"{n:.0f}) would resolve the smallest ({smallest.text()}), or more seeds")
    return f"{len(unresolved)} comparison(s) within noise: more items or more seeds"
