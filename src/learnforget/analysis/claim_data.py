"""What every claim of the checklist shares: the verdict record, the claims' texts and
thresholds, how a claim's parts combine into one verdict, and ``ClaimData`` (a study's frame with
each method's best LR, best-LR curves and which LoRA runs the paper's claims are judged on). The
claims themselves are in ``learnforget.analysis.claims`` (learning, forgetting, learning rates,
modules), ``curve_claims`` (the learn–forget frontier) and ``weight_claims`` (ΔW rank, diversity,
intruders).

How a verdict is reached (docs/report.md lists every rule):

- Each method is taken at its best learning rate (``best_lrs``: most final learning), averaged
  over seeds per checkpoint; diverged and failed runs never count. "Full finetuning" is the
  reference label (``reference_label``). "LoRA" in claims 1–5 and 7–9 is the paper's LoRA
  (``is_paper_lora``: all linear modules, default init, α = 2r, no rsLoRA or DoRA) trained with
  the reference's optimizer; when a study has none on all linear modules, the plain LoRA on the
  targets it has, and the verdict says so. Other targets and the variants are compared apart
  (``variant_comparison``), never inside a verdict.
- Every part of a claim is a set of comparisons, each a ``Difference`` oriented so that a
  positive value supports the claim, with its error from the study's noise draws
  (``learnforget.analysis.draws``: items resampled jointly for every checkpoint, seeds
  resampled, each method's best LR cross-fitted on item halves). A comparison supports the
  claim when it lies beyond its critical value (Z = 1.96, or Student's t when seeds give few
  degrees of freedom); it counts against the claim only when it lies below 0 beyond the
  Holm-corrected one-sided threshold over every comparison of the claim (``combine``); in
  between, or without an error estimate, it is within noise. Nothing is judged from a point
  estimate: a study without standard errors gets inconclusive verdicts that say so.
- A claim **does not hold** when any part fails; it is **not testable** when its main part
  cannot be tested; it is **inconclusive** when a part is neither settled for nor against;
  otherwise it **holds**. Each verdict says what would settle the parts that are not settled,
  how many comparisons it made and which sources of noise its errors count (``noise``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from learnforget.analysis.comparison import Difference, as_float
from learnforget.analysis.draws import Draws, build_draws
from learnforget.analysis.frame import (
    Frame,
    best_lrs,
    is_paper_lora,
    is_plain_lora,
    reference_label,
    usable,
)

Verdict = Literal["holds", "does not hold", "inconclusive", "not testable"]
HOLDS: Verdict = "holds"
FAILS: Verdict = "does not hold"
INCONCLUSIVE: Verdict = "inconclusive"
UNTESTABLE: Verdict = "not testable"
VERDICTS: tuple[Verdict, ...] = (HOLDS, FAILS, INCONCLUSIVE, UNTESTABLE)

SEVERAL = 2.0  # claim 5 (IFT): "several times" = at least twice (the paper reports 4–10×)
CPT_SIMILAR = 4.0  # claim 5 (CPT): best LRs within 4× (the paper: 1× code, 4× math)
FAR_MORE = 10.0  # claim 7: the paper's full-FT ΔW needs 10–100× the LoRA ranks it studies
PARETO_TOLERANCE = 0.10  # claim 3: share of full finetuning's forgetting range
HIGH_EARLY = 0.5  # claim 7: the first checkpoint's rank90 reaches half of the final one
MIN_INTRUDERS = 1.0  # claim 9: "creates intruders" = at least one per matrix on average
FEW_INTRUDERS = 0.5  # claim 9: "few" = at most half of low-rank LoRA's count
ALPHA = 0.025  # one-sided level against a claim (Z = 1.96 two-sided), Holm-corrected

CLAIMS: dict[int, str] = {
    1: "Full finetuning learns at least as much as LoRA at every budget (each at its best LR); "
    "the gap is larger in CPT than in IFT and narrows as the rank grows.",
    2: "LoRA forgets less; forgetting grows with training for both, faster for full finetuning.",
    3: "All checkpoints lie near one learning–forgetting curve.",
    4: "At equal learning, LoRA forgets less than full finetuning with weight decay or dropout.",
    5: "In IFT LoRA's best LR is several times full finetuning's (in CPT about the same), and "
    "LoRA is more sensitive to the LR.",
    6: "Target modules: all > MLP > attention; the modules matter more than the rank.",
    7: "Full finetuning's ΔW needs far more rank for 90% of its variance than the LoRA rank; it "
    "is high early, rises with training and is higher in MLP than in attention.",
    8: "LoRA keeps generations more diverse than full finetuning.",
    9: "Low-rank LoRA creates intruder dimensions; full finetuning creates few.",
}


@dataclass(frozen=True)
class ClaimVerdict:
    """One claim judged: its number (paper.md's list), short text, verdict, the numbers behind
    the verdict (one line per part), what is missing to test the rest, what would settle the
    parts that are inconclusive, which runs stand for "LoRA" (``scope``), how many comparisons
    the verdict made (``comparisons``: the Holm correction's count) and which sources of noise
    their errors count (``noise``), and each part's own verdict (``parts``)."""

    number: int
    claim: str
    verdict: Verdict
    evidence: str
    missing: str = ""
    settle: str = ""
    scope: str = ""
    comparisons: int = 0
    noise: str = ""
    parts: dict[str, str] = field(default_factory=dict)  # each part's name → its verdict

    def to_dict(self) -> dict:
        """A JSON-ready dict of the fields."""
        return asdict(self)


@dataclass(frozen=True)
class Part:
    """One part of a claim: its comparisons (``tests``, each oriented so that a positive
    difference supports the claim; ``strict``: an exact tie 0 ± 0 does not support it), or a
    verdict decided another way (``verdict``: not testable, or an interval rule), the numbers
    behind it, what is missing to test it, what would settle it and whether it is the claim's
    main part."""

    name: str
    verdict: Verdict | None = None
    evidence: str = ""
    missing: str = ""
    main: bool = False
    settle: str = ""
    tests: tuple[Difference, ...] = ()
    strict: bool = True


def holm(p_values: list[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down procedure: which of ``p_values`` are rejected at family-wise level
    ``alpha`` (NaN never is)."""
    order = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    rejected = [False] * len(p_values)
    for rank, (p, i) in enumerate(order):
        if p > alpha / (len(order) - rank):
            break
        rejected[i] = True
    return rejected


def _judged(part: Part, rejected: list[bool]) -> tuple[Verdict, str]:
    """A part's verdict from its comparisons and which of them Holm rejected, and a note."""
    if part.verdict is not None:
        return part.verdict, ""
    if not part.tests:
        return UNTESTABLE, ""
    if any(rejected):
        return FAILS, ""
    support = [t.exceeds(strict=part.strict) for t in part.tests]
    if all(r is True for r in support):
        return HOLDS, ""
    if any(r is False for r in support):
        return INCONCLUSIVE, (" (a comparison lies below 0 beyond its own error but not beyond "
                              "the Holm-corrected threshold: within noise)")
    if any(not math.isfinite(t.se) for t in part.tests):
        return INCONCLUSIVE, (" (no noise estimate for a comparison: the store has no "
                              "standard errors, or the value is undefined on more than 10% of "
                              "the draws)")
    return INCONCLUSIVE, ""


def combine(number: int, parts: list[Part], scope: str = "", noise: str = "") -> ClaimVerdict:
    """The claim's verdict from its parts (rule in the module docstring): each part's
    comparisons read against Holm's correction over all of the claim's comparisons."""
    pool = [(k, j) for k, part in enumerate(parts) if part.verdict is None
            for j, test in enumerate(part.tests) if math.isfinite(test.se) and test.se > 0]
    rejected = holm([parts[k].tests[j].p_below() for k, j in pool])
    judged = []
    for k, part in enumerate(parts):
        marks = [r for (kk, _), r in zip(pool, rejected, strict=True) if kk == k]
        verdict, note = _judged(part, marks)
        judged.append((part, verdict, note))
    tested = [(p, v, n) for p, v, n in judged if v != UNTESTABLE]
    if any(v == FAILS for _, v, _ in tested):
        verdict = FAILS
    elif not tested or any(p.main and v == UNTESTABLE for p, v, _ in judged):
        verdict = UNTESTABLE
    elif any(v == INCONCLUSIVE for _, v, _ in tested):
        verdict = INCONCLUSIVE
    else:
        verdict = HOLDS
    evidence = "\n".join(f"{p.name} — {v}: {p.evidence}{n}" for p, v, n in tested)
    missing = [f"{p.name}: {p.missing}" for p, v, _ in judged if v == UNTESTABLE and p.missing]
    missing += [p.missing for p, _, _ in tested if p.missing]
    settle = [f"{p.name}: {p.settle}" for p, v, _ in judged if p.settle and v == INCONCLUSIVE]
    if pool:
        noise = (f"{noise}; " if noise else "") + (
            f"{len(pool)} comparison(s): one counts against the claim only beyond Holm's "
            f"threshold over all of them (one-sided {ALPHA:g})")
    return ClaimVerdict(number, CLAIMS[number], verdict, evidence, "; ".join(missing),
                        "; ".join(settle), scope, len(pool), noise,
                        {p.name: v for p, v, _ in judged})


def untestable(number: int, missing: str, scope: str = "") -> ClaimVerdict:
    """Claim ``number`` not testable, for want of ``missing``."""
    return ClaimVerdict(number, CLAIMS[number], UNTESTABLE, "", missing, "", scope)


def interval_verdict(low: float, high: float, lowest: float, highest: float) -> Verdict:
    """An interval rule: the quantity lies in [low, high] (its plausible range); holds when the
    whole range lies in [lowest, highest], fails when none of it does, else inconclusive."""
    if lowest <= low and high <= highest:
        return HOLDS
    if high < lowest or low > highest:
        return FAILS
    return INCONCLUSIVE


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


def reading(diff: Difference) -> str:
    """How a comparison reads: beyond noise for, within noise, or beyond noise against."""
    result = diff.exceeds()
    return "within noise" if result is None else "" if result else "against"


# --- formatting ---------------------------------------------------------------------------------
def fmt(value: float) -> str:
    """Three significant digits; ``—`` for NaN."""
    return f"{value:.3g}" if math.isfinite(value) else "—"


def fmt_tokens(value: float) -> str:
    """A token count: 295k, 1.2M, 20B."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


# --- the study's data at each method's best LR -------------------------------------------------
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
    _curves: dict[str, pd.DataFrame] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.best = best_lrs(self.frame)
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
        """Usable checkpoints of ``label`` at its best LR, averaged over seeds per step: values
        are means, ``*_se`` columns the standard error of the mean (√Σse² / k), ``seeds`` the
        number of runs and ``learn_sd`` / ``forget_sd`` the spread across seeds (NaN for one)."""
        if label not in self._curves:
            cp = usable(self.frame.checkpoints)
            best = self.best.get(label)
            rows = cp[
                (cp["label"] == label)
                & np.isclose(cp["lr"].astype(float), best if best is not None else np.nan)
            ]
            self._curves[label] = seed_means(rows)
        return self._curves[label]

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
        se_column = se_column_of(column)
        if row is None or se_column not in row.index:
            return math.nan
        return as_float(row[se_column])

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
        return cp.empty or (cp["learn_se"].isna().all() and cp["forget_se"].isna().all())


def se_column_of(column: str) -> str:
    """The standard-error column of a value column (``learn`` → ``learn_se``,
    ``task/metric`` → ``task/metric_stderr``)."""
    return f"{column}_stderr" if "/" in column else f"{column}_se"


def seed_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Checkpoint rows averaged over seeds per step (see ``ClaimData.curve``)."""
    if rows.empty:
        return pd.DataFrame(columns=["step", "tokens", "learn", "forget", "seeds"])
    numeric = rows.select_dtypes(include="number").columns.difference(["step"])
    numeric = [c for c in numeric if c != "seed"]
    groups = rows.groupby("step")
    curve = groups[numeric].mean()
    errors = [c for c in numeric if c.endswith("_se") or c.endswith("_stderr")]
    if errors:
        squares = rows[errors].astype(float) ** 2
        counts = squares.groupby(rows["step"]).count().astype(float).replace(0.0, np.nan)
        curve[errors] = np.sqrt(squares.groupby(rows["step"]).sum(min_count=1)) / counts
    curve["seeds"] = groups["run_id"].nunique()
    for column in ("learn", "forget"):
        curve[f"{column}_sd"] = groups[column].std(ddof=1) if column in rows else np.nan
    return curve.reset_index().sort_values("step").reset_index(drop=True)


def needs_pair(s: ClaimData, number: int) -> ClaimVerdict | None:
    """A not-testable verdict when the study lacks a measured full FT or LoRA method."""
    if s.ref is None or not s.judged():
        return untestable(number, "a measured full-finetuning run and a measured LoRA run (the "
                          "paper's: default init, no rsLoRA or DoRA)", s.scope)
    return None
