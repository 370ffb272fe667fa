"""What ``learnforget plan`` shows per run: trainable parameters and the token budget.

Parameters are counted on a model built on PyTorch's ``meta`` device from the base's config,
so planning never loads (or pretrains) weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

from learnforget.builtin import BUILTINS, builtin_model_config
from learnforget.errors import UserError
from learnforget.methods import apply_method, count_parameters
from learnforget.plan import RunConfig
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
