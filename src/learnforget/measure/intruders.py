"""Intruder dimensions: new high-ranking singular directions that finetuning puts into a weight.

Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of Equivalence" (arXiv 2410.21228):
take the top-k left singular vectors of the finetuned matrix; one of them is an *intruder* when its
largest absolute cosine similarity with every left singular vector of the base matrix is below
eps. LoRA tends to create them, full finetuning hardly does. The definition (and the defaults
k=10, eps=0.5) match PEFT's `peft.tuners.lora.intruders.reduce_intruder_dimension`, which only
offers the mitigation, not a count, so the count is computed here.

All functions take float tensors and compute on the tensors' device (float32 SVD on CPUs, a
float64 eigensolver on GPUs: `learnforget.measure.decompose`); the batched forms
take stacks of equally shaped matrices, shape (batch, rows, cols), and decompose them in one call.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from learnforget.measure.decompose import left_singular

DEFAULT_EPS_VALUES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def similarity_and_base_spectrum_batched(
    w_base: Tensor, w_tuned: Tensor, k: int = 10, solver: str | None = None
) -> tuple[Tensor, Tensor]:
    """For stacks of equally shaped matrices: the largest |cos| of each of the top-k left singular
    vectors of each tuned matrix with any left singular vector of its base matrix, and the base
    matrices' singular values (a by-product of the same SVD).

    Args:
        w_base: base weights, shape (batch, rows, cols).
        w_tuned: finetuned weights, same shape.
        k: how many top singular directions of the tuned matrix to check (at most min(rows, cols)).
        solver: "svd" or "gram" (`learnforget.measure.decompose`); default by device.

    Returns:
        (similarity of shape (batch, k), values in [0, 1]; base singular values of shape
        (batch, min(rows, cols))), both float32.
    """
    if w_base.shape != w_tuned.shape or w_base.ndim != 3:
        raise ValueError(
            f"expected two stacks of equal shape (batch, rows, cols), got {tuple(w_base.shape)} "
            f"and {tuple(w_tuned.shape)}"
        )
    k = min(k, min(w_base.shape[-2:]))
    u_base, base_values = left_singular(w_base, solver)
    u_tuned = left_singular(w_tuned, solver)[0][..., :k]
    # Columns of U are unit vectors, so the inner products are the cosines.
    cosines = u_tuned.transpose(-2, -1) @ u_base
    return cosines.abs().amax(dim=-1), base_values


def max_base_similarity_batched(w_base: Tensor, w_tuned: Tensor, k: int = 10) -> Tensor:
    """For each of the top-k left singular vectors of each tuned matrix in a stack (batch, rows,
    cols), its largest |cos| with any left singular vector of the matching base matrix; a float32
    tensor of shape (batch, k) with values in [0, 1]."""
    return similarity_and_base_spectrum_batched(w_base, w_tuned, k)[0]


def max_base_similarity(w_base: Tensor, w_tuned: Tensor, k: int = 10) -> Tensor:
    """For one matrix pair: the largest |cos| of each top-k tuned left singular vector with any base
    left singular vector; a float32 tensor of shape (k,)."""
    return max_base_similarity_batched(w_base.unsqueeze(0), w_tuned.unsqueeze(0), k)[0]


def count_intruders(w_base: Tensor, w_tuned: Tensor, k: int = 10, eps: float = 0.5) -> int:
    """How many of the top-k left singular vectors of `w_tuned` have |cos| below `eps` with every
    left singular vector of `w_base` (Shuttleworth et al. 2024)."""
    return int((max_base_similarity(w_base, w_tuned, k) < eps).sum())


def intruder_sweep(
    w_base: Tensor,
    w_tuned: Tensor,
    k: int = 10,
    eps_values: Iterable[float] = DEFAULT_EPS_VALUES,
) -> dict[float, int]:
    """Intruder counts for several thresholds, from one pair of SVDs: {eps: count}."""
    similarity = max_base_similarity(w_base, w_tuned, k)
    return {float(eps): int((similarity < eps).sum()) for eps in eps_values}
