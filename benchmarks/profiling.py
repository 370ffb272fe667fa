"""Where a benchmark side's time goes: one call under ``torch.profiler``, summarised.

The summary holds the floating-point work the profiler counts (``with_flops``: the matrix
products, which are nearly all of a transformer's arithmetic), the call's wall time, and the
operators that took the most time of their own. Two sides' work ratio is what an exact method
can gain at most when both run their matrix products equally fast; the speed ratio beyond or
short of it is the rest (per-pass overhead, kernels that run at another rate).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def profile_call(call: Callable[[], object], top: int = 6) -> dict:
    """Run ``call`` once under the PyTorch profiler (CPU): its GFLOP (matrix products), its wall
    seconds, and the ``top`` operators by self CPU time with their share of the summed self
    time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        start = time.perf_counter()
        call()
        seconds = time.perf_counter() - start
    events = prof.key_averages()
    total_self = sum(e.self_cpu_time_total for e in events) or 1.0
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {"gflop": sum(e.flops for e in events) / 1e9,
            "seconds": seconds,
            "top": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6,
                     "share": e.self_cpu_time_total / total_self, "calls": e.count}
                    for e in ranked]}


def print_profiles(title: str, profiles: dict[str, dict]) -> None:
    """One block per side: GFLOP, seconds, GFLOP/s and the top operators; then the ratio of the
    work the first side's rivals do to its own."""
    print(title)
    for side, found in profiles.items():
        rate = found["gflop"] / found["seconds"] if found["seconds"] else 0.0
        print(f"  {side:<13} {found['gflop']:8.1f} GFLOP in {found['seconds']:6.2f} s "
              f"({rate:5.1f} GFLOP/s under the profiler)")
        for op in found["top"]:
            print(f"      {op['op'][:44]:<44} {op['self_s']:7.2f} s {op['share']:6.1%} "
                  f"{op['calls']:>7} calls")
    sides = list(profiles)
    if len(sides) == 2 and profiles[sides[0]]["gflop"]:
        first, second = (profiles[side]["gflop"] for side in sides)
        print(f"  work ratio {sides[1]} / {sides[0]}: {second / first:.2f}×")
