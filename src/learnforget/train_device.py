"""The model and its batches on the training device under accelerate: the weights in the dtypes
the precision trains them in, the ``Accelerator`` of the run's precision, gradient
checkpointing, sharding, and the copy of each batch to the device."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import GradScalerKwargs

from learnforget.precision import mixed_precision, trainable_dtype


def hold_weights(model: torch.nn.Module, precision: str) -> None:
    """Put the model's weights in the dtypes ``precision`` trains them in: everything float32
    under fp32; trainable weights float32 under a mixed precision (frozen ones as loaded); under
    bf16-pure everything bf16 except LoRA's adapter weights, which PEFT keeps in float32."""
    peft = hasattr(model, "peft_config")
    for parameter in model.parameters():
        if precision == "fp32":
            wanted = torch.float32
        elif precision == "bf16-pure":
            wanted = None if (peft and parameter.requires_grad) else trainable_dtype(precision)
        else:
            wanted = torch.float32 if parameter.requires_grad else None
        if wanted is not None and parameter.dtype != wanted:
            parameter.data = parameter.data.to(wanted)


def make_accelerator(precision: str, grad_accum: int, loss_scale: float | None = None
                     ) -> Accelerator:
    """An ``Accelerator`` with the run's ``mixed_precision`` (``loss_scale``: the fp16 gradient
    scaler's initial scale, default PyTorch's 2^16).

    accelerate keeps one precision per process; the state is reset so that runs of different
    precisions can follow each other in one process. accelerate leaves fp16 autocast off on a
    CPU; PyTorch supports it there (CPU autocast and ``GradScaler("cpu")``), so it is switched
    on, and fp16-mixed means the same on every device."""
    AcceleratorState._reset_state()
    handlers = [GradScalerKwargs(init_scale=loss_scale)] if loss_scale is not None else []
    accelerator = Accelerator(gradient_accumulation_steps=grad_accum,
                              mixed_precision=mixed_precision(precision),
                              kwargs_handlers=handlers)
    if precision == "fp16-mixed" and accelerator.scaler is None \
            and accelerator.device.type == "cpu":
        kwargs = handlers[0].to_kwargs() if handlers else {}
        accelerator.native_amp = True
        accelerator.scaler = torch.amp.GradScaler("cpu", **kwargs)
    return accelerator


def is_sharded(accelerator: Accelerator) -> bool:
    """Whether each process holds only a shard of the weights (FSDP, DeepSpeed ZeRO-3): the
    model must then be gathered to be saved, and measured from the saved files."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them
    (``training.gradient_checkpointing``; non-reentrant, so a frozen embedding needs no input
    gradients; the RNG state is replayed, so the results are the same)."""
    model.config.use_cache = False
    kwargs = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@contextmanager
def plain_forward(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` without the autocast wrapper that accelerate puts on its ``forward`` under a
    mixed precision (kept under ``_original_forward``), for the block: checkpoints are measured
    in the dtypes the weights are held in, as the base model is. Put back afterwards."""
    wrapped = model.__dict__.get("forward")
    original = model.__dict__.get("_original_forward")
    if wrapped is None or original is None:
        yield model
        return
    model.forward = original
    try:
        yield model
    finally:
        model.forward = wrapped


def batch_to_device(batch: dict[str, torch.Tensor], device: torch.device
                    ) -> dict[str, torch.Tensor]:
    """A step's batch on the training device. To a GPU it is copied from pinned memory without
    waiting: a copy from ordinary (pageable) memory first waits for all the work queued before
    it, which would make every micro-batch of a step wait for the previous one's backward."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
