"""How the weights moved: the singular value spectrum of ΔW = W_tuned − W_base per weight matrix.

For every changed 2-D weight (found by `learnforget.measure.weight_change`) this computes the rank
needed for 90% of the spectral energy (Σσ², the paper's measure) and of Σσ, the same ranks for a
Gaussian matrix of the same shape and Frobenius norm (the Marchenko–Pastur baseline), the
Frobenius norm of ΔW and the number of intruder dimensions (see `learnforget.measure.intruders`).
Matrices of one shape are stacked and decomposed in one batched float32 call. docs/analysis.md
explains every number.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from learnforget.measure import decompose
from learnforget.measure.intruders import similarity_and_base_spectrum_batched
from learnforget.measure.weight_change import parse_layer_and_module, weight_pairs_between

STORED_SINGULAR_VALUES = 256
"""How many of ΔW's largest singular values a MatrixSpectrum keeps (for the spectrum plot)."""

DEFAULT_MAX_BATCH_ELEMENTS = 1 << 27
"""Elements per stacked chunk (512 MiB of float32): bounds the memory of one batched SVD call."""


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
    passed as `tuned` is treated as one): see `weight_change.weight_pairs_between`.
    """
    pairs = weight_pairs_between(
        base, tuned, peft_model, atol=atol, include_embeddings=include_embeddings
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
