"""One AdamW step: PyTorch's fused kernel (learnforget's optimizer) against the per-tensor loop
(``transformers.Trainer``'s default ``optim="adamw_torch"`` on a CPU), on random parameters and
gradients of a model's shapes (SmolLM2-135M's by default: 30 layers of width 576, MLP 1536, a
49,152-token tied embedding; 148M parameters). Both sides alternate, the median of ``--repeats``
timed steps after one warm-up step; the two updates must agree to float rounding.

    python benchmarks/adamw_step.py [--threads 1] [--repeats 5] [--shapes smollm2-135m]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

SHAPES = {
    "smollm2-135m": [(576, 576)] * 120 + [(1536, 576)] * 90 + [(49152, 576)] + [(576,)] * 61,
    "micro": [(64, 64)] * 8 + [(256, 64)] * 6 + [(1024, 64)] + [(64,)] * 5,  # for the test
}


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="smollm2-135m")
    return parser.parse_args(argv)


def _side(fused: bool, shapes: list[tuple[int, ...]]
          ) -> tuple[list[torch.nn.Parameter], torch.optim.AdamW]:
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*shape, generator=generator) * 0.02)
              for shape in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * 1e-3
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01,
                                  fused=fused or None)
    optimizer.step()  # warm-up: the states are allocated
    return params, optimizer


def main(argv: list[str] | None = None) -> dict:
    """Time both sides, check they give the same weights, print one table."""
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = SHAPES[args.shapes]
    sides = {"fused (learnforget)": _side(True, shapes),
             "per-tensor (Trainer default)": _side(False, shapes)}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, (_, optimizer) in sides.items():
            started = time.perf_counter()
            optimizer.step()
            times[name].append(time.perf_counter() - started)
    (ours, _), (theirs, _) = sides.values()
    gap = max(float((a - b).detach().abs().max()) for a, b in zip(ours, theirs, strict=True))
    medians = {name: statistics.median(t) for name, t in times.items()}
    count = sum(p.numel() for p in ours)
    print(f"AdamW step over {count / 1e6:.0f}M parameters, {args.threads} thread(s), median of "
          f"{args.repeats}; largest weight difference after {args.repeats + 1} steps: {gap:.1e}")
    for name, seconds in medians.items():
        print(f"{name:30s} {seconds:7.3f} s")
    first, second = medians.values()
    print(f"ratio (per-tensor / fused): {second / first:.2f}×")
    return {"seconds": medians, "max_weight_difference": gap, "parameters": count}


if __name__ == "__main__":
    main()
