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


def make_optimizer(
    params: list[torch.nn.Parameter], spec: OptimizerSpec, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW or Lion over the trainable ``params`` with decoupled weight decay."""
    if not params:
        raise ValueError("no trainable parameters")
    if spec.name == "lion":
        return Lion(params, lr=lr, betas=spec.betas, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=spec.betas, eps=spec.eps,
                             weight_decay=weight_decay)


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
