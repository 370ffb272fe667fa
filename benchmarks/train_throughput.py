"""Training throughput: learnforget's loop against Hugging Face ``Trainer`` + PEFT.

Both sides train the same base (same weights), with the same method (full finetuning, LoRA r=8
and r=64 on all linear modules, adapters initialised from the same seed), on the same batches
in the same order (learnforget's seeded code-CPT stream, fed to ``Trainer`` as an iterable
dataset so that it does not reshuffle), with AdamW at a constant learning rate, gradient
clipping at 1.0 and float32 on a CPU. Each repeat runs each side in a fresh process (so that
its peak resident memory is its own), alternating which side goes first. Reported per side:
the median tokens/s over the repeats (steps 2..N, the first step being warm-up), the median
peak memory, and the mean loss of the last steps, which must agree between the sides.

The machine's float32 GEMM peak is measured in the same run (``torch.matmul`` of square
matrices) and each side's model FLOP/s (6·N per token for full finetuning, 4·N for LoRA, N the
parameters of the linear layers and the head, plus attention) is given as a share of it.
On a GPU, ``--device cuda --precision bf16-mixed`` runs both sides in bf16 autocast (``Trainer``
with ``bf16=True``), the peak then CUDA's allocated maximum and the GEMM peak bf16's.

    python benchmarks/train_throughput.py --model builtin:tiny --steps 12 --repeats 3
    python benchmarks/train_throughput.py --model smollm2-135m-instruct-gguf --steps 4 \\
        --batch-size 4 --seq-len 256
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profiling import print_profiles, profile_call  # noqa: E402

METHODS = {
    "full": {"kind": "full", "lr": 1e-4},
    "lora-r8": {"kind": "lora", "lr": 1e-3, "r": 8, "alpha": 16.0, "targets": "all"},
    "lora-r64": {"kind": "lora", "lr": 1e-3, "r": 64, "alpha": 128.0, "targets": "all"},
}


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--methods", default="full,lora-r8,lora-r64")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per side")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16-mixed"),
                        help="both sides' training precision (bf16-mixed: autocast, as "
                             "Trainer's bf16=True)")
    parser.add_argument("--in-process", action="store_true",
                        help="no fresh process per side (quick checks; peak memory not shown)")
    parser.add_argument("--profile", action="store_true",
                        help="also run each side once more under torch.profiler: the work it "
                             "does (GFLOP) and where its time goes")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser.parse_args(argv)


def _run_config(args: argparse.Namespace, method: str):
    from learnforget.plan import MethodConfig, RunConfig
    from learnforget.study import (
        BaseModelSpec,
        BudgetSpec,
        OptimizerSpec,
        ScheduleSpec,
        TargetSpec,
        TrainingSpec,
    )

    return RunConfig(
        base=BaseModelSpec(model=args.model, device=args.device),
        target=TargetSpec(domain="code", regime="cpt"),
        method=MethodConfig(**METHODS[method]),
        optimizer=OptimizerSpec(),
        schedule=ScheduleSpec(name="constant", warmup=0.0),
        training=TrainingSpec(batch_size=args.batch_size, seq_len=args.seq_len,
                              precision=args.precision),
        seed=0, budgets=BudgetSpec(steps=[args.steps]))


def _prepare(args: argparse.Namespace, method: str):
    """The run, its base (loaded), its batch stream and the method applied (seed 0)."""
    import torch

    from learnforget.base import load_base
    from learnforget.data.prepare import build_stream
    from learnforget.methods import apply_method
    from learnforget.train import training_base_spec

    run = _run_config(args, method)
    loaded = load_base(training_base_spec(run), log=lambda m: None)
    stream = build_stream(run, loaded.tokenizer)
    torch.manual_seed(0)
    model = apply_method(loaded.model, run.method)
    return run, loaded.tokenizer, stream, model


def linear_params(model) -> int:
    """Parameters of the linear layers (head included): what the matmuls of a step touch."""
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)
               and not any(part in type(m).__module__ for part in ("peft",)))


def side_learnforget(args: argparse.Namespace, method: str) -> dict:
    """Train with learnforget's ``train_loop``; step times from its ``on_step`` callback."""
    import tempfile
    from pathlib import Path

    from learnforget.train import train_loop

    run, tokenizer, stream, model = _prepare(args, method)
    times, losses, tokens = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        train_loop(model, tokenizer, stream, run, [args.steps], Path(folder),
                   on_checkpoint=lambda *a: None,
                   on_step=lambda step, tok, loss, tps: (times.append(time.perf_counter()),
                                                         losses.append(loss),
                                                         tokens.append(tok)))
    return _summary(times, tokens, losses, model, run)


def side_trainer(args: argparse.Namespace, method: str) -> dict:
    """Train with ``transformers.Trainer`` (PEFT's model for LoRA) on the same batches."""
    import tempfile

    import torch
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    run, _, stream, model = _prepare(args, method)

    class Batches(torch.utils.data.IterableDataset):
        def __iter__(self):
            for step in range(args.steps):
                batch = stream.batch(step)
                for row in range(batch["input_ids"].shape[0]):
                    yield {k: v[row] for k, v in batch.items()}

    times, losses, tokens = [], [], []

    class Clock(TrainerCallback):
        def on_step_end(self, targs, state, control, **kwargs):
            times.append(time.perf_counter())
            tokens.append(state.global_step * args.batch_size * args.seq_len)

        def on_log(self, targs, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory() as folder:
        targs = TrainingArguments(
            output_dir=folder, per_device_train_batch_size=args.batch_size,
            max_steps=args.steps, learning_rate=run.method.lr, lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=0.0, adam_beta1=run.optimizer.betas[0],
            adam_beta2=run.optimizer.betas[1], adam_epsilon=run.optimizer.eps,
            max_grad_norm=run.training.max_grad_norm, optim="adamw_torch", logging_steps=1,
            save_strategy="no", report_to=[], use_cpu=args.device == "cpu",
            bf16=args.precision == "bf16-mixed", seed=0, data_seed=0,
            dataloader_num_workers=0, disable_tqdm=True)
        trainer = Trainer(model=model, args=targs, train_dataset=Batches(),
                          callbacks=[Clock()])
        trainer.remove_callback(PrinterCallback)  # no log lines between the table's
        trainer.train()
    return _summary(times, tokens, losses, model, run)


def _peak_mb(device: str) -> float:
    """The process's peak: resident memory on a CPU (the whole process: the learnforget loop
    resets its own high-water mark), allocated memory on CUDA."""
    import torch

    from learnforget.peak_memory import peak_rss_bytes

    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_bytes() / 2**20


def _summary(times: list, tokens: list, losses: list, model, run) -> dict:
    elapsed = times[-1] - times[0]
    counted = tokens[-1] - tokens[0]
    tail = losses[-3:]
    return {"tokens_per_s": counted / elapsed if elapsed > 0 else float("nan"),
            "losses": losses, "final_loss": sum(tail) / len(tail),
            "peak_mb": _peak_mb(run.base.device), "linear_params": linear_params(model),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size}


SIDES = {"learnforget": side_learnforget, "Trainer+PEFT": side_trainer}


def _side_once(name: str, args: argparse.Namespace, method: str, profiled: bool) -> dict:
    """The side's summary, or (``profiled``) its profile: loading and training both."""
    if profiled:
        return profile_call(lambda: SIDES[name](args, method))
    return SIDES[name](args, method)


def _child(name: str, args: argparse.Namespace, method: str, profiled: bool, queue) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from learnforget.quiet import quiet_warnings

    quiet_warnings()
    queue.put(_side_once(name, args, method, profiled))


def run_side(name: str, args: argparse.Namespace, method: str, profiled: bool = False) -> dict:
    """One side once (its profile when ``profiled``): in a fresh process unless
    ``--in-process``."""
    if args.in_process:
        result = _side_once(name, args, method, profiled)
        result["peak_mb"] = float("nan")
        return result
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(name, args, method, profiled, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def gemm_peak_flops(size: int = 1024, seconds: float = 2.0, device: str = "cpu",
                    dtype: str = "float32") -> float:
    """The best ``torch.matmul`` FLOP/s of two ``size``² matrices of ``dtype`` on ``device``
    (on CUDA each product is timed to its end)."""
    import torch

    a, b = (torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
            for _ in range(2))
    done = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    torch.matmul(a, b)
    done()
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        torch.matmul(a, b)
        done()
        best = max(best, 2 * size**3 / (time.perf_counter() - t))
    return best


def model_flops_per_token(result: dict, method: str, seq_len: int) -> float:
    """6·N (full) or 4·N (LoRA: no weight gradients for frozen layers) per token, N the linear
    parameters, plus attention's 12·layers·hidden·seq_len (forward and backward)."""
    factor = 6 if method == "full" else 4
    return factor * result["linear_params"] + 12 * result["layers"] * result["hidden"] * seq_len


def machine() -> str:
    """A one-line description of this machine and its load."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, Python "
            f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}")


def benchmark(args: argparse.Namespace) -> dict:
    """Every method, each side ``repeats`` times (alternating), with the GEMM peak."""
    import torch

    torch.set_num_threads(args.threads)
    gpu = args.device != "cpu"
    peak = gemm_peak_flops(4096 if gpu else 1024, device=args.device,
                           dtype="bfloat16" if args.precision == "bf16-mixed" else "float32")
    results: dict = {"machine": machine(), "model": args.model, "steps": args.steps,
                     "batch_size": args.batch_size, "seq_len": args.seq_len,
                     "threads": args.threads, "device": args.device,
                     "precision": args.precision, "gemm_peak_gflops": peak / 1e9,
                     "methods": {}}
    for method in args.methods.split(","):
        runs: dict[str, list[dict]] = {name: [] for name in SIDES}
        for repeat in range(args.repeats):
            order = list(SIDES) if repeat % 2 == 0 else list(SIDES)[::-1]
            for name in order:
                runs[name].append(run_side(name, args, method))
        summary = {}
        for name, done in runs.items():
            tps = statistics.median(r["tokens_per_s"] for r in done)
            flops = tps * model_flops_per_token(done[0], method, args.seq_len)
            summary[name] = {"tokens_per_s": tps,
                             "peak_mb": statistics.median(r["peak_mb"] for r in done),
                             "final_loss": done[0]["final_loss"], "losses": done[0]["losses"],
                             "gemm_fraction": flops / peak}
        ours, theirs = summary["learnforget"], summary["Trainer+PEFT"]
        summary["ratio"] = ours["tokens_per_s"] / theirs["tokens_per_s"]
        summary["loss_difference"] = abs(ours["final_loss"] - theirs["final_loss"])
        if args.profile:
            summary["profile"] = {name: run_side(name, args, method, profiled=True)
                                  for name in SIDES}
        results["methods"][method] = summary
    results["load_average_end"] = os.getloadavg()[0]
    return results


def print_table(results: dict) -> None:
    """One table: per method and side, tokens/s, peak memory, final loss, GEMM share."""
    precision, device = results.get("precision", "fp32"), results.get("device", "cpu")
    gemm = "bf16" if precision == "bf16-mixed" else "fp32"
    print(f"model {results['model']}, {results['steps']} steps of {results['batch_size']}×"
          f"{results['seq_len']} tokens, {precision} on {device}, {results['threads']} "
          f"thread(s); {gemm} GEMM peak {results['gemm_peak_gflops']:.1f} GFLOP/s; "
          f"{results['machine']}")
    print(f"{'method':<10} {'side':<13} {'tokens/s':>10} {'peak MiB':>9} {'loss':>9} "
          f"{'of peak':>8} {'ratio':>6}")
    for method, summary in results["methods"].items():
        for name in SIDES:
            side = summary[name]
            ratio = f"{summary['ratio']:.2f}×" if name == "learnforget" else ""
            print(f"{method:<10} {name:<13} {side['tokens_per_s']:>10.0f} "
                  f"{side['peak_mb']:>9.0f} {side['final_loss']:>9.4f} "
                  f"{side['gemm_fraction']:>7.1%} {ratio:>6}")
    for method, summary in results["methods"].items():
        if "profile" in summary:
            print_profiles(f"{method}, one run per side under the profiler (loading and "
                           f"{results['steps']} steps):", summary["profile"])
    print(f"load average at the end: {results['load_average_end']:.1f}")


def run_and_report(args: argparse.Namespace, run, show) -> dict:
    """Run a benchmark (``run(args)``), print its table (``show(results)``) and write its JSON
    when ``--json`` names a file: the ``main`` of every benchmark here."""
    results = run(args)
    show(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print its table, optionally write JSON."""
    return run_and_report(_parse_args(argv), benchmark, print_table)


if __name__ == "__main__":
    main(sys.argv[1:])
