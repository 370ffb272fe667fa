"""Training precision: what ``training.precision`` means for weights, compute and run ids.

- ``fp32``: weights, gradients, optimizer states and compute in float32.
- ``bf16-mixed`` / ``fp16-mixed``: float32 master weights and optimizer states, forward and
  backward under ``torch.autocast`` in bf16 / fp16 (accelerate's ``mixed_precision``); fp16
  adds a gradient scaler whose overflowing steps are skipped. LoRA's frozen base stays in
  ``base.dtype`` (bf16 as in the paper when set so); its adapter weights are float32.
- ``bf16-pure``: the weights themselves (and so AdamW/Lion states) in bf16, no autocast: half
  the weight memory, but an update smaller than half a bf16 spacing of its weight is rounded
  away (``bf16_lost_update_threshold``).

``auto`` resolves at plan time: ``bf16-mixed`` on a CUDA device that supports bf16, else
``fp32``. A run whose resolved precision is what learnforget did before the setting existed
(``fp32`` with ``base.dtype: float32``, ``bf16-pure`` with ``bfloat16``) keeps its old run id.
"""

from __future__ import annotations

import math

import torch

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed", "bf16-pure")
MIXED = {"bf16-mixed": "bf16", "fp16-mixed": "fp16"}  # → accelerate's ``mixed_precision``
LEGACY = {"float32": "fp32", "bfloat16": "bf16-pure"}  # base.dtype → precision before the field
BF16_MANTISSA_BITS = 7  # explicit fraction bits of bfloat16


def uses_cuda(device: str) -> bool:
    """Whether a study's ``base.device`` puts training on a CUDA device."""
    if device.startswith("cuda"):
        return True
    return (device == "auto" or device.startswith("device_map=")) and torch.cuda.is_available()


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` → ``bf16-mixed`` on a CUDA device with native bf16 (Ampere or newer; not the
    slow emulation older GPUs offer), else ``fp32``; any other value as given."""
    if precision != "auto":
        return precision
    if uses_cuda(device) and torch.cuda.is_available() \
            and torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16-mixed"
    return "fp32"


def mixed_precision(precision: str) -> str:
    """accelerate's ``mixed_precision`` for a resolved precision (``no``, ``bf16``, ``fp16``)."""
    return MIXED.get(precision, "no")


def training_dtype(precision: str, frozen_base: bool, base_dtype: str) -> str:
    """The dtype the base weights are loaded in for training: bf16 under ``bf16-pure``; under a
    mixed precision a frozen base (adapter methods such as LoRA) keeps ``base_dtype``; otherwise
    float32 (master weights)."""
    if precision == "bf16-pure":
        return "bfloat16"
    if frozen_base and precision in MIXED:
        return base_dtype
    return "float32"


def trainable_dtype(precision: str) -> torch.dtype:
    """The dtype trainable weights are held (and updated) in."""
    return torch.bfloat16 if precision == "bf16-pure" else torch.float32


def run_id_view(config: dict) -> dict:
    """The dict a run id hashes: the run's config, without ``training.precision`` when it equals
    the behaviour runs had before the field existed, nor the later switches when off (so their
    ids stay the same)."""
    training = config.get("training", {})
    for later_field in ("gradient_checkpointing", "group_by_length"):
        if training.get(later_field) is False:  # off: the ids from before the field
            training = {k: v for k, v in training.items() if k != later_field}
            config = {**config, "training": training}
    legacy = LEGACY.get(config.get("base", {}).get("dtype", "float32"))
    if "precision" in training and training["precision"] == legacy:
        training = {k: v for k, v in training.items() if k != "precision"}
        return {**config, "training": training}
    return config


def bf16_lost_update_threshold(update: float) -> float:
    """The weight magnitude from which an update of size ``update`` is rounded away in bf16.

    bf16 keeps 7 fraction bits: a weight in [2^e, 2^(e+1)) has neighbours 2^(e-7) apart, and an
    update below half of that (2^(e-8)) rounds back to the same weight. So every weight with
    |w| > 2^(floor(log2 update) + 9) ignores the update (at exactly that power of two a step
    towards zero lands in the finer binade below; smaller weights keep a coarsely rounded
    update). An AdamW step moves a weight by about the learning rate (exactly the
    learning rate on the first step and for Lion)."""
    return 2.0 ** (math.floor(math.log2(update)) + BF16_MANTISSA_BITS + 2)
