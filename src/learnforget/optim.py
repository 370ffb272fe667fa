"""Optimizers (AdamW, decoupled Lion) and learning-rate schedules.

Lion comes from the maintained ``lion-pytorch`` package (decoupled weight decay, as the paper's
LionW). Schedules are plain ``LambdaLR`` multipliers: warmup then cosine to ``min_lr_ratio``
(the paper's IFT schedule), constant, or inverse square root (a CPT option).
"""

from __future__ import annotations

import math

import torch
from lion_pytorch import Lion

from learnforget.study import OptimizerSpec, ScheduleSpec

FUSED_DEVICES = ("cpu", "cuda")
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def make_optimizer(
    params: list[torch.nn.Parameter], spec: OptimizerSpec, lr: float, weight_decay: float,
    allow_fused: bool = True,
) -> torch.optim.Optimizer:
    """AdamW or Lion over the trainable ``params`` with decoupled weight decay. AdamW is torch's
    fused kernel where the parameters allow it and ``allow_fused`` (not under fp16's gradient
    scaler, which would then leave the skipping of an overflowing step to the kernel, unseen by
    the loop that counts skipped steps)."""
    if not params:
        raise ValueError("no trainable parameters")
    if spec.name == "lion":
        return Lion(params, lr=lr, betas=spec.betas, weight_decay=weight_decay)
    # torch's fused AdamW (one kernel over all tensors, on CPU and CUDA) instead of the default
    # per-tensor loop on CPU / foreach on CUDA: the same update, fewer passes over memory
    # (benchmarks/adamw_step.py: 4.9× faster for SmolLM2-135M's parameters on one CPU thread)
    fused = allow_fused and all(p.device.type in FUSED_DEVICES and p.dtype in FUSED_DTYPES
                                for p in params)
    return torch.optim.AdamW(params, lr=lr, betas=spec.betas, eps=spec.eps,
                             weight_decay=weight_decay, fused=fused or None)


def lr_multiplier(step: int, total_steps: int, spec: ScheduleSpec) -> float:
    """The factor applied to the peak LR at optimizer step ``step`` (0-based)."""
    warmup = int(round(spec.warmup * total_steps))
    if warmup and step < warmup:
        return (step + 1) / warmup
    if spec.name == "constant":
        return 1.0
    if spec.name == "inverse_sqrt":
        return math.sqrt(max(warmup, 1) / (step + 1))
    progress = (step - warmup) / max(1, total_steps - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return spec.min_lr_ratio + (1.0 - spec.min_lr_ratio) * cosine


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, spec: ScheduleSpec
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following ``lr_multiplier``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, total_steps, spec)
    )
