"""Time the ΔW spectrum of a small model against the bare decompositions it needs, in one run.

The model is a random Llama of 4 layers (hidden 128, MLP 512: 28 changed 2-D matrices), each
weight moved by small Gaussian noise. One side is `learnforget.measure.spectrum.spectrum` on every
changed matrix (ΔW's singular values, the random baseline, the intruder comparison of W_base and
W_tuned); the other is the floor under it: the singular values of each ΔW alone
(`torch.linalg.svdvals`, one matrix at a time). Both are timed in the same process, each the best
of `--repeats`, and the script prints their ratio: what the spectrum costs per plain
decomposition, on this machine, with this load. Usage:

    python benchmarks/spectrum_small_model.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import time


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (4)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden size (128)")
    parser.add_argument("--intermediate", type=int, default=512, help="MLP width (512)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, best kept (3)")
    return parser.parse_args(argv)


def _best_seconds(work, repeats: int) -> float:
    """The shortest wall time of ``repeats`` calls of ``work()``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> dict:
    """Time both sides and print them with their ratio; returns the numbers."""
    args = _parse_args(argv)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from learnforget.measure.spectrum import spectrum
    from learnforget.measure.weight_change import changed_matrices

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=args.hidden,
                         intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=64)
    base = LlamaForCausalLM(config).eval().state_dict()
    generator = torch.Generator().manual_seed(0)
    tuned = {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in base.items()}
    pairs = changed_matrices(base, tuned)
    deltas = [w_tuned - w_base for w_base, w_tuned in pairs.values()]
    spectrum(pairs)  # warm-up: first calls load LAPACK kernels
    spectrum_s = _best_seconds(lambda: spectrum(pairs), args.repeats)
    svdvals_s = _best_seconds(lambda: [torch.linalg.svdvals(d) for d in deltas], args.repeats)
    result = {"matrices": len(pairs), "threads": args.threads, "spectrum_s": spectrum_s,
              "svdvals_s": svdvals_s, "ratio": spectrum_s / svdvals_s}
    print(f"{len(pairs)} matrices, {args.threads} thread(s), best of {args.repeats}: "
          f"spectrum {spectrum_s:.3f} s, ΔW svdvals alone {svdvals_s:.3f} s, "
          f"ratio {result['ratio']:.2f}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
