"""Measuring one model (a checkpoint, or the base) on the study's tasks: the scored rows, their
change from the base model and, with ``evaluation.spectrum``, the ΔW spectrum against the base
weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from learnforget.measure.evaluate import evaluate
from learnforget.measure.scoring_progress import ScoringCallback
from learnforget.measure.spectrum import spectrum_between
from learnforget.measure.spectrum_summary import spectrum_summary
from learnforget.measure.tasks import study_tasks
from learnforget.measure.uncertainty import COUNT_METRIC, has_delta, items_kind
from learnforget.methods import merges, scoring_view
from learnforget.store import Measurement
from learnforget.study import Study


def measured_tasks(study: Study, final: bool, spectrum: bool) -> set[str]:
    """What is measured at a checkpoint: the study's tasks (final-only ones only when
    ``final``), ``spectrum`` when ``spectrum``, and ``diversity`` when asked for and ``final``."""
    learning, forgetting = study_tasks(study)
    ev = study.evaluation
    names = {n for n in learning + forgetting if final or n not in ev.final_only}
    if spectrum:
        names.add("spectrum")
    if ev.diversity and final:
        names.add("diversity")
    return names


@dataclass
class Measurer:
    """Measures a model on the study's tasks and computes the change from the base model; with
    ``spectrum``, also ΔW against ``base_state`` (the base's 2-D weights, ``matrix_snapshot``)."""

    study: Study
    tokenizer: object
    base_values: dict[tuple[str, str], float]
    spectrum: bool = False
    base_state: dict[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.spectrum and self.base_state is None:
            raise ValueError("measuring the ΔW spectrum needs the base weights (base_state)")

    def tasks(self, final: bool) -> set[str]:
        """What is measured at a checkpoint (``spectrum`` and ``diversity`` included)."""
        return measured_tasks(self.study, final, self.spectrum)

    def __call__(self, model, on_task: Callable[[str], None] = lambda n: None,
                 final: bool = True, only: set[str] | None = None,
                 progress: ScoringCallback | None = None):
        """(measurement rows, artifacts) for ``model``; final-only tasks and diversity only
        when ``final``; just the tasks in ``only`` when given; scoring progress to
        ``progress``."""
        learning, forgetting = study_tasks(self.study)
        ev = self.study.evaluation
        wanted = self.tasks(final) if only is None else self.tasks(final) & only
        names = [n for n in learning + forgetting if n in wanted]
        with scoring_view(model) as scored:
            results, counts, per_item = evaluate(
                scored, self.tokenizer, names, ev.limit, ev.batch_size,
                target=self.study.target, on_task=on_task, progress=progress)
            diversity = self._diversity(scored, on_task) if "diversity" in wanted else None
        rows = task_rows(results, counts, self.base_values)
        artifacts: dict = {items_kind(task): values for task, values in per_item.items()}
        if "spectrum" in wanted:
            spectrum_rows, spectra = measure_spectrum(model, self.base_state)
            rows += spectrum_rows
            artifacts["spectrum"] = spectra
        if diversity is not None:
            summary, samples = diversity
            rows += [Measurement("diversity", metric, value) for metric, value in summary.items()]
            artifacts["diversity_samples"] = samples
        return rows, artifacts

    def _diversity(self, model, on_task: Callable[[str], None]):
        """(summary, samples) of the diversity of the model's sampled generations."""
        from learnforget.measure.diversity import diversity_prompts, measure_diversity

        on_task("diversity")
        ev = self.study.evaluation
        real_code = not self.study.base.model.startswith("builtin:")
        prompts = diversity_prompts(self.study.target, ev.diversity_prompts, real_code)
        return measure_diversity(model, self.tokenizer, prompts, ev)


def task_rows(results: dict[str, dict[str, float]], counts: dict[str, int],
              base_values: dict[tuple[str, str], float]) -> list[Measurement]:
    """Measurement rows of scored tasks: every metric (``acc``, ``acc_stderr``, …), the item
    count ``n``, and ``<metric>_delta`` = value − base value for each metric the base model has
    (none for standard errors and counts: ``uncertainty.has_delta``)."""
    rows = [Measurement(task, metric, value)
            for task, metrics in results.items() for metric, value in metrics.items()]
    rows += [Measurement(task, COUNT_METRIC, count) for task, count in counts.items()]
    rows += [Measurement(m.task, m.metric + "_delta", m.value - base_values[key])
             for m in list(rows)
             if has_delta(m.metric) and (key := (m.task, m.metric)) in base_values
             and m.value is not None and base_values[key] is not None]
    return rows


NO_DELTA_W = "no_delta_w"
"""The spectrum metric of a method that changes no weight (prompt, prefix tuning)."""


def measure_spectrum(model, base_state: dict[str, torch.Tensor]):
    """Summary rows (task ``spectrum``) and per-matrix details of ΔW for ``model``; a PEFT
    method that does not merge (prompt, prefix tuning) has no ΔW: one row ``no_delta_w`` = 1
    and no details."""
    if hasattr(model, "peft_config") and not merges(model):
        return [Measurement("spectrum", NO_DELTA_W, 1.0)], []
    spectra = spectrum_between(base_state, model)
    summary = spectrum_summary(spectra)
    rows = [Measurement("spectrum", metric, value) for metric, value in summary.items()]
    return rows, [s.to_dict() for s in spectra]


def matrix_snapshot(model) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's 2-D weights: W_base for the ΔW spectrum."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            if v.ndim == 2}
