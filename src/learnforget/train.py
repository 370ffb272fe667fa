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

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from learnforget.checkpoint_files import (
    STATE_FILE,
    CheckpointUnreadable,
    check_checkpoint_configs,
    load_checkpoint_weights,
    save_checkpoint,
)
from learnforget.data.batches import IGNORE_INDEX, BatchStream, split_batch
from learnforget.methods import optimizer_step_hook
from learnforget.optim import make_optimizer, make_scheduler
from learnforget.peak_memory import peak_memory_mb, reset_peak_memory
from learnforget.plan import RunConfig
from learnforget.precision import (
    resolve_precision,
    training_dtype,
)
from learnforget.store import Measurement
from learnforget.study import BaseModelSpec
from learnforget.train_device import (
    batch_to_device,
    enable_gradient_checkpointing,
    hold_weights,
    is_sharded,
    make_accelerator,
    plain_forward,
)

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


@dataclass
class LoopResult:
    """How a training loop ended."""

    status: str  # finished | diverged | paused (stopped at ``stop_step``, resumable there)
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


def run_precision(run: RunConfig) -> str:
    """The run's resolved ``training.precision`` (``auto`` resolved for this machine when the
    run was built without ``plan.expand``)."""
    return resolve_precision(run.training.precision, run.base.device)


def training_base_spec(run: RunConfig) -> BaseModelSpec:
    """The run's ``base`` section with the dtype its weights are loaded in for training
    (float32 master weights under fp32 and the mixed precisions; see ``precision.py``)."""
    dtype = training_dtype(run_precision(run), not run.method.is_full, run.base.dtype)
    return run.base.model_copy(update={"dtype": dtype})


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


class _UnreadSteps:
    """The queued steps whose losses are not read yet, oldest first. A step is read ``lag``
    steps after it was queued (``loss_read_lag``), and every step is read before a checkpoint."""

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.queued: deque[_QueuedStep] = deque()

    def add(self, step: _QueuedStep) -> None:
        """Queue a step whose work was just launched."""
        self.queued.append(step)

    def readable(self, all_of_them: bool) -> Iterator[_QueuedStep]:
        """The steps to read now, oldest first: those more than ``lag`` steps old, or all."""
        while self.queued and (len(self.queued) > self.lag or all_of_them):
            yield self.queued.popleft()


@dataclass
class _StepLog:
    """Counts each step once its loss is read, in order: its tokens, fp16-mixed's skipped
    updates, divergence, the ``on_step`` progress call and the training rows (mean loss,
    tokens/s, LR) of each window that ends every 10 steps and at each checkpoint."""

    checkpoint_steps: list[int]
    scale: int  # each micro-batch loss was multiplied by it
    scaler: object | None  # fp16-mixed's gradient scaler
    on_step: Callable[[int, int, float, float], None]
    tokens: int = 0
    skipped: int = 0
    in_a_row: int = 0  # skipped updates in a row
    rows: TrainRows = field(default_factory=TrainRows)
    window_loss: float = 0.0
    window_steps: int = 0
    window_tokens: int = 0
    window_start: float = field(default_factory=time.time)

    def count(self, queued: _QueuedStep) -> LoopResult | None:
        """Read a queued step's loss and count the step; a LoopResult when the run diverged
        at it."""
        step = queued.step
        step_loss = 0.0  # every process sums the same values (all of theirs) in the same order
        for value in queued.losses.values():
            step_loss += value / self.scale
        if not math.isfinite(step_loss) and self.scaler is None:
            return LoopResult("diverged", step, self.tokens, f"loss {step_loss} at step {step}")
        if queued.skipped:
            self.skipped += 1
            self.in_a_row += 1
            if self.in_a_row >= MAX_SKIPPED_IN_A_ROW:
                return LoopResult(
                    "diverged", step, self.tokens,
                    f"{self.in_a_row} fp16 steps in a row overflowed (loss {step_loss}, loss "
                    f"scale {self.scaler.get_scale():g}) up to step {step}: the model diverged "
                    "or its activations exceed fp16's range (bf16-mixed has fp32's range)")
        else:
            self.in_a_row = 0
        self.tokens += queued.tokens
        if math.isfinite(step_loss):
            self.window_loss += step_loss
            self.window_steps += 1
        self.window_tokens += queued.tokens
        elapsed = max(time.time() - self.window_start, 1e-9)
        done = step + 1
        self.on_step(done, self.tokens, step_loss, self.window_tokens / elapsed)
        if _writes_rows(done, self.checkpoint_steps):
            self._write_window(done, elapsed, queued)
        return None

    def _write_window(self, done: int, elapsed: float, queued: _QueuedStep) -> None:
        """Queue the window's training rows at step ``done`` and start a new window."""
        if self.window_steps:
            self.rows.add(done, self.tokens, "loss", self.window_loss / self.window_steps)
        self.rows.add(done, self.tokens, "tokens_per_s", self.window_tokens / elapsed)
        self.rows.add(done, self.tokens, "lr", queued.lr)
        if self.scaler is not None:
            self.rows.add(done, self.tokens, "skipped_steps", self.skipped)
            self.rows.add(done, self.tokens, "loss_scale", queued.loss_scale)
        self.window_loss, self.window_steps, self.window_tokens = 0.0, 0, 0
        self.window_start = time.time()

    def restart_clock(self) -> None:
        """Leave the time a checkpoint took out of the window's tokens/s."""
        self.window_start = time.time()


@dataclass
class _Training:
    """What the loop trains with: the model and optimizer as accelerate prepared them."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: object | None  # fp16-mixed's gradient scaler
    params: list[torch.nn.Parameter]
    grad_accum: int
    max_grad_norm: float
    step_hook: Callable[[int], None] | None = None  # after each update (AdaLoRA's allocation)

    @property
    def world(self) -> int:
        """The number of processes."""
        return self.accelerator.num_processes

    @property
    def scale(self) -> int:
        """What each micro-batch's loss is multiplied by: its share of the step's."""
        return self.grad_accum * self.world


def _resume(folder: Path, model: torch.nn.Module, optimizer, scheduler, scaler
            ) -> tuple[int, int]:
    """Load the checkpoint in ``folder`` into the model, optimizer, scheduler, scaler and the
    RNG; returns (tokens, skipped steps) so far. ``CheckpointUnreadable`` when it cannot be
    read (the state is loaded first: a file that fails to load leaves the model untouched)."""
    try:
        state = torch.load(folder / STATE_FILE, weights_only=False)
        check_checkpoint_configs(folder)
        load_checkpoint_weights(model, folder)
    except Exception as exc:
        raise CheckpointUnreadable(folder, exc) from exc
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    return state["tokens"], state.get("skipped", 0)


def _start_training(model: torch.nn.Module, run: RunConfig, total_steps: int,
                    resume_from: Path | None, loss_scale: float | None
                    ) -> tuple[_Training, int, int]:
    """The model in its training dtypes with its optimizer and schedule, resumed from the
    checkpoint in ``resume_from`` (None: the start) and prepared by accelerate; with the tokens
    and skipped steps so far."""
    training = run.training
    precision = run_precision(run)
    accelerator = make_accelerator(precision, training.grad_accum, loss_scale)
    scaler = accelerator.scaler
    hold_weights(model, precision)
    reset_peak_memory(accelerator.device)  # the recorded peak is the training loop's
    params = [p for p in model.parameters() if p.requires_grad]
    step_hook = optimizer_step_hook(model)
    optimizer = make_optimizer(params, run.optimizer, run.method.lr, run.method.weight_decay,
                               allow_fused=scaler is None)
    scheduler = make_scheduler(optimizer, total_steps, run.schedule)
    tokens = skipped = 0
    if resume_from is not None:
        tokens, skipped = _resume(resume_from, model, optimizer, scheduler, scaler)
    if training.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    # The scheduler stays unprepared: it steps once per optimizer update whatever the world size
    # (not on a step the fp16 scaler skipped, as in transformers' Trainer).
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    return (_Training(accelerator, model, optimizer, scheduler, scaler, params,
                      training.grad_accum, training.max_grad_norm, step_hook), tokens, skipped)


def _train_step(t: _Training, batch: dict[str, torch.Tensor], step: int,
                reads_loss_scale: bool) -> _QueuedStep:
    """Queue one optimizer step's work (forward, backward and update of each micro-batch);
    its losses stay on the device, to be read later (``_UnreadSteps``)."""
    n_targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    micro_losses = []
    # Each process takes its share of the global batch; DDP averages gradients over processes,
    # so the loss is scaled by the world size to stay the batch mean.
    rank, world = t.accelerator.process_index, t.world
    local = batch_to_device({k: v[rank::world] for k, v in batch.items()}, t.accelerator.device)
    for micro in split_batch(local, t.grad_accum):
        with t.accelerator.accumulate(t.model):
            logits = t.model(input_ids=micro["input_ids"],
                             attention_mask=micro["attention_mask"]).logits
            loss = response_loss(logits, micro["labels"], n_targets) * t.scale
            micro_losses.append(loss.detach())
            t.accelerator.backward(loss)
            if t.accelerator.sync_gradients:
                t.accelerator.clip_grad_norm_(t.params, t.max_grad_norm)
                t.optimizer.step()
                if not t.optimizer.step_was_skipped:
                    t.scheduler.step()
                    if t.step_hook is not None:
                        t.step_hook(step)
                t.optimizer.zero_grad(set_to_none=True)
    losses = torch.stack(micro_losses)
    if world > 1:  # each process saw its share: the step's loss sums all of them
        losses = t.accelerator.gather(losses)  # queued with the step, read with it
    return _QueuedStep(
        step, _LossesOnTheirWay(losses), int(batch["attention_mask"].sum()),
        t.optimizer.step_was_skipped, t.scheduler.get_last_lr()[0],
        t.scaler.get_scale() if t.scaler is not None and reads_loss_scale else None)


def _write_checkpoint(t: _Training, tokenizer, run_dir: Path, done: int, log: _StepLog,
                      on_checkpoint: Callable[[torch.nn.Module, int, int, Path, list], None]
                      ) -> None:
    """Save checkpoint ``done`` (weights and the state to resume from), let ``on_checkpoint``
    measure and commit it with the queued training rows, and delete the older checkpoints'
    resume state. Every process takes part in gathering a sharded model's weights; only the
    main process writes, measures and commits, while the others wait for it."""
    folder = run_dir / f"checkpoint-{done}"
    unwrapped = t.accelerator.unwrap_model(t.model)
    # the peak so far, before this checkpoint is measured (peak_memory.py)
    log.rows.add(done, log.tokens, "peak_memory_mb", peak_memory_mb(t.accelerator.device))
    sharded = is_sharded(t.accelerator)
    full_state = t.accelerator.get_state_dict(t.model) if sharded else None
    if t.accelerator.is_main_process:
        save_checkpoint(unwrapped, tokenizer, folder, full_state)
        torch.save({"optimizer": t.optimizer.state_dict(), "scheduler": t.scheduler.state_dict(),
                    "tokens": log.tokens, "step": done, "rng": torch.get_rng_state(),
                    "skipped": log.skipped,
                    "scaler": t.scaler.state_dict() if t.scaler else None},
                   folder / STATE_FILE)
        t.model.eval()
        with plain_forward(unwrapped):  # a sharded model is measured from its files
            on_checkpoint(None if sharded else unwrapped, done, log.tokens, folder,
                          log.rows.take())
        t.model.train()
        for older in log.checkpoint_steps:
            old_state = run_dir / f"checkpoint-{older}" / STATE_FILE
            if older < done and old_state.exists():
                old_state.unlink()  # only the latest checkpoint is needed to resume
    t.accelerator.wait_for_everyone()


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
    stop_step: int | None = None,
) -> LoopResult:
    """Train ``model`` to the last checkpoint step, calling ``on_checkpoint(model, step,
    tokens, folder, train_rows)`` at each one; resume from the checkpoint at ``resume_step``.
    ``loss_scale``: the initial scale of fp16-mixed's gradient scaler. ``stop_step``: a
    checkpoint step before the last at which the loop stops (status ``paused``), leaving that
    checkpoint's state to resume from; the schedule is still the whole run's, so a run resumed
    from there trains exactly as one that never stopped."""
    total_steps = checkpoint_steps[-1]
    if stop_step is not None and stop_step not in checkpoint_steps:
        raise ValueError(f"stop_step {stop_step} is not a checkpoint step {checkpoint_steps}")
    end = total_steps if stop_step is None else stop_step
    resume_from = run_dir / f"checkpoint-{resume_step}" if resume_step else None
    t, tokens, skipped = _start_training(model, run, total_steps, resume_from, loss_scale)
    log = _StepLog(checkpoint_steps, t.scale, t.scaler, on_step, tokens, skipped)
    unread = _UnreadSteps(loss_read_lag(t.accelerator.device, t.scaler))
    for step in range(resume_step, end):
        done = step + 1
        at_checkpoint = done in checkpoint_steps
        unread.add(_train_step(t, stream.batch(step), step, _writes_rows(done, checkpoint_steps)))
        # The steps queued before are read now (all of them before a checkpoint): on a GPU the
        # host reads a step's loss while the next step runs, never waiting for the current one;
        # a loss read between forward and backward would stall it every micro-batch.
        for queued in unread.readable(all_of_them=at_checkpoint):
            ended = log.count(queued)
            if ended is not None:
                return ended
        if at_checkpoint:
            _write_checkpoint(t, tokenizer, run_dir, done, log, on_checkpoint)
            log.restart_clock()
    if end < total_steps:
        return LoopResult("paused", end, log.tokens)
    return LoopResult("finished", total_steps, log.tokens)
