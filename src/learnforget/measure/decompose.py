"""Singular values and left singular vectors of stacks of equally shaped matrices.

Two solvers give the same numbers to the precision the analysis needs:

- ``"svd"``: `torch.linalg.svdvals` / `torch.linalg.svd` in float32, on the tall orientation
  (LAPACK is 2-4× faster on a tall matrix than on its wide transpose). The default on CPUs.
- ``"gram"``: the symmetric eigensolver (`torch.linalg.eigvalsh` / `eigh`) on the float64 Gram
  matrix of the smaller side, σ² = eigenvalues. The default on GPUs: cuSOLVER's SVD drivers are
  slow on large matrices (the default, Jacobi `gesvdj`, took about 1 s per 4096×4096 matrix on an
  H200) while its eigensolver is fast. Forming the Gram matrix squares the condition number, so
  it is formed and solved in float64: singular values above ~1e-7·σ_max stay accurate, and
  smaller ones carry no weight in a rank-for-90%-of-variance count.

PyTorch offers both decompositions but no switch between them by device, hence this module.
"""

from __future__ import annotations

import torch
from torch import Tensor

SOLVERS = ("svd", "gram")


def resolve_solver(solver: str | None, device: torch.device | str) -> str:
    """`solver` if given (checked), else ``"gram"`` on CUDA and ``"svd"`` elsewhere."""
    if solver is None:
        return "gram" if torch.device(device).type == "cuda" else "svd"
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    return solver


def _gram_smaller_side(stack: Tensor) -> tuple[Tensor, Tensor, bool]:
    """(the stack in float64, its Gram matrix of the smaller side, whether that is W·Wᵀ, i.e.
    rows ≤ cols)."""
    wide = stack.shape[-2] <= stack.shape[-1]
    w = stack.to(torch.float64)
    return w, (w @ w.mT if wide else w.mT @ w), wide


def singular_values(stack: Tensor, solver: str | None = None) -> Tensor:
    """Singular values, descending, of each matrix of a (batch, rows, cols) stack; float32."""
    solver = resolve_solver(solver, stack.device)
    if solver == "svd":
        stack = stack.to(torch.float32)
        return torch.linalg.svdvals(stack.mT if stack.shape[-2] < stack.shape[-1] else stack)
    _, gram, _ = _gram_smaller_side(stack)
    squared = torch.linalg.eigvalsh(gram).flip(-1)
    return squared.clamp_min(0).sqrt().to(torch.float32)


def left_singular(stack: Tensor, solver: str | None = None) -> tuple[Tensor, Tensor]:
    """(left singular vectors as columns, singular values), descending, of each matrix of a
    (batch, rows, cols) stack; float32, min(rows, cols) of each."""
    solver = resolve_solver(solver, stack.device)
    if solver == "svd":
        stack = stack.to(torch.float32)
        if stack.shape[-2] < stack.shape[-1]:
            # W = U S Vh  <=>  Wᵀ = Vhᵀ S Uᵀ, so U of W is Vhᵀ of Wᵀ.
            _, values, vh = torch.linalg.svd(stack.mT, full_matrices=False)
            return vh.mT, values
        u, values, _ = torch.linalg.svd(stack, full_matrices=False)
        return u, values
    w, gram, wide = _gram_smaller_side(stack)
    squared, vectors = torch.linalg.eigh(gram)
    squared, vectors = squared.flip(-1), vectors.flip(-1)
    values = squared.clamp_min(0).sqrt()
    if wide:  # eigenvectors of W·Wᵀ are the left singular vectors
        return vectors.to(torch.float32), values.to(torch.float32)
    # Tall: eigenvectors of WᵀW are the right singular vectors V, and U = W·V (columns
    # normalised, which keeps every column a unit vector even where σ is near zero).
    u = w @ vectors
    u = u / torch.linalg.vector_norm(u, dim=-2, keepdim=True).clamp_min(1e-300)
    return u.to(torch.float32), values.to(torch.float32)
