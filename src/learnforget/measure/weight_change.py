"""Which weights a finetune changed: the pairs (W_base, W_tuned) whose difference is ΔW.

Names are matched across wrappers (PEFT's ``base_model.model.`` and ``.base_layer``,
torch.compile's ``_orig_mod.``, DDP's ``module.``) and between a causal LM and a bare backbone;
input embeddings and output heads are left out unless asked for; two models of different layers
or shapes are refused. ``learnforget.measure.spectrum`` summarises the pairs found here.

ΔW of a PEFT LoRA model is taken against the ORIGINAL base weights: PiSSA, OLoRA, CorDA, LoftQ and
LoRA-GA overwrite the base layer's weight with a residual at initialisation, so the adapter's own
base weight is not W_base. The tuned weight is the adapter merged by PEFT's own logic.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from learnforget.errors import UserError

WeightPairs = dict[str, tuple[Tensor, Tensor]]

EMBEDDING_MARKERS: tuple[str, ...] = (
    "embed_tokens",
    "lm_head",
    "embed_out",
    "wte",
    "wpe",
    "word_embeddings",
)
"""Name parts of input embeddings and output heads, which the paper keeps frozen."""

# Initialisations that overwrite the base layer's weight with a residual
# (see `LoraLayer.update_layer` in PEFT).
BASE_MODIFYING_INITS: tuple[str, ...] = ("pissa", "corda", "olora", "loftq", "lora_ga")

_WRAPPER_PREFIXES = ("base_model.model.", "_orig_mod.", "module.")
_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def normalize_name(name: str) -> str:
    """The base model's name for a parameter: PEFT's `base_model.model.` prefix and `.base_layer`
    infix, torch.compile's `_orig_mod.` and DDP's `module.` prefixes removed."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                stripped = True
    return name.replace(".base_layer.", ".").replace("._orig_mod.", ".")


def _alignment_key(name: str) -> str:
    """Key matching a causal-LM name (`model.layers.0.x`) with a bare backbone's (`layers.0.x`)."""
    name = normalize_name(name)
    return name[len("model.") :] if name.startswith("model.") else name


def is_embedding_name(name: str) -> bool:
    """Whether a parameter name belongs to an input embedding or an output head."""
    return any(part in EMBEDDING_MARKERS for part in name.split("."))


def parse_layer_and_module(name: str) -> tuple[int | None, str]:
    """(layer index, module kind) from a parameter name, e.g.
    `model.layers.3.mlp.gate_proj.weight` -> (3, "gate_proj")."""
    match = _LAYER_INDEX.search(f".{name}.")
    parts = name.split(".")
    if parts[-1] in ("weight", "bias") and len(parts) > 1:
        parts = parts[:-1]
    return (int(match.group(1)) if match else None), parts[-1]


def _aligned_2d(state: Mapping[str, Tensor]) -> dict[str, str]:
    """alignment key -> original key, for the 2-D tensors of a state dict."""
    return {_alignment_key(k): k for k, v in state.items() if isinstance(v, Tensor) and v.ndim == 2}


def _state_dict(model_or_state: nn.Module | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    if isinstance(model_or_state, nn.Module):
        return model_or_state.state_dict()
    return model_or_state


def changed_matrices(
    base_state: Mapping[str, Tensor],
    tuned_state: Mapping[str, Tensor],
    atol: float = 0.0,
    include_embeddings: bool = False,
) -> WeightPairs:
    """Every 2-D weight that differs by more than `atol` (max absolute difference): base-model
    name -> (W_base, W_tuned). Both models must have the same matrices with the same shapes
    (embeddings aside, unless compared): a model of another depth or width is a `UserError`.

    Embeddings and the LM head are left out unless `include_embeddings`. Names are normalised to
    the base model's (PEFT/compile/DDP wrappers stripped). A tuned state that still holds unmerged
    LoRA factors is refused: its base weights did not move, use `lora_tuned_weights` for it.
    """
    if any(".lora_A." in k or ".lora_B." in k for k in tuned_state):
        raise UserError(
            "the tuned weights hold unmerged LoRA adapter factors (lora_A/lora_B); pass the PEFT "
            "model itself (peft_model=...) or merge the adapter first (merge_and_unload)"
        )
    base_keys = _aligned_2d(base_state)
    tuned_keys = _aligned_2d(tuned_state)
    common = [key for key in base_keys if key in tuned_keys]
    if not common:
        raise UserError(
            "the base and the tuned model share no 2-D weight names; check that the tuned model "
            "was finetuned from this base model"
        )
    _check_same_layout(base_state, tuned_state, base_keys, tuned_keys, include_embeddings)
    pairs: WeightPairs = {}
    for key in common:
        name = normalize_name(base_keys[key])
        if not include_embeddings and is_embedding_name(name):
            continue
        w_base, w_tuned = base_state[base_keys[key]], tuned_state[tuned_keys[key]]
        if atol == 0.0 and w_base.dtype == w_tuned.dtype:
            differs = not torch.equal(w_base, w_tuned.to(w_base.device))
        else:
            diff = w_tuned.to(device=w_base.device, dtype=torch.float32) - w_base.float()
            differs = bool(diff.abs().max() > atol)
        if differs:
            pairs[name] = (w_base, w_tuned)
    return pairs


def _layers_of(names: list[str]) -> str:
    """``layers 2, 3`` (or the first names, when they are not in numbered layers)."""
    layers = sorted({layer for layer in (parse_layer_and_module(n)[0] for n in names)
                     if layer is not None})
    if layers:
        return "layers " + ", ".join(map(str, layers))
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _check_same_layout(
    base_state: Mapping[str, Tensor],
    tuned_state: Mapping[str, Tensor],
    base_keys: dict[str, str],
    tuned_keys: dict[str, str],
    include_embeddings: bool,
) -> None:
    """A ``UserError`` when the two models' compared matrices differ in names (different depth
    or architecture) or shapes: ΔW is only defined between two states of one model."""

    def compared(keys: dict[str, str]) -> set[str]:
        return {key for key, name in keys.items()
                if include_embeddings or not is_embedding_name(normalize_name(name))}

    base_only = sorted(compared(base_keys) - tuned_keys.keys())
    tuned_only = sorted(compared(tuned_keys) - base_keys.keys())
    if base_only or tuned_only:
        sides = []
        if base_only:
            sides.append(f"only the base has {_layers_of(base_only)} ({len(base_only)} "
                         f"matrices, e.g. {normalize_name(base_keys[base_only[0]])})")
        if tuned_only:
            sides.append(f"only the tuned model has {_layers_of(tuned_only)} "
                         f"({len(tuned_only)} matrices, e.g. "
                         f"{normalize_name(tuned_keys[tuned_only[0]])})")
        raise UserError("the two models have different layers: " + "; ".join(sides)
                        + ". ΔW needs the model that was finetuned from this base")
    for key in sorted(compared(base_keys)):
        w_base, w_tuned = base_state[base_keys[key]], tuned_state[tuned_keys[key]]
        if w_base.shape != w_tuned.shape:
            raise UserError(
                f"{normalize_name(base_keys[key])} is {tuple(w_base.shape)} in the base but "
                f"{tuple(w_tuned.shape)} in the tuned model: the two are different "
                "architectures; ΔW needs the model that was finetuned from this base")


def _lora_inits(peft_model: nn.Module) -> dict[str, Any]:
    configs = getattr(peft_model, "peft_config", {}) or {}
    return {name: getattr(cfg, "init_lora_weights", True) for name, cfg in configs.items()}


def _modifies_base(init: Any) -> bool:
    return isinstance(init, str) and init.lower().startswith(BASE_MODIFYING_INITS)


def _merged_weight(layer: nn.Module) -> Tensor:
    """The effective weight of one LoRA layer, by PEFT's own merge logic on a float32 copy.

    Copying one layer (not the model) bounds the extra memory to a few copies of one matrix, and
    PEFT's `merge` handles every variant correctly (DoRA's column-norm rescaling is not base + BA).
    The copy is upcast first: merging in bf16 would round the merged weight and add full-rank
    rounding noise to a LoRA ΔW that is often smaller than one bf16 ulp of W.
    """
    weight = layer.get_base_layer().weight
    if not weight.dtype.is_floating_point:
        raise UserError(
            f"the base weights are quantized ({weight.dtype}); load the base model in float32, "
            "float16 or bfloat16 to analyse the weight change"
        )
    work = copy.deepcopy(layer).float()
    work.merge(safe_merge=True)
    return work.get_base_layer().weight.detach()


def lora_tuned_weights(
    peft_model: nn.Module,
    base_state: Mapping[str, Tensor],
    include_embeddings: bool = False,
) -> WeightPairs:
    """(W_original, W_tuned) for every weight a PEFT LoRA model adapts, W_tuned being the effective
    float32 weight with the active adapters merged (LoRA, rsLoRA, DoRA, PiSSA, OLoRA, ...).

    `base_state` must hold the ORIGINAL base weights (e.g. the base model's state dict taken before
    `get_peft_model`, or loaded afresh): for residual-initialised adapters (PiSSA, OLoRA, CorDA,
    LoftQ, LoRA-GA) the adapter's own base layer holds W_res = W − scale·B₀A₀, and ΔW against it
    would be wrong. The PEFT model is not modified.
    """
    from peft.tuners.lora import LoraLayer

    base_keys = _aligned_2d(base_state)
    inits = _lora_inits(peft_model)
    pairs: WeightPairs = {}
    for module_name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        base_weight = getattr(module.get_base_layer(), "weight", None)
        if not isinstance(base_weight, Tensor) or base_weight.ndim != 2:
            continue
        name = normalize_name(f"{module_name}.weight")
        if not include_embeddings and is_embedding_name(name):
            continue
        key = base_keys.get(_alignment_key(name))
        if key is None:
            raise UserError(
                f"the base weights have no '{name}'; pass the state dict of the base model this "
                "adapter was trained on"
            )
        original = base_state[key]
        active = [a for a in module.active_adapters if a in module.lora_A]
        residual = any(_modifies_base(inits.get(a)) for a in active)
        if (
            residual
            and not module.merged
            and torch.equal(original, base_weight.to(device=original.device, dtype=original.dtype))
        ):
            raise UserError(
                f"the base weights given for '{name}' are the adapter's residual base (its "
                "initialisation rewrote the base weight); pass the ORIGINAL base model's weights, "
                "loaded separately or copied before get_peft_model"
            )
        pairs[name] = (original, _merged_weight(module))
    return pairs


def _has_lora_layers(peft_model: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in peft_model.modules())


def merged_tuned_weights(
    peft_model: nn.Module,
    base_state: Mapping[str, Tensor],
    include_embeddings: bool = False,
) -> WeightPairs:
    """(W_original, W_tuned) for every weight a PEFT model of any merging method (VeRA, IA³,
    LoHa, LoKr, OFT, BOFT, …) changes, W_tuned from PEFT's ``merge_and_unload`` on a float32
    copy of the model (the model itself is not modified). A method that does not merge (prompt
    or prefix tuning) has no ΔW: a ``UserError``."""
    config = next(iter((getattr(peft_model, "peft_config", {}) or {}).values()), None)
    if config is not None and config.is_prompt_learning:
        raise UserError(f"{config.peft_type} adds virtual tokens and changes no weight: it has "
                        "no ΔW")
    merged = copy.deepcopy(peft_model).float().merge_and_unload(safe_merge=True)
    try:
        return changed_matrices(base_state, merged.state_dict(),
                                include_embeddings=include_embeddings)
    finally:
        del merged


def weight_pairs_between(
    base: nn.Module | Mapping[str, Tensor],
    tuned: nn.Module | Mapping[str, Tensor] | None = None,
    peft_model: nn.Module | None = None,
    *,
    atol: float = 0.0,
    include_embeddings: bool = False,
) -> WeightPairs:
    """(W_base, W_tuned) for every weight that moved from a base model to a finetuned one.

    `base` is the original base model or its state dict. Give exactly one of `tuned` (a fully
    finetuned or merged model, or its state dict: `changed_matrices`) and `peft_model` (a PEFT
    LoRA model: `lora_tuned_weights`; any other merging PEFT method: `merged_tuned_weights`; a
    PEFT model passed as `tuned` is treated as one).
    """
    if tuned is not None and peft_model is None and hasattr(tuned, "peft_config"):
        tuned, peft_model = None, tuned
    if (tuned is None) == (peft_model is None):
        raise UserError(
            "give exactly one of a tuned model (tuned=...) or a PEFT model (peft_model=...)"
        )
    base_state = _state_dict(base)
    if peft_model is not None:
        if not _has_lora_layers(peft_model):
            return merged_tuned_weights(peft_model, base_state, include_embeddings)
        return lora_tuned_weights(peft_model, base_state, include_embeddings=include_embeddings)
    assert tuned is not None
    return changed_matrices(
        base_state, _state_dict(tuned), atol=atol, include_embeddings=include_embeddings
    )
