"""Finetuning methods: turn a base model into one whose trainable parameters are the method's.

- ``full``: every parameter trains (the paper's baseline); optionally embeddings and LM head
  frozen (a control: at tiny scale much of full finetuning's lead sits in the embeddings).
- ``peft``: any PEFT method from its configuration (``peft_grid``), through ``get_peft_model``.
- ``lora``: Hugging Face PEFT's LoRA on attention (q,k,v,o), MLP (gate,up,down) or all of them,
  with rsLoRA, DoRA and PEFT's initialisations (gaussian, PiSSA, OLoRA). Embeddings and head
  stay frozen, as in the paper. Adapter weights are float32 whatever the base's dtype (PEFT's
  ``autocast_adapter_dtype``): a bf16 frozen base with fp32 adapters, as the paper trained.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from peft import LoraConfig, PeftConfig, get_peft_model
from transformers import PreTrainedModel

from learnforget.errors import UserError
from learnforget.peft_grid import DISPLAY_NAMES, RUN_FILLED_FIELDS, TARGET_GROUPS, config_class
from learnforget.plan import MethodConfig

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
TARGET_MODULES = {
    "attention": ATTENTION_MODULES,
    "mlp": MLP_MODULES,
    "all": ATTENTION_MODULES + MLP_MODULES,
}
PEFT_INIT = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}


def linear_module_names(model: torch.nn.Module) -> set[str]:
    """The last name part of every ``nn.Linear`` in the model (e.g. ``q_proj``)."""
    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)}


def present_targets(group: str, model: torch.nn.Module, method: str = "LoRA") -> list[str]:
    """The module names of a study's target group (``attention | mlp | all``) this model has."""
    wanted = TARGET_MODULES[group]
    present = linear_module_names(model)
    targets = [name for name in wanted if name in present]
    if not targets:
        raise UserError(
            f"{method} targets '{group}' mean {', '.join(wanted)}, none of which this model "
            f"has (its linear modules: {', '.join(sorted(present))}). learnforget knows the "
            "Llama-family names (Llama, Mistral, Qwen, SmolLM, Gemma)."
        )
    return targets


def lora_config(method: MethodConfig, model: torch.nn.Module) -> LoraConfig:
    """The PEFT ``LoraConfig`` of a LoRA method point."""
    targets = present_targets(method.targets or "all", model)
    return LoraConfig(
        r=method.r,
        lora_alpha=method.alpha,
        target_modules=targets,
        lora_dropout=method.dropout,
        use_rslora=method.use_rslora,
        use_dora=method.use_dora,
        init_lora_weights=PEFT_INIT[method.init],
        bias="none",
        task_type="CAUSAL_LM",
    )


def peft_method_config(method: MethodConfig, model: torch.nn.Module,
                       total_steps: int | None = None) -> PeftConfig:
    """The PEFT config of a ``kind: peft`` point for ``model``: the study's target groups
    (``attention | mlp | all``, in ``target_modules`` and IA³'s ``feedforward_modules``) as
    this model's module names, ``task_type`` CAUSAL_LM, and the fields a run fills in itself
    (AdaLoRA's ``total_step``: ``total_steps``, the run's step count; the least valid
    value when only loading)."""
    point = dict(method.peft or {})
    peft_type, cls = config_class(point.pop("peft_type"))
    fields = {f.name for f in dataclasses.fields(cls)}
    for name in ("target_modules", "feedforward_modules"):
        if isinstance(point.get(name), str) and point[name] in TARGET_GROUPS:
            point[name] = present_targets(point[name], model, DISPLAY_NAMES.get(peft_type,
                                                                               peft_type))
    if "total_step" in RUN_FILLED_FIELDS.get(peft_type, {}):
        floor = int(point.get("tinit", 0)) + int(point.get("tfinal", 0)) + 1
        point["total_step"] = max(int(total_steps or floor), floor)
    if "task_type" in fields:
        point.setdefault("task_type", "CAUSAL_LM")
    return cls(**point)


def apply_method(model: PreTrainedModel, method: MethodConfig,
                 total_steps: int | None = None) -> torch.nn.Module:
    """The model to train: the base itself (full) or a ``PeftModel`` (LoRA, any PEFT method)
    whose adapter weights are float32 even on a bf16/fp16 base. ``total_steps``: the run's
    optimizer steps (AdaLoRA's rank schedule needs them)."""
    if method.kind == "lora":
        return get_peft_model(model, lora_config(method, model), autocast_adapter_dtype=True)
    if method.kind == "peft":
        peft_model = get_peft_model(model, peft_method_config(method, model, total_steps),
                                    autocast_adapter_dtype=True)
        trim_virtual_token_logits(peft_model)
        return peft_model
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if not method.train_embeddings:
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            if module is not None:
                for parameter in module.parameters():
                    parameter.requires_grad_(False)
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def virtual_tokens(model: torch.nn.Module) -> int:
    """How many positions a PEFT prompt method (prompt tuning, p-tuning) puts before the input:
    its logits start with as many (prefix tuning puts its prefix in the attention cache)."""
    configs = getattr(model, "peft_config", None) or {}
    config = configs.get(getattr(model, "active_adapter", "default"))
    if config is None or not config.is_prompt_learning or config.peft_type == "PREFIX_TUNING":
        return 0
    return int(config.num_virtual_tokens or 0)


def trim_virtual_token_logits(model: torch.nn.Module) -> None:
    """Drop the virtual tokens' logits from every forward's output, so that logits line up with
    the input as for any other model (training's loss and every scorer read them so)."""
    count = virtual_tokens(model)
    if not count:
        return

    def trim(module, args, output):
        if getattr(output, "logits", None) is not None and output.logits.shape[1] > count:
            output.logits = output.logits[:, count:]
        return output

    model.register_forward_hook(trim)


def merges(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a PEFT model whose method folds into the base weights (LoRA, VeRA,
    IA³, LoHa, LoKr, OFT, BOFT, AdaLoRA, …): prompt and prefix tuning add virtual tokens
    instead and have no merged weights, hence no ΔW."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTuner

    if not isinstance(model, PeftModel):
        return False
    config = model.peft_config.get(model.active_adapter)
    return (config is not None and not config.is_prompt_learning
            and isinstance(model.base_model, BaseTuner))


def optimizer_step_hook(model: torch.nn.Module) -> Callable[[int], None] | None:
    """What a method needs after each optimizer update, before the gradients are cleared,
    called with the 0-based step: AdaLoRA's ``update_and_allocate`` (its rank allocation);
    None for every other method."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return None
    allocate = getattr(model.base_model, "update_and_allocate", None)
    return allocate if callable(allocate) else None


# Adapters of models up to this size are merged into a copy for scoring (see ``scoring_view``).
MERGED_COPY_MAX_BYTES = 2 * 1024**3


@contextmanager
def scoring_view(model: torch.nn.Module, max_bytes: int = MERGED_COPY_MAX_BYTES
                 ) -> Iterator[torch.nn.Module]:
    """The model to measure with: for a PEFT model whose weights take at most ``max_bytes``, a
    copy with its adapter merged into the base weights (the same function, one matrix product
    per layer instead of three: a LoRA r=64 checkpoint of the tiny model scores about 1.5× as
    fast); otherwise ``model`` itself.

    A copy rather than PEFT's in-place ``merge_adapter``/``unmerge_adapter``: unmerging does not
    give back the base weights bit for bit (in bf16 it loses precision), and training goes on
    from those weights after the measurement."""
    from peft import PeftModel

    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if not isinstance(model, PeftModel) or not merges(model) or size > max_bytes:
        yield model
        return
    merged = copy.deepcopy(model).merge_and_unload()
    merged.eval()
    try:
        yield merged
    finally:
        del merged
