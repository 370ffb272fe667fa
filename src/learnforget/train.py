"""The training loop: one readable loop on ``accelerate`` for every method and regime.

One CPU process is the plain case; ``accelerate launch`` with an FSDP or DeepSpeed config runs
the same loop on many devices. Checkpoints are taken at the study's budgets; at each one the
caller's ``on_checkpoint`` measures the model and commits the rows (see ``runner.py``). A
NaN/inf loss ends the run with status ``diverged``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from learnforget.data.batches import IGNORE_INDEX, BatchStream, split_batch
from learnforget.optim import make_optimizer, make_scheduler
from learnforget.plan import RunConfig
from learnforget.store import Measurement

STATE_FILE = "trainer_state.pt"


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

    status: str  # finished | diverged
    step: int
    tokens: int
    error: str | None = None


def response_loss(logits: torch.Tensor, labels: torch.Tensor, n_targets: int) -> torch.Tensor:
    """Summed next-token cross-entropy over labelled positions, divided by ``n_targets``
    (the number of labelled tokens in the whole optimizer batch, so micro-batches add up)."""
    shifted = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    targets = labels[:, 1:].reshape(-1)
    total = torch.nn.functional.cross_entropy(
        shifted, targets, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total / max(n_targets, 1)


def save_checkpoint(model: torch.nn.Module, tokenizer, folder: Path) -> None:
    """LoRA: the adapter in PEFT's format; full: the model as safetensors (+ tokenizer)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None and not hasattr(model, "peft_config"):
        tokenizer.save_pretrained(folder)


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
) -> LoopResult:
    """Train ``model`` to the last checkpoint step, calling ``on_checkpoint(model, step,
    tokens, folder, train_rows)`` at each one; resume from the checkpoint at ``resume_step``."""
    training = run.training
    accelerator = Accelerator(gradient_accumulation_steps=training.grad_accum)
    total_steps = checkpoint_steps[-1]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, run.optimizer, run.method.lr, run.method.weight_decay)
    scheduler = make_scheduler(optimizer, total_steps, run.schedule)
    tokens = 0
    if resume_step:
        folder = run_dir / f"checkpoint-{resume_step}"
        load_checkpoint_weights(model, folder)
        state = torch.load(folder / STATE_FILE, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        tokens = state["tokens"]
        torch.set_rng_state(state["rng"])
    # The scheduler stays unprepared: it steps once per optimizer step whatever the world size.
    model, optimizer = accelerator.prepare(model, optimizer)
    world, rank = accelerator.num_processes, accelerator.process_index
    model.train()
    rows = TrainRows()
    window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, time.time()
    for step in range(resume_step, total_steps):
        batch = stream.batch(step)
        n_targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        step_loss = 0.0
        # Each process takes its share of the global batch; DDP averages gradients over
        # processes, so the loss is scaled by the world size to stay the batch mean.
        local = {k: v[rank::world] for k, v in batch.items()}
        for micro in split_batch(local, training.grad_accum):
            micro = {k: v.to(accelerator.device) for k, v in micro.items()}
            with accelerator.accumulate(model):
                logits = model(input_ids=micro["input_ids"],
                               attention_mask=micro["attention_mask"]).logits
                scale = training.grad_accum * world
                loss = response_loss(logits, micro["labels"], n_targets) * scale
                step_loss += loss.item() / scale
                if not math.isfinite(step_loss):
                    return LoopResult("diverged", step, tokens, f"loss {step_loss} at step {step}")
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, training.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
        step_tokens = int(batch["attention_mask"].sum())
        tokens += step_tokens
        window_loss += step_loss
        window_steps += 1
        window_tokens += step_tokens
        elapsed = max(time.time() - window_start, 1e-9)
        on_step(step + 1, tokens, step_loss, window_tokens / elapsed)
        done = step + 1
        if done % 10 == 0 or done in checkpoint_steps:
            rows.add(done, tokens, "loss", window_loss / window_steps)
            rows.add(done, tokens, "tokens_per_s", window_tokens / elapsed)
            rows.add(done, tokens, "lr", scheduler.get_last_lr()[0])
            window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, time.time()
        if done in checkpoint_steps:
            folder = run_dir / f"checkpoint-{done}"
            unwrapped = accelerator.unwrap_model(model)
            save_checkpoint(unwrapped, tokenizer, folder)
            torch.save(
                {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "tokens": tokens, "step": done, "rng": torch.get_rng_state()},
                folder / STATE_FILE,
            )
            model.eval()
            on_checkpoint(unwrapped, done, tokens, folder, rows.take())
            model.train()
            for older in checkpoint_steps:
                old_state = run_dir / f"checkpoint-{older}" / STATE_FILE
                if older < done and old_state.exists():
                    old_state.unlink()  # only the latest checkpoint is needed to resume
            window_start = time.time()
    return LoopResult("finished", total_steps, tokens)
