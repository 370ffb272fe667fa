"""Time `learnforget.measure.spectrum.spectrum` on Llama-2-7B-shaped weights against the per-matrix
float64 NumPy loop one would otherwise write.

Per layer, Llama-2-7B has four 4096×4096 attention matrices (q, k, v, o) and three MLP matrices
(gate and up 11008×4096, down 4096×11008). The base weights are Gaussian, the tuned ones the base
plus a small full-rank change (SVD time hardly depends on the values).

Both sides compute the same numbers: the singular values of ΔW, those of a Gaussian matrix of the
same shape (random baseline) and, for intruder dimensions, the left singular vectors of W_base and
W_tuned. The NumPy loop is the straightforward but not careless version: `compute_uv=False` where
only singular values are needed and `full_matrices=False` otherwise; it draws one random matrix
per weight since nothing tells a loop that one per shape suffices.

On a CPU the NumPy loop runs on `--naive-per-shape` matrices of each shape and its total is
extrapolated to all matrices by shape counts; the output says so. Usage:

    python benchmarks/svd_speed.py --layers 1 --device cpu
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2, help="Llama-2-7B layers to build (2)")
    parser.add_argument("--device", default=None, help="cuda if available, else cpu")
    parser.add_argument(
        "--naive-per-shape",
        type=int,
        default=1,
        help="matrices per shape run through the NumPy loop; 0 = all (default 1, extrapolated)",
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for both sides (1)")
    parser.add_argument("--hidden", type=int, default=4096, help="hidden size (Llama-2-7B: 4096)")
    parser.add_argument(
        "--intermediate", type=int, default=11008, help="MLP size (Llama-2-7B: 11008)"
    )
    parser.add_argument(
        "--solver", default=None, help="svd or gram (default: gram on CUDA, svd on CPU)"
    )
    parser.add_argument(
        "--compare-solvers",
        action="store_true",
        help="first time each decomposition on one matrix of each shape and check they agree",
    )
    return parser.parse_args()


ARGS = _parse_args()
# BLAS thread pools read these when NumPy and torch are first imported.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from learnforget.measure import spectrum as spectrum_module  # noqa: E402


def layer_shapes(hidden: int, intermediate: int) -> dict[str, tuple[int, int]]:
    """Weight shapes of one Llama layer (out_features, in_features)."""
    return {
        "self_attn.q_proj": (hidden, hidden),
        "self_attn.k_proj": (hidden, hidden),
        "self_attn.v_proj": (hidden, hidden),
        "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (intermediate, hidden),
        "mlp.up_proj": (intermediate, hidden),
        "mlp.down_proj": (hidden, intermediate),
    }


def build_pairs(
    layers: int, hidden: int, intermediate: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Gaussian base weights (std 0.02) and tuned = base + a full-rank change (std 0.001)."""
    generator = torch.Generator().manual_seed(0)
    pairs = {}
    for layer in range(layers):
        for module, shape in layer_shapes(hidden, intermediate).items():
            base = 0.02 * torch.randn(shape, generator=generator)
            tuned = base + 0.001 * torch.randn(shape, generator=generator)
            pairs[f"model.layers.{layer}.{module}.weight"] = (base, tuned)
    return pairs


def _timed(function, *args) -> tuple[float, object]:
    """(seconds, result) of one call, synchronising CUDA around it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def time_ours(pairs: dict, device: str, intruder_k: int) -> float:
    """Seconds for `spectrum` (random-baseline cache cleared, weights start on the CPU)."""
    spectrum_module._unit_random_singular_values.cache_clear()
    run = functools.partial(
        spectrum_module.spectrum, intruder_k=intruder_k, device=device, solver=ARGS.solver
    )
    return _timed(run, pairs)[0]


def compare_solvers(pairs: dict, device: str) -> None:
    """Per shape, on one ΔW: seconds of each way to get singular values on `device`, and whether
    the rank for 90% of Σσ² agrees with the float32 SVD's."""
    from learnforget.measure import decompose

    seen: set[tuple[int, int]] = set()
    for w_base, w_tuned in pairs.values():
        shape = tuple(w_base.shape)
        if shape in seen:
            continue
        seen.add(shape)
        delta = (w_tuned - w_base).to(device).unsqueeze(0)
        _timed(decompose.singular_values, delta[:, :64, :64], "gram")  # warm-up (libraries load)
        _timed(decompose.singular_values, delta[:, :64, :64], "svd")
        tall = delta.mT if shape[0] < shape[1] else delta
        ways = {
            "torch.linalg.svdvals (default driver)": (torch.linalg.svdvals, tall),
            "svd solver (float32 svdvals)": (decompose.singular_values, delta, "svd"),
            "gram solver (float64 eigvalsh)": (decompose.singular_values, delta, "gram"),
            "gram solver, vectors (float64 eigh)": (decompose.left_singular, delta, "gram"),
            "svd solver, vectors (float32 svd)": (decompose.left_singular, delta, "svd"),
        }
        if device.startswith("cuda"):
            gesvd = functools.partial(torch.linalg.svdvals, driver="gesvd")
            ways["torch.linalg.svdvals driver=gesvd"] = (gesvd, tall)
        results = {}
        for label, (function, *args) in ways.items():
            seconds, result = _timed(function, *args)
            results[label] = result
            print(f"  {shape[0]}×{shape[1]} {label}: {seconds:.3f} s", flush=True)
        reference = results["svd solver (float32 svdvals)"][0].double()
        gram = results["gram solver (float64 eigvalsh)"][0].double()
        top = reference[: spectrum_module.STORED_SINGULAR_VALUES]
        error = ((gram[: len(top)] - top).abs() / top).max().item()
        print(
            f"  {shape[0]}×{shape[1]} rank90 svd {spectrum_module.rank_for_variance(reference)}"
            f" vs gram {spectrum_module.rank_for_variance(gram)}; largest relative difference of"
            f" the top {len(top)} singular values {error:.1e}",
            flush=True,
        )


def time_naive_one(w_base: torch.Tensor, w_tuned: torch.Tensor) -> tuple[float, float]:
    """(seconds for ΔW + random singular values, seconds for the two U's) of one matrix, float64."""
    base = w_base.double().numpy()
    tuned = w_tuned.double().numpy()
    start = time.perf_counter()
    np.linalg.svd(tuned - base, compute_uv=False)
    np.linalg.svd(np.random.default_rng(0).standard_normal(base.shape), compute_uv=False)
    ranks = time.perf_counter() - start
    start = time.perf_counter()
    np.linalg.svd(base, full_matrices=False)
    np.linalg.svd(tuned, full_matrices=False)
    return ranks, time.perf_counter() - start


def main() -> None:
    """Build the matrices, time both sides, print times and ratios."""
    torch.set_num_threads(ARGS.threads)
    device = ARGS.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pairs = build_pairs(ARGS.layers, ARGS.hidden, ARGS.intermediate)
    shapes: dict[tuple[int, int], list[str]] = {}
    for name, (base, _) in pairs.items():
        shapes.setdefault(tuple(base.shape), []).append(name)
    print(f"matrices: {len(pairs)} ({ARGS.layers} layers of hidden {ARGS.hidden}, ", end="")
    print(f"intermediate {ARGS.intermediate}), device {device}, ", end="")
    print(f"threads {ARGS.threads}, torch {torch.__version__}, numpy {np.__version__}, ", end="")
    print(f"solver {ARGS.solver or ('gram' if device.startswith('cuda') else 'svd')}")

    if ARGS.compare_solvers:
        compare_solvers(pairs, device)
    ours_ranks = time_ours(pairs, device, intruder_k=0)
    print(f"  learnforget spectrum, ranks only: {ours_ranks:.2f} s", flush=True)
    ours_full = time_ours(pairs, device, intruder_k=10)
    print(f"  learnforget spectrum, with intruders: {ours_full:.2f} s", flush=True)

    for shape in shapes:
        # cached by the run above: the Gaussian baseline's ranks for this shape
        random_values = spectrum_module.random_singular_values(shape, device=device)
        print(
            f"  random baseline {shape[0]}×{shape[1]}: rank90 "
            f"{spectrum_module.rank_for_variance(random_values, 0.9, 2)}, rank90_sigma "
            f"{spectrum_module.rank_for_variance(random_values, 0.9, 1)} of {min(shape)}"
        )

    naive_ranks = naive_full = 0.0
    measured = 0
    for shape, names in shapes.items():
        subset = names if ARGS.naive_per_shape == 0 else names[: ARGS.naive_per_shape]
        times = [time_naive_one(*pairs[name]) for name in subset]
        measured += len(subset)
        mean_ranks = sum(t[0] for t in times) / len(times)
        mean_vectors = sum(t[1] for t in times) / len(times)
        print(
            f"  numpy float64, {shape[0]}×{shape[1]}: {mean_ranks:.2f} s ranks "
            f"+ {mean_vectors:.2f} s singular vectors per matrix ({len(subset)} measured)",
            flush=True,
        )
        naive_ranks += mean_ranks * len(names)
        naive_full += (mean_ranks + mean_vectors) * len(names)
    label = (
        "measured"
        if measured == len(pairs)
        else (f"extrapolated from {measured} of {len(pairs)} matrices")
    )

    print(f"rank90 + random baseline ({len(pairs)} matrices):")
    print(f"  learnforget spectrum, batched:     {ours_ranks:8.2f} s")
    print(f"  numpy float64 loop ({label}): {naive_ranks:8.2f} s")
    print(f"  speed-up: {naive_ranks / ours_ranks:.1f}×")
    print("rank90 + random baseline + intruders (k=10):")
    print(f"  learnforget spectrum, batched:     {ours_full:8.2f} s")
    print(f"  numpy float64 loop ({label}): {naive_full:8.2f} s")
    print(f"  speed-up: {naive_full / ours_full:.1f}×")
    if hasattr(os, "getloadavg"):
        print(
            "load average (1, 5, 15 min) at the end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
