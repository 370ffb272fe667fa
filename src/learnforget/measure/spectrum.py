"""How the weights moved: the singular value spectrum of ΔW = W_tuned − W_base per weight matrix.

For every changed 2-D weight this computes the rank needed for 90% of the spectral energy
(Σσ², the paper's measure) and of Σσ, the same ranks for a Gaussian matrix of the same shape and
Frobenius norm (the Marchenko–Pastur baseline), the Frobenius norm of ΔW and the number of
intruder dimensions (see `learnforget.measure.intruders`). Matrices of one shape are stacked and
decomposed in one batched float32 call. docs/analysis.md explains every number.

ΔW of a PEFT LoRA model is taken against the ORIGINAL base weights: PiSSA, OLoRA, CorDA, LoftQ and
LoRA-GA overwrite the base layer's weight with a residual at initialisation, so the adapter's own
base weight is not W_base.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from learnforget.errors import UserError
from learnforget.measure import decompose
from learnforget.measure.intruders import similarity_and_base_spectrum_batched

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

STORED_SINGULAR_VALUES = 256
"""How many of ΔW's largest singular values a MatrixSpectrum keeps (for the spectrum plot)."""

DEFAULT_MAX_BATCH_ELEMENTS = 1 << 27
"""Elements per stacked chunk (512 MiB of float32): bounds the memory of one batched SVD call."""

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


def _ranks_for_variance(singular_values: Tensor, threshold: float, power: int) -> Tensor:
    """Batched `rank_for_variance` over the last dimension; an int64 tensor of the batch shape."""
    energy = singular_values.to(torch.float64).abs().pow(power)
    cumulative = energy.cumsum(dim=-1)
    target = threshold * cumulative[..., -1:]
    # Number of prefixes still short of the target = index of the first one that reaches it.
    ranks = (cumulative < target).sum(dim=-1) + 1
    ranks = ranks.clamp(max=singular_values.shape[-1])
    return torch.where(cumulative[..., -1] > 0, ranks, torch.zeros_like(ranks))


def rank_for_variance(singular_values: Tensor, threshold: float = 0.9, power: int = 2) -> int:
    """Smallest k with Σ_{i<k} σ_i^power ≥ threshold · Σ σ_i^power (σ sorted descending).

    0 for an all-zero spectrum. power=2 is the paper's "variance explained", power=1 the share of
    the nuclear norm.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    return int(_ranks_for_variance(singular_values.reshape(1, -1), threshold, power)[0])


@functools.lru_cache(maxsize=32)
def _unit_random_singular_values(rows: int, cols: int, seed: int, device: str) -> Tensor:
    """Singular values of a Gaussian rows×cols matrix of unit Frobenius norm (cached per shape)."""
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(rows, cols, generator=generator, dtype=torch.float32)
    gaussian /= torch.linalg.matrix_norm(gaussian)
    return decompose.singular_values(gaussian.to(device).unsqueeze(0))[0]


def random_singular_values(
    shape: tuple[int, int], fro_norm: float = 1.0, seed: int = 0, device: str | torch.device = "cpu"
) -> Tensor:
    """Singular values of a Gaussian matrix of `shape` scaled to Frobenius norm `fro_norm`.

    Drawn in the orientation rows ≥ cols on a seeded CPU generator, so the result is reproducible
    across machines and identical for a shape and its transpose.
    """
    rows, cols = max(shape), min(shape)
    unit = _unit_random_singular_values(rows, cols, seed, str(torch.device(device)))
    return unit * fro_norm


def random_baseline(
    shape: tuple[int, int], fro_norm: float = 1.0, threshold: float = 0.9, seed: int = 0
) -> tuple[int, int]:
    """(rank for `threshold` of Σσ², rank for `threshold` of Σσ) of a Gaussian matrix of `shape`
    and Frobenius norm `fro_norm` (the norm does not change the ranks)."""
    values = random_singular_values(shape, fro_norm, seed)
    return rank_for_variance(values, threshold, 2), rank_for_variance(values, threshold, 1)


@dataclass
class MatrixSpectrum:
    """The weight change of one matrix, summarised."""

    name: str
    layer: int | None
    module: str
    shape: tuple[int, int]
    rank90: int
    """Smallest k whose top-k σ² of ΔW reach the threshold (default 90%) of Σσ²."""
    rank90_sigma: int
    """The same for Σσ (power 1)."""
    random_rank90: int
    random_rank90_sigma: int
    fro_norm: float
    """‖ΔW‖_F."""
    intruders: int | None
    """Intruder dimensions among the top-k of W_tuned; None when not computed (intruder_k=0)."""
    singular_values: list[float] = field(default_factory=list)
    """The largest singular values of ΔW, descending (at most STORED_SINGULAR_VALUES)."""
    relative_change: float = 0.0
    """‖ΔW‖_F / ‖W_base‖_F."""
    max_similarity: list[float] = field(default_factory=list)
    """For each top-k left singular vector of W_tuned, its largest |cos| with any left singular
    vector of W_base; intruders at any ε = how many are below ε (the ε sweep)."""
    base_singular_values: list[float] = field(default_factory=list)
    """The largest singular values of W_base (at most STORED_SINGULAR_VALUES, for the spectrum
    figure): a by-product of the intruder SVD, empty when intruders were not computed."""

    @property
    def max_rank(self) -> int:
        """min(rows, cols): the largest possible rank."""
        return min(self.shape)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        data = asdict(self)
        data["shape"] = list(self.shape)
        return data


def parse_layer_and_module(name: str) -> tuple[int | None, str]:
    """(layer index, module kind) from a parameter name, e.g.
    `model.layers.3.mlp.gate_proj.weight` -> (3, "gate_proj")."""
    match = _LAYER_INDEX.search(f".{name}.")
    parts = name.split(".")
    if parts[-1] in ("weight", "bias") and len(parts) > 1:
        parts = parts[:-1]
    return (int(match.group(1)) if match else None), parts[-1]


def _chunks(names: list[str], elements_per_matrix: int, max_batch_elements: int) -> list[list[str]]:
    size = max(1, max_batch_elements // max(1, elements_per_matrix))
    return [names[i : i + size] for i in range(0, len(names), size)]


def spectrum(
    pairs: Mapping[str, tuple[Tensor, Tensor]],
    threshold: float = 0.9,
    intruder_k: int = 10,
    intruder_eps: float = 0.5,
    device: str | torch.device | None = None,
    max_batch_elements: int = DEFAULT_MAX_BATCH_ELEMENTS,
    random_seed: int = 0,
    solver: str | None = None,
) -> list[MatrixSpectrum]:
    """Spectrum summary of every (W_base, W_tuned) pair, in the order given.

    Computes on `device` (default: each base tensor's device). Matrices of one shape are stacked,
    in chunks of at most `max_batch_elements` elements, and decomposed in one call per chunk (and,
    for intruders, one more per side) by `solver`: "svd" (float32 SVD, the default on CPUs) or
    "gram" (float64 eigensolver on the Gram matrix, the default on GPUs); see
    `learnforget.measure.decompose`.
    `intruder_k=0` skips the intruder count (two full SVDs per matrix, the costliest part) and with
    it `max_similarity` and `base_singular_values`, which are by-products of those SVDs.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    groups: dict[tuple[tuple[int, ...], str], list[str]] = {}
    for name, (w_base, w_tuned) in pairs.items():
        if w_base.ndim != 2 or w_base.shape != w_tuned.shape:
            raise ValueError(
                f"{name}: expected two 2-D weights of one shape, got {tuple(w_base.shape)} and "
                f"{tuple(w_tuned.shape)}"
            )
        target = torch.device(device) if device is not None else w_base.device
        groups.setdefault((tuple(w_base.shape), str(target)), []).append(name)

    results: dict[str, MatrixSpectrum] = {}
    for (shape, target), names in groups.items():
        rows, cols = shape
        random_values = random_singular_values((rows, cols), 1.0, random_seed, target)
        random_sq = rank_for_variance(random_values, threshold, 2)
        random_abs = rank_for_variance(random_values, threshold, 1)
        for chunk in _chunks(names, rows * cols, max_batch_elements):
            base = torch.stack([pairs[n][0].to(target, torch.float32) for n in chunk])
            tuned = torch.stack([pairs[n][1].to(target, torch.float32) for n in chunk])
            delta = tuned - base
            values = decompose.singular_values(delta, solver)
            ranks_sq = _ranks_for_variance(values, threshold, 2).tolist()
            ranks_abs = _ranks_for_variance(values, threshold, 1).tolist()
            delta_norms = torch.linalg.matrix_norm(delta).tolist()
            base_norms = torch.linalg.matrix_norm(base).tolist()
            del delta
            if intruder_k > 0:
                similarity, base_spectrum = similarity_and_base_spectrum_batched(
                    base, tuned, intruder_k, solver
                )
                intruders: list[int | None] = (similarity < intruder_eps).sum(dim=1).tolist()
                similarities = similarity.cpu().tolist()
                base_values = base_spectrum[:, :STORED_SINGULAR_VALUES].cpu().tolist()
            else:
                intruders = [None] * len(chunk)
                similarities = base_values = [[] for _ in chunk]
            top_values = values[:, :STORED_SINGULAR_VALUES].cpu().tolist()
            for i, name in enumerate(chunk):
                layer, module = parse_layer_and_module(name)
                results[name] = MatrixSpectrum(
                    name=name,
                    layer=layer,
                    module=module,
                    shape=(rows, cols),
                    rank90=int(ranks_sq[i]),
                    rank90_sigma=int(ranks_abs[i]),
                    random_rank90=random_sq,
                    random_rank90_sigma=random_abs,
                    fro_norm=float(delta_norms[i]),
                    intruders=intruders[i],
                    singular_values=[float(v) for v in top_values[i]],
                    relative_change=float(delta_norms[i] / base_norms[i]) if base_norms[i] else 0.0,
                    max_similarity=[float(v) for v in similarities[i]],
                    base_singular_values=[float(v) for v in base_values[i]],
                )
    return [results[name] for name in pairs]


def spectrum_between(
    base: nn.Module | Mapping[str, Tensor],
    tuned: nn.Module | Mapping[str, Tensor] | None = None,
    peft_model: nn.Module | None = None,
    *,
    threshold: float = 0.9,
    intruder_k: int = 10,
    intruder_eps: float = 0.5,
    device: str | torch.device | None = None,
    atol: float = 0.0,
    include_embeddings: bool = False,
) -> list[MatrixSpectrum]:
    """Spectrum of the weight change from a base model to a finetuned one.

    `base` is the original base model or its state dict. Give exactly one of `tuned` (a fully
    finetuned or merged model, or its state dict) and `peft_model` (a PEFT LoRA model; a PEFT model
    passed as `tuned` is treated as one).
    """
    if tuned is not None and peft_model is None and hasattr(tuned, "peft_config"):
        tuned, peft_model = None, tuned
    if (tuned is None) == (peft_model is None):
        raise UserError(
            "give exactly one of a tuned model (tuned=...) or a PEFT model (peft_model=...)"
        )
    base_state = _state_dict(base)
    if peft_model is not None:
        pairs = lora_tuned_weights(peft_model, base_state, include_embeddings=include_embeddings)
    else:
        assert tuned is not None
        pairs = changed_matrices(
            base_state, _state_dict(tuned), atol=atol, include_embeddings=include_embeddings
        )
    return spectrum(
        pairs,
        threshold=threshold,
        intruder_k=intruder_k,
        intruder_eps=intruder_eps,
        device=device,
    )


def spectrum_json(spectra: list[MatrixSpectrum]) -> list[dict[str, Any]]:
    """JSON-ready list of dicts, one per matrix (name, layer, module, shape, rank90, rank90_sigma,
    random_rank90, random_rank90_sigma, fro_norm, relative_change, intruders, singular_values)."""
    return [s.to_dict() for s in spectra]
