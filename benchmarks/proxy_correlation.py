"""How well the cheap proxies track the benchmarks, over every checkpoint of one or more studies.

    python benchmarks/proxy_correlation.py OUT [OUT ...]

Pairs, each point a measured model (the base, and every run's every checkpoint that has both):

- forgetting: ``source_bpb`` (bits per byte) against the mean of the HellaSwag, ARC-Challenge
  and WinoGrande primary scores (the paper's forgetting average);
- learning: the target bits/byte (``math_bpb`` / ``code_bpb``) against GSM8K strict exact match
  / HumanEval pass@1.

For each: the Spearman rank correlation, and a 95% percentile bootstrap interval over the points
(2,000 resamples, seed 0; resamples where either side is constant are left out). A proxy that
tracks its benchmark has a correlation near -1 (bits/byte falls as the score rises). Prints one
JSON object.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

from scipy.stats import spearmanr

from learnforget.measure.tasks import get_task
from learnforget.store import Store

FORGETTING = ("hellaswag", "arc_challenge", "winogrande")
PAIRS = {"math_bpb": "gsm8k", "code_bpb": "humaneval"}


def points(out: Path) -> list[dict[str, float]]:
    """{task: primary value} of every (run, step) in OUT's store."""
    store = Store(out / "results.sqlite")
    try:
        found: dict[tuple, dict[str, float]] = {}
        for row in store.measurements():
            try:
                primary = get_task(row["task"]).primary
            except Exception:  # train rows, params, spectrum: not tasks
                continue
            if row["metric"] == primary and row["value"] is not None:
                found.setdefault((row["run_id"], row["step"]), {})[row["task"]] = row["value"]
    finally:
        store.close()
    return list(found.values())


def rank_correlation(xs: list[float], ys: list[float], resamples: int = 2000) -> dict:
    """Spearman's rho of the pairs and its 95% bootstrap interval."""
    def rho(a, b):
        if len(set(a)) < 2 or len(set(b)) < 2:
            return math.nan
        return float(spearmanr(a, b).statistic)

    rng = random.Random(0)
    draws = []
    for _ in range(resamples):
        picks = [rng.randrange(len(xs)) for _ in xs]
        value = rho([xs[i] for i in picks], [ys[i] for i in picks])
        if not math.isnan(value):
            draws.append(value)
    draws.sort()
    interval = ([draws[int(0.025 * len(draws))], draws[int(0.975 * len(draws)) - 1]]
                if len(draws) >= 100 else None)
    value = rho(xs, ys)
    result = {"n": len(xs), "rho": value if math.isfinite(value) else None,
              "interval95": interval, "usable_resamples": len(draws)}
    if not math.isfinite(value):  # say why there is no correlation
        constant = [name for name, side in (("proxy", xs), ("benchmark", ys))
                    if len(set(side)) < 2]
        verb = "takes" if len(constant) == 1 else "take"
        result["undefined_because"] = (f"the {' and the '.join(constant)} {verb} one value over "
                                       "every point" if constant else "fewer than two points")
    return result


def main(outs: list[Path]) -> dict:
    """The correlations of the pairs over the checkpoints of every OUT."""
    every = [p for out in outs for p in points(out)]
    result = {}
    forget = [p for p in every if "source_bpb" in p and all(t in p for t in FORGETTING)]
    result["source_bpb~forgetting_average"] = rank_correlation(
        [p["source_bpb"] for p in forget], [sum(p[t] for t in FORGETTING) / 3 for p in forget])
    for proxy, benchmark in PAIRS.items():
        both = [p for p in every if proxy in p and benchmark in p]
        if both:
            result[f"{proxy}~{benchmark}"] = rank_correlation(
                [p[proxy] for p in both], [p[benchmark] for p in both])
    return result


if __name__ == "__main__":
    print(json.dumps(main([Path(a) for a in sys.argv[1:]]), indent=2))
