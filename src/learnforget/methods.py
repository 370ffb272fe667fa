"""Finetuning methods: turn a base model into one whose trainable parameters are the method's.

- ``full``: every parameter trains (the paper's baseline); optionally embeddings and LM head
  frozen (a control: at tiny scale much of full finetuning's lead sits in the embeddings).
- ``lora``: Hugging Face PEFT's LoRA on attention (q,k,v,o), MLP (gate,up,down) or all of them,
  with rsLoRA, DoRA and PEFT's initialisations (gaussian, PiSSA, OLoRA). Embeddings and head
  stay frozen, as in the paper. Adapter weights are float32 whatever the base's dtype (PEFT's
  ``autocast_adapter_dtype``): a bf16 frozen base with fp32 adapters, as the paper trained.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import LoraConfig, get_peft_model
from transformers import PreTrainedModel

from learnforget.errors import UserError
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


def lora_config(method: MethodConfig, model: torch.nn.Module) -> LoraConfig:
    """The PEFT ``LoraConfig`` of a LoRA method point."""
    wanted = TARGET_MODULES[method.targets or "all"]
    present = linear_module_names(model)
    targets = [name for name in wanted if name in present]
    if not targets:
        raise UserError(
            f"LoRA targets '{method.targets}' mean {', '.join(wanted)}, none of which this model "
            f"has (its linear modules: {', '.join(sorted(present))}). learnforget knows the "
            "Llama-family names (Llama, Mistral, Qwen, SmolLM, Gemma)."
        )
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


def apply_method(model: PreTrainedModel, method: MethodConfig) -> torch.nn.Module:
    """The model to train: the base itself (full) or a ``PeftModel`` (LoRA) whose adapter
    weights are float32 even on a bf16/fp16 base."""
    if method.kind == "lora":
        return get_peft_model(model, lora_config(method, model), autocast_adapter_dtype=True)
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
    if not isinstance(model, PeftModel) or size > max_bytes:
        yield model
        return
    merged = copy.deepcopy(model).merge_and_unload()
    merged.eval()
    try:
        yield merged
    finally:
        del merged
