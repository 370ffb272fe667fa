"""What ``learnforget plan`` shows per run: trainable parameters and the token budget.

Parameters are counted on a model built on PyTorch's ``meta`` device from the base's config,
so planning never loads (or pretrains) weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

from learnforget.builtin import BUILTINS, builtin_model_config
from learnforget.errors import UserError
from learnforget.methods import apply_method, count_parameters
from learnforget.plan import RunConfig
from learnforget.precision import MIXED, bf16_lost_update_threshold, uses_cuda
from learnforget.study import BaseModelSpec


@dataclass(frozen=True)
class RunSummary:
    """One line of the plan."""

    run_id: str
    label: str
    lr: float
    seed: int
    optimizer: str
    trainable: int
    total: int
    budget: str


def base_config(spec: BaseModelSpec):
    """The base's model config without loading weights (built-ins: from their recipe)."""
    if spec.model.startswith("builtin:"):
        name = spec.model.split(":", 1)[1]
        if name not in BUILTINS:
            raise UserError(f"unknown built-in model {spec.model!r}; use builtin:tiny or "
                            "builtin:micro")
        recipe = BUILTINS[name]

        class _Vocab:  # the trained tokenizer has exactly vocab_size entries
            eos_token_id = 0

            def __len__(self) -> int:
                return recipe.vocab_size

        return builtin_model_config(recipe, _Vocab())
    from learnforget.base import resolve_source

    source = resolve_source(spec)
    try:
        return AutoConfig.from_pretrained(source.name_or_path, **source.kwargs())
    except (OSError, ValueError) as exc:
        raise UserError(f"could not read the config of {spec.model!r}: {exc}") from None


def summarize(runs: list[RunConfig]) -> list[RunSummary]:
    """Parameters and budget of every run (one meta-device model per distinct method)."""
    out = []
    cache: dict[str, tuple[int, int]] = {}
    config: LlamaConfig | None = None
    for run in runs:
        key = run.method.model_copy(update={"lr": 0.0, "init": "default"}).model_dump_json()
        if key not in cache:
            config = config or base_config(run.base)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config)
            method = run.method.model_copy(update={"init": "default"})  # no SVD on meta
            cache[key] = count_parameters(apply_method(model, method))
        trainable, total = cache[key]
        b = run.budgets
        if b.unit == "tokens":
            budget = f"{int(b.values[-1]):,} tokens"
        elif b.unit == "steps":
            tokens = int(b.values[-1]) * run.training.batch_size * run.training.seq_len
            budget = f"{int(b.values[-1])} steps (≤{tokens:,} tokens)"
        else:
            budget = f"{b.values[-1]:g} epochs"
        out.append(RunSummary(run.run_id, run.label, run.method.lr, run.seed,
                              run.optimizer.name, trainable, total, budget))
    return out


def precision_warnings(runs: list[RunConfig]) -> list[str]:
    """Warnings about the runs' ``training.precision``: bf16-pure full finetuning rounds small
    updates away (with the weight magnitude from which each LR's steps are lost), and mixed
    precision on a CPU costs time without saving any."""
    warnings = []
    pure = sorted({r.method.lr for r in runs
                   if r.training.precision == "bf16-pure" and r.method.is_full})
    if pure:
        limits = ", ".join(f"lr {lr:g}: |w| > {bf16_lost_update_threshold(lr):.2g}"
                           for lr in pure)
        warnings.append(
            "training.precision bf16-pure keeps full finetuning's weights in bf16, which has 8 "
            "significant bits: a step moves a weight by about the learning rate (exactly so on "
            "AdamW's first step and with Lion), and a change below half the bf16 spacing at "
            f"that weight is rounded away. Weights that ignore every step: {limits} (weights "
            "drawn with the common initialisation std 0.02 have a median |w| of 0.013). Full "
            "finetuning then learns less than it should; use bf16-mixed (fp32 master weights) "
            "unless memory forces bf16-pure. LoRA's adapter weights stay fp32 either way.")
    cpu_mixed = sorted({r.training.precision for r in runs
                        if r.training.precision in MIXED and not uses_cuda(r.base.device)})
    if cpu_mixed:
        warnings.append(
            f"training.precision {', '.join(cpu_mixed)} on a CPU: autocast there is slower "
            "than fp32 (about 5x on builtin:micro) and saves no weight memory; fp32 is the "
            "CPU default.")
    return warnings


@dataclass(frozen=True)
class SearchCost:
    """The training a study's runs take in all, in ``unit`` (tokens, or epochs where the budgets
    are in epochs): under grid, and under halving at the least and at the most."""

    unit: str
    grid: float
    halving_least: float
    bound: bool  # the budgets are steps: tokens are at most batch_size × seq_len per step

    @property
    def halving_most(self) -> float:
        """Halving at the most: every LR within noise of the best at every rung, the grid."""
        return self.grid


def search_cost(runs: list[RunConfig], eta: int) -> SearchCost:
    """What the runs train in all under grid, and under successive halving with ``eta`` at the
    least: at each rung only the best ⌈n/η⌉ LRs of each method go on (``n``: its LRs at that
    rung; the seeds of an LR go on together)."""
    first = runs[0]
    budgets, training = first.budgets, first.training
    per_unit = training.batch_size * training.seq_len if budgets.unit == "steps" else 1
    positions = [value * per_unit for value in budgets.values]
    lrs: dict[str, dict[float, int]] = {}  # method label → LR → its runs (seeds)
    for run in runs:
        by_lr = lrs.setdefault(run.label, {})
        by_lr[run.method.lr] = by_lr.get(run.method.lr, 0) + 1
    least = 0.0
    for by_lr in lrs.values():
        seeds = max(by_lr.values())
        going, reached = len(by_lr), 0.0
        for index, position in enumerate(positions):
            least += going * seeds * (position - reached)
            reached = position
            if index < len(positions) - 1:
                going = math.ceil(going / eta)
    grid = float(len(runs) * positions[-1])
    unit = "epochs" if budgets.unit == "epochs" else "tokens"
    return SearchCost(unit, grid, least, budgets.unit == "steps")


def search_cost_lines(cost: SearchCost, search: str, eta: int) -> list[str]:
    """How ``learnforget plan`` states the training of the grid and of halving."""
    up_to = "≤" if cost.bound else ""

    def amount(value: float) -> str:
        return f"{up_to}{value:,.0f} tokens" if cost.unit == "tokens" else f"{value:g} epochs"

    share = cost.halving_least / cost.grid if cost.grid else 1.0
    would = "trains" if search == "halving" else "would train"
    return [f"training in all, grid: {amount(cost.grid)}",
            f"search: halving (eta {eta}) {would} between {amount(cost.halving_least)} "
            f"({share:.0%} of the grid: only the best ⌈n/{eta}⌉ LRs of each method go on at "
            f"each rung) and {amount(cost.halving_most)} (every LR within noise of the best "
            "at every rung)"]
