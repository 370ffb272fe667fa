"""Training memory: ``learnforget estimate`` against the peak ``learnforget run`` records.

For one base, a study with full finetuning and LoRA r=8 / r=64 (all linear modules), code CPT,
float32 on the CPU (or ``--device cuda --precision bf16-mixed``), ``--steps`` optimizer steps and
no spectrum, is first estimated
(``learnforget estimate --json``, in a fresh process: its runtime part is that process's
resident memory) and then run (``learnforget run``, each run in its own worker process, as a
user runs it). Printed per run: the estimate by part, the recorded peak
(``train/peak_memory_mb``: the worker's resident high-water mark since its training loop
started, ``torch.cuda.max_memory_allocated`` on CUDA) and their difference. The estimate
should be within 10% of the recorded peak.

    python benchmarks/memory_estimate.py --model builtin:tiny
    python benchmarks/memory_estimate.py --model smollm2-135m-instruct-gguf --batch-size 4 \\
        --seq-len 128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import machine, run_and_report  # noqa: E402

METHODS = {
    "full": {"kind": "full", "lr": [1e-4]},
    "lora-r8": {"kind": "lora", "lr": [1e-3], "r": [8], "targets": ["all"]},
    "lora-r64": {"kind": "lora", "lr": [1e-3], "r": [64], "targets": ["all"]},
}
PARTS = ("weights", "gradients", "optimizer", "activations", "snapshot", "runtime")


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per run")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--device", default="cpu", help="the study's base.device (cpu, cuda)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16-mixed"),
                        help="the study's training.precision")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser.parse_args(argv)


def study_for(args: argparse.Namespace) -> dict:
    """The study both commands take: every method of ``--methods`` on ``--model``."""
    return {"name": "memory", "base": {"model": args.model, "device": args.device},
            "target": {"domain": "code", "regime": "cpt"},
            "methods": [METHODS[name] for name in args.methods.split(",")],
            "training": {"batch_size": args.batch_size, "seq_len": args.seq_len,
                         "precision": args.precision},
            "budgets": {"steps": [args.steps]}, "workers": 1,
            "evaluation": {"learning": ["code_bpb"], "forgetting": ["source_bpb"], "limit": 2,
                           "spectrum": False}}


def _learnforget(arguments: list[str], threads: int) -> str:
    """``learnforget ARGUMENTS`` in a fresh process; its standard output."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-m", "learnforget", *arguments],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"learnforget {' '.join(arguments)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def recorded_peaks(out: Path) -> dict[str, float]:
    """Run id → the largest ``train/peak_memory_mb`` the run stored."""
    from learnforget.store import Store

    store = Store(out / "results.sqlite")
    try:
        peaks: dict[str, float] = {}
        for row in store.measurements():
            if (row["task"], row["metric"]) == ("train", "peak_memory_mb"):
                peaks[row["run_id"]] = max(peaks.get(row["run_id"], 0.0), row["value"])
        return peaks
    finally:
        store.close()


def benchmark(args: argparse.Namespace) -> dict:
    """Estimate, run, compare."""
    import yaml

    with tempfile.TemporaryDirectory() as folder:
        study_file = Path(folder) / "memory.yaml"
        study_file.write_text(yaml.safe_dump(study_for(args)))
        estimates = json.loads(_learnforget(["estimate", str(study_file), "--json"],
                                            args.threads))
        _learnforget(["run", str(study_file), "--out", str(Path(folder) / "out")], args.threads)
        peaks = recorded_peaks(Path(folder) / "out")
    runs = []
    for row in estimates:
        recorded = peaks[row["run_id"]]
        runs.append({"method": row["method"], "micro_batch": row["micro_batch"],
                     "estimate_mb": {part: row[f"{part}_mb"] for part in PARTS},
                     "estimated_mb": row["total_mb"], "recorded_mb": recorded,
                     "difference": recorded / row["total_mb"] - 1})
    return {"machine": machine(), "model": args.model, "batch_size": args.batch_size,
            "seq_len": args.seq_len, "steps": args.steps, "threads": args.threads,
            "device": args.device, "precision": args.precision, "runs": runs}


def print_table(results: dict) -> None:
    """One table: per run, the estimate by part, the recorded peak and the difference."""
    print(f"model {results['model']}, {results['steps']} steps of {results['batch_size']}×"
          f"{results['seq_len']} tokens, {results.get('precision', 'fp32')} on "
          f"{results.get('device', 'cpu')}, OMP_NUM_THREADS={results['threads']}; "
          f"{results['machine']}")
    print(f"{'method':<22} " + " ".join(f"{part:>11}" for part in PARTS)
          + f" {'estimated':>10} {'recorded':>9} {'recorded/estimated':>19}")
    for run in results["runs"]:
        print(f"{run['method']:<22} "
              + " ".join(f"{run['estimate_mb'][part]:>11.0f}" for part in PARTS)
              + f" {run['estimated_mb']:>10.0f} {run['recorded_mb']:>9.0f} "
                f"{run['difference']:>+18.1%}")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print its table, optionally write JSON."""
    return run_and_report(_parse_args(argv), benchmark, print_table)


if __name__ == "__main__":
    main(sys.argv[1:])
