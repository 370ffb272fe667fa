"""The training loop: one readable loop on ``accelerate`` for every method and regime.

One CPU process is the plain case; ``accelerate launch`` with an FSDP or DeepSpeed config runs
the same loop on many devices. Checkpoints are taken at the study's budgets; at each one the
caller's ``on_checkpoint`` measures the model and commits the rows (see ``runner.py``). A
NaN/inf loss ends the run with status ``diverged`` (except under ``fp16-mixed``, below). On a
GPU a step's loss is read while the next step runs (``loss_read_lag``), so the host never waits
for the step it has just queued; every step is still counted, checked and reported in order.

Precision (``training.precision``, see ``precision.py``) maps to accelerate's
``mixed_precision``: trainable weights and optimizer states stay in float32 and the forward and
backward run under autocast. Under ``fp16-mixed`` a gradient scaler skips a step whose
gradients (or loss) overflow; skipped steps are counted (``train/skipped_steps``), and only a
long run of them in a row is a divergence (the learning-rate schedule counts updates, not
skipped steps). Checkpoints are measured without autocast, in the dtypes the weights are held
in.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import GradScalerKwargs
from safetensors.torch import load_file

from learnforget.data.batches import IGNORE_INDEX, BatchStream, split_batch
from learnforget.optim import make_optimizer, make_scheduler
from learnforget.peak_memory import peak_memory_mb, reset_peak_memory
from learnforget.plan import RunConfig
from learnforget.precision import (
    mixed_precision,
    resolve_precision,
    trainable_dtype,
    training_dtype,
)
from learnforget.store import Measurement
from learnforget.study import BaseModelSpec

STATE_FILE = "trainer_state.pt"
MAX_SKIPPED_IN_A_ROW = 40
"""fp16-mixed: this many overflowing steps in a row end the run as diverged. Each skip halves
the loss scale, so by then the scale is ~2^-24 of its start: the overflow is in the model."""


@dataclass
class TrainRows:
    """Training rows (loss, throughput) waiting to be committed with the next checkpoint."""

    rows: list[tuple[int, int, Measurement]] = field(default_factory=list)

    def add(self, step: int, tokens: int, metric: str, value: float) -> None:
        """Queue one ``train`` measurement."""
        self.rows.append((step, tokens, Measurement("train", metric, value)))

    def take(self) -> list[tuple[int, int, Measurement]]:
        """Hand over the queued rows and start empty."""
        rows, self.rows = self.rows, []
        return rows


class CheckpointUnreadable(Exception):
    """A checkpoint to resume from could not be read (truncated, damaged, half written)."""

    def __init__(self, folder: Path, cause: Exception) -> None:
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        super().__init__(f"checkpoint {folder} is unreadable: {first}")
        self.folder = folder


@dataclass
class LoopResult:
    """How a training loop ended."""

    status: str  # finished | diverged
    step: int
    tokens: int
    error: str | None = None


def response_loss(logits: torch.Tensor, labels: torch.Tensor, n_targets: int) -> torch.Tensor:
    """Summed next-token cross-entropy over labelled positions, divided by ``n_targets``
    (the number of labelled tokens in the whole optimizer batch, so micro-batches add up)."""
    # The labels are shifted (and padded with IGNORE_INDEX at the end), not the logits: slicing
    # the (batch, length, vocabulary) logits would copy them, as would its gradient.
    targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1)
    total = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets, ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total / max(n_targets, 1)


def save_checkpoint(model: torch.nn.Module, tokenizer, folder: Path,
                    state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """LoRA: the adapter in PEFT's format; full: the model as safetensors (+ tokenizer).
    ``state_dict``: the whole model's weights when ``model`` holds only a shard of them (FSDP,
    DeepSpeed: gathered by ``Accelerator.get_state_dict``), so the files are the same as a
    single process writes."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"state_dict": state_dict} if state_dict is not None else {}
    model.save_pretrained(folder, safe_serialization=True, **extra)
    if tokenizer is not None and not hasattr(model, "peft_config"):
        tokenizer.save_pretrained(folder)


CHECKPOINT_CONFIGS = ("config.json", "adapter_config.json", "generation_config.json")


def check_checkpoint_configs(folder: Path) -> None:
    """Raise unless every JSON config a checkpoint holds is a JSON object: resuming loads only
    the weights, so a damaged config would otherwise be carried on silently into a folder that
    no longer loads with transformers or PEFT."""
    for name in CHECKPOINT_CONFIGS:
        path = folder / name
        if not path.exists():
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:  # not JSON, or not UTF-8
            raise ValueError(f"{name} is not JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise ValueError(f"{name} is not a JSON object")


def load_checkpoint_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load a checkpoint written by ``save_checkpoint`` back into ``model`` (for resuming)."""
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
        return
    state = {}
    for shard in sorted(folder.glob("model*.safetensors")):
        state.update(load_file(shard))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise RuntimeError(f"checkpoint {folder} does not match the model: {missing} {unexpected}")


def run_precision(run: RunConfig) -> str:
    """The run's resolved ``training.precision`` (``auto`` resolved for this machine when the
    run was built without ``plan.expand``)."""
    return resolve_precision(run.training.precision, run.base.device)


def training_base_spec(run: RunConfig) -> BaseModelSpec:
    """The run's ``base`` section with the dtype its weights are loaded in for training
    (float32 master weights under fp32 and the mixed precisions; see ``precision.py``)."""
    dtype = training_dtype(run_precision(run), run.method.kind, run.base.dtype)
    return run.base.model_copy(update={"dtype": dtype})


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


def _writes_rows(done: int, checkpoint_steps: list[int]) -> bool:
    """Whether the training rows (loss, tokens/s, LR) are written after ``done`` steps."""
    return done % 10 == 0 or done in checkpoint_steps


def loss_read_lag(device: torch.device, scaler) -> int:
    """How many steps after queuing a step the loop reads its loss: 1 on a GPU, so that the host
    queues step N while step N − 1's loss comes back (reading it at once would make the host wait
    for the whole step and the GPU wait for the host's next launches); 0 on a CPU, where a step
    is done once queued, and under fp16-mixed, whose scaler reads its overflow flag every step."""
    return 1 if device.type == "cuda" and scaler is None else 0


class _LossesOnTheirWay:
    """A step's micro-batch losses on their way to the host: on a GPU copied into pinned memory
    without blocking, an event marking their arrival."""

    def __init__(self, stacked: torch.Tensor) -> None:
        self.arrived: torch.cuda.Event | None = None
        if stacked.is_cuda:
            self.host = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
            self.host.copy_(stacked, non_blocking=True)
            self.arrived = torch.cuda.Event()
            self.arrived.record()
        else:
            self.host = stacked.cpu()

    def values(self) -> list[float]:
        """The losses, once they are on the host (waiting for this step's work only)."""
        if self.arrived is not None:
            self.arrived.synchronize()
        return self.host.tolist()


@dataclass
class _QueuedStep:
    """An optimizer step whose work is queued and whose loss is not read yet."""

    step: int  # 0-based
    losses: _LossesOnTheirWay
    tokens: int
    skipped: bool  # fp16-mixed's scaler skipped the update
    lr: float  # the schedule's LR after the step's update
    loss_scale: float | None  # fp16-mixed, on a step that writes training rows


def train_loop(
    model: torch.nn.Module,
    tokenizer,
    stream: BatchStream,
    run: RunConfig,
    checkpoint_steps: list[int],
    run_dir: Path,
    on_checkpoint: Callable[[torch.nn.Module, int, int, Path, list], None],
    on_step: Callable[[int, int, float, float], None] = lambda *a: None,
    resume_step: int = 0,
    loss_scale: float | None = None,
) -> LoopResult:
    """Train ``model`` to the last checkpoint step, calling ``on_checkpoint(model, step,
    tokens, folder, train_rows)`` at each one; resume from the checkpoint at ``resume_step``.
    ``loss_scale``: the initial scale of fp16-mixed's gradient scaler."""
    training = run.training
    precision = run_precision(run)
    accelerator = make_accelerator(precision, training.grad_accum, loss_scale)
    scaler = accelerator.scaler
    hold_weights(model, precision)
    reset_peak_memory(accelerator.device)  # the recorded peak is the training loop's
    total_steps = checkpoint_steps[-1]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, run.optimizer, run.method.lr, run.method.weight_decay,
                               allow_fused=scaler is None)
    scheduler = make_scheduler(optimizer, total_steps, run.schedule)
    tokens = skipped = 0
    if resume_step:
        folder = run_dir / f"checkpoint-{resume_step}"
        try:  # the state first: a file that fails to load leaves the model untouched
            state = torch.load(folder / STATE_FILE, weights_only=False)
            check_checkpoint_configs(folder)
            load_checkpoint_weights(model, folder)
        except Exception as exc:
            raise CheckpointUnreadable(folder, exc) from exc
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        tokens = state["tokens"]
        skipped = state.get("skipped", 0)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
    if training.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    # The scheduler stays unprepared: it steps once per optimizer update whatever the world size
    # (not on a step the fp16 scaler skipped, as in transformers' Trainer).
    model, optimizer = accelerator.prepare(model, optimizer)
    world, rank = accelerator.num_processes, accelerator.process_index
    scale = training.grad_accum * world  # each micro-batch's loss is its share of the step's
    model.train()
    rows = TrainRows()
    in_a_row = 0
    window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, time.time()
    lag = loss_read_lag(accelerator.device, scaler)
    queued: deque[_QueuedStep] = deque()

    def account(queued_step: _QueuedStep) -> LoopResult | None:
        """Read a queued step's loss and count the step (divergence, progress, training rows);
        a LoopResult when the run diverged at it."""
        nonlocal tokens, skipped, in_a_row, window_loss, window_steps, window_tokens, window_start
        step = queued_step.step
        step_loss = 0.0  # every process sums the same values (all of theirs) in the same order
        for value in queued_step.losses.values():
            step_loss += value / scale
        if not math.isfinite(step_loss) and scaler is None:
            return LoopResult("diverged", step, tokens, f"loss {step_loss} at step {step}")
        if queued_step.skipped:
            skipped += 1
            in_a_row += 1
            if in_a_row >= MAX_SKIPPED_IN_A_ROW:
                return LoopResult(
                    "diverged", step, tokens,
                    f"{in_a_row} fp16 steps in a row overflowed (loss {step_loss}, loss scale "
                    f"{scaler.get_scale():g}) up to step {step}: the model diverged or its "
                    "activations exceed fp16's range (bf16-mixed has fp32's range)")
        else:
            in_a_row = 0
        tokens += queued_step.tokens
        if math.isfinite(step_loss):
            window_loss += step_loss
            window_steps += 1
        window_tokens += queued_step.tokens
        elapsed = max(time.time() - window_start, 1e-9)
        on_step(step + 1, tokens, step_loss, window_tokens / elapsed)
        done = step + 1
        if _writes_rows(done, checkpoint_steps):
            if window_steps:
                rows.add(done, tokens, "loss", window_loss / window_steps)
            rows.add(done, tokens, "tokens_per_s", window_tokens / elapsed)
            rows.add(done, tokens, "lr", queued_step.lr)
            if scaler is not None:
                rows.add(done, tokens, "skipped_steps", skipped)
                rows.add(done, tokens, "loss_scale", queued_step.loss_scale)
            window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, time.time()
        return None

    for step in range(resume_step, total_steps):
        batch = stream.batch(step)
        n_targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        micro_losses = []  # on the device, read back ``lag`` steps later
        # Each process takes its share of the global batch; DDP averages gradients over
        # processes, so the loss is scaled by the world size to stay the batch mean.
        local = batch_to_device({k: v[rank::world] for k, v in batch.items()},
                                accelerator.device)
        for micro in split_batch(local, training.grad_accum):
            with accelerator.accumulate(model):
                logits = model(input_ids=micro["input_ids"],
                               attention_mask=micro["attention_mask"]).logits
                loss = response_loss(logits, micro["labels"], n_targets) * scale
                micro_losses.append(loss.detach())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, training.max_grad_norm)
                    optimizer.step()
                    if not optimizer.step_was_skipped:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
        done = step + 1
        losses = torch.stack(micro_losses)
        if world > 1:  # each process saw its share: the step's loss sums all of them
            losses = accelerator.gather(losses)  # queued with the step, read with it
        queued.append(_QueuedStep(
            step, _LossesOnTheirWay(losses), int(batch["attention_mask"].sum()),
            optimizer.step_was_skipped, scheduler.get_last_lr()[0],
            scaler.get_scale() if scaler is not None and _writes_rows(done, checkpoint_steps)
            else None))
        # The steps queued before are counted now (all of them before a checkpoint): on a GPU
        # the host reads a step's loss while the next step runs, never waiting for the current
        # one; a loss read between forward and backward would stall it every micro-batch.
        while queued and (len(queued) > lag or done in checkpoint_steps):
            ended = account(queued.popleft())
            if ended is not None:
                return ended
        if done in checkpoint_steps:
            folder = run_dir / f"checkpoint-{done}"
            unwrapped = accelerator.unwrap_model(model)
            # the peak so far, before this checkpoint is measured (peak_memory.py)
            rows.add(done, tokens, "peak_memory_mb", peak_memory_mb(accelerator.device))
            sharded = is_sharded(accelerator)
            # Every process takes part in gathering a sharded model's weights; only the main
            # process writes, measures and commits, while the others wait for it.
            full_state = accelerator.get_state_dict(model) if sharded else None
            if accelerator.is_main_process:
                save_checkpoint(unwrapped, tokenizer, folder, full_state)
                torch.save(
                    {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "tokens": tokens, "step": done, "rng": torch.get_rng_state(),
                     "skipped": skipped, "scaler": scaler.state_dict() if scaler else None},
                    folder / STATE_FILE,
                )
                model.eval()
                with plain_forward(unwrapped):  # a sharded model is measured from its files
                    on_checkpoint(None if sharded else unwrapped, done, tokens, folder,
                                  rows.take())
                model.train()
                for older in checkpoint_steps:
                    old_state = run_dir / f"checkpoint-{older}" / STATE_FILE
                    if older < done and old_state.exists():
                        old_state.unlink()  # only the latest checkpoint is needed to resume
            accelerator.wait_for_everyone()
            window_start = time.time()
    return LoopResult("finished", total_steps, tokens)
