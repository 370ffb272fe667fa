"""The checklist's specification: for each part of claims 1–6, simulated studies at the null (no
effect, realistic item noise, seeds where the part uses them) and at a clear effect, 40
replicates each (``claim_simulation``). At the null a definite verdict (either way, for a
one-sided claim at its boundary) comes in ≤ 5% of replicates; at the clear effect the right
verdict in ≥ 90%. docs/report.md ("Calibration") lists the rates these tests measured; run
with ``-s`` to print them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from claim_simulation import Simulation, part_verdict, rate

from learnforget.analysis.claim_data import ClaimData
from learnforget.analysis.claims import claim_forgets_less, claim_learns_less, claim_modules
from learnforget.analysis.curve_claims import claim_beats_regularised, claim_one_curve
from learnforget.analysis.lr_claims import claim_learning_rates
from learnforget.analysis.verdicts import FAILS, HOLDS, UNTESTABLE

REPLICATES = 40
WRONG = 0.05  # at most this share of definite verdicts at the null
RIGHT = 0.90  # at least this share of right verdicts at a clear effect


def _check(name: str, null: list[str], effect: list[str] | None, right: str = HOLDS,
           wrong: tuple[str, ...] = (HOLDS, FAILS)) -> None:
    """Assert the null's and the effect's rates, and print them."""
    rates = {state: rate(null, state) for state in wrong}
    print(f"\n{name}: null " + ", ".join(f"{k} {v:.0%}" for k, v in rates.items())
          + (f"; effect {right} {rate(effect, right):.0%}" if effect is not None else ""))
    for state, share in rates.items():
        assert share <= WRONG, (name, state, null)
    if effect is not None:
        assert rate(effect, right) >= RIGHT, (name, effect)


def _calibrate(out: Path, name: str, methods: list[dict], null_truth: dict, effect_truth: dict,
               judge, **study) -> None:
    """Simulate ``null_truth`` and ``effect_truth`` (``REPLICATES`` each) and check the rates."""
    null = Simulation(out / "null", methods, null_truth, **study).verdicts(judge, REPLICATES)
    effect = Simulation(out / "effect", methods, effect_truth, **study).verdicts(
        judge, REPLICATES, seed=1)
    _check(name, null, effect)


def _part(judge, name: str):
    return lambda s: part_verdict(judge(s), name)


# --- claim 1 ------------------------------------------------------------------------------------
ONE_LORA = [{"kind": "full", "lr": [1e-3]},
            {"kind": "lora", "r": [8], "targets": ["all"], "lr": [1e-3, 3e-3, 1e-2]}]


def _learns(full: float, lora: float, lora_lrs=(1e-3, 3e-3, 1e-2)) -> dict:
    """Full FT at one LR and LoRA r=8 at several LRs, all learning alike (a flat LR response,
    where picking the best of K on the same items would inflate LoRA's value)."""
    return {"full": {1e-3: [(full / 2, 0.05), (full, 0.1)]},
            "lora-r8-all": {lr: [(lora / 2, 0.02), (lora, 0.04)] for lr in lora_lrs}}


def test_claim_1_full_learns_at_least_as_much(tmp_path: Path) -> None:
    name = "full FT learns at least as much at every budget"
    judge = _part(claim_learns_less, name)
    _calibrate(tmp_path, "1 main (best of 3 LoRA LRs, flat)", ONE_LORA, _learns(0.1, 0.1),
               _learns(0.4, 0.1), judge)


def test_claim_1_with_seeds_counts_their_noise(tmp_path: Path) -> None:
    # the seeds' spread dominates the items' noise: a z interval on items alone would call
    # most replicates; Student's t on the seeds' degrees of freedom must not
    methods = [{"kind": "full", "lr": [1e-3]},
               {"kind": "lora", "r": [8], "targets": ["all"], "lr": [1e-2]}]
    truth = {"full": {1e-3: [(0.05, 0.05), (0.1, 0.1)]},
             "lora-r8-all": {1e-2: [(0.05, 0.02), (0.1, 0.04)]}}
    judge = _part(claim_learns_less, "full FT learns at least as much at every budget")
    sim = Simulation(tmp_path, methods, truth, seeds=3)
    null = sim.verdicts(judge, REPLICATES, item_sd=0.05, seed_sd=0.05)
    _check("1 main, 3 seeds, seed noise dominant", null, None)


def test_claim_1_gap_narrows_with_rank(tmp_path: Path) -> None:
    methods = [{"kind": "full", "lr": [1e-3]},
               {"kind": "lora", "r": [8, 64], "targets": ["all"], "lr": [1e-2]}]

    def truth(r8: float, r64: float) -> dict:
        return {"full": {1e-3: [(0.15, 0.05), (0.3, 0.1)]},
                "lora-r8-all": {1e-2: [(r8 / 2, 0.02), (r8, 0.04)]},
                "lora-r64-all": {1e-2: [(r64 / 2, 0.02), (r64, 0.04)]}}

    judge = _part(claim_learns_less, "gap narrows as rank grows")
    _calibrate(tmp_path, "1 gap narrows", methods, truth(0.1, 0.1), truth(0.1, 0.25), judge)


# --- claim 2 ------------------------------------------------------------------------------------
PAIR = [{"kind": "full", "lr": [1e-3]},
        {"kind": "lora", "r": [8], "targets": ["all"], "lr": [1e-2]}]


def _forgets(full: tuple[float, float], lora: tuple[float, float]) -> dict:
    return {"full": {1e-3: [(0.1, full[0]), (0.2, full[1])]},
            "lora-r8-all": {1e-2: [(0.05, lora[0]), (0.1, lora[1])]}}


def test_claim_2_lora_forgets_less(tmp_path: Path) -> None:
    judge = _part(claim_forgets_less, "LoRA forgets less at every budget")
    _calibrate(tmp_path, "2 main", PAIR, _forgets((0.1, 0.2), (0.1, 0.2)),
               _forgets((0.2, 0.4), (0.02, 0.04)), judge)


def test_claim_2_both_grow(tmp_path: Path) -> None:
    judge = _part(claim_forgets_less, "both grow with training")
    _calibrate(tmp_path, "2 both grow", PAIR, _forgets((0.15, 0.15), (0.1, 0.1)),
               _forgets((0.2, 0.5), (0.15, 0.35)), judge)
    # forgetting that falls (0.30 → 0.20) does not grow: the old slope through the base's point
    # read it as growth
    falls = Simulation(tmp_path / "falls", PAIR, _forgets((0.3, 0.2), (0.1, 0.15))).verdicts(
        judge, 10, seed=2)
    assert HOLDS not in falls and rate(falls, FAILS) >= 0.9, falls


def test_claim_2_full_grows_faster(tmp_path: Path) -> None:
    judge = _part(claim_forgets_less, "full FT's grows faster")
    _calibrate(tmp_path, "2 full faster", PAIR, _forgets((0.1, 0.2), (0.1, 0.2)),
               _forgets((0.15, 0.4), (0.02, 0.05)), judge)


# --- claims 3 and 4 -----------------------------------------------------------------------------
CURVE = [{"kind": "full", "lr": [1e-4, 1e-3]},
         {"kind": "lora", "r": [8], "targets": ["all"], "lr": [1e-2]}]


def _on_curve(lift: float) -> dict:
    """Full FT's frontier through (0.1, 0.1), (0.2, 0.2), (0.3, 0.3), (0.4, 0.4); LoRA at
    (0.15, 0.15 + lift) and (0.25, 0.25 + lift)."""
    return {"full": {1e-4: [(0.1, 0.1), (0.2, 0.2)], 1e-3: [(0.3, 0.3), (0.4, 0.4)]},
            "lora-r8-all": {1e-2: [(0.15, 0.15 + lift), (0.25, 0.25 + lift)]}}


def test_claim_3_near_one_curve(tmp_path: Path) -> None:
    judge = _part(claim_one_curve, "near full FT's frontier")
    on = Simulation(tmp_path / "on", CURVE, _on_curve(0.0))
    null = on.verdicts(judge, REPLICATES)
    _check("3 on the curve, realistic noise", null, None, wrong=(FAILS,))
    quiet = on.verdicts(judge, REPLICATES, seed=1, item_sd=0.01)
    assert rate(quiet, HOLDS) >= RIGHT, quiet
    far = Simulation(tmp_path / "far", CURVE, _on_curve(0.15)).verdicts(judge, REPLICATES, seed=2)
    assert rate(far, FAILS) >= RIGHT, far
    print(f"3: on the curve with little noise holds {rate(quiet, HOLDS):.0%}; 0.15 above fails "
          f"{rate(far, FAILS):.0%}")


def test_claim_4_beats_regularised(tmp_path: Path) -> None:
    methods = [{"kind": "full", "lr": [1e-4, 1e-3], "weight_decay": [0.1]},
               {"kind": "lora", "r": [8], "targets": ["all"], "lr": [1e-2]}]

    def truth(drop: float) -> dict:
        frontier = {1e-4: [(0.1, 0.1), (0.2, 0.2)], 1e-3: [(0.3, 0.3), (0.4, 0.4)]}
        return {"full-wd0.1": frontier,
                "lora-r8-all": {1e-2: [(0.15, 0.15 - drop), (0.25, 0.25 - drop)]}}

    judge = _part(claim_beats_regularised, "forgets less at equal learning")
    _calibrate(tmp_path, "4 main", methods, truth(0.0), truth(0.2), judge)


# --- claim 5 ------------------------------------------------------------------------------------
SWEEPS = [{"kind": "full", "lr": [1e-4, 1e-3, 1e-2]},
          {"kind": "lora", "r": [8], "targets": ["all"], "lr": [1e-3, 1e-2, 1e-1]}]


def _lr_truth(full: dict[float, float], lora: dict[float, float]) -> dict:
    return {"full": {lr: [(v / 2, 0.05), (v, 0.1)] for lr, v in full.items()},
            "lora-r8-all": {lr: [(v / 2, 0.02), (v, 0.04)] for lr, v in lora.items()}}


def test_claim_5_best_lr_ratio(tmp_path: Path) -> None:
    judge = _part(claim_learning_rates, "LoRA's best LR relative to full FT's")
    full = {1e-4: 0.1, 1e-3: 0.4, 1e-2: 0.1}
    tied = _lr_truth(full, {1e-3: 0.4, 1e-2: 0.4, 1e-1: 0.1})  # 1× or 10×: within noise
    clear = _lr_truth(full, {1e-3: 0.1, 1e-2: 0.4, 1e-1: 0.1})
    _calibrate(tmp_path, "5 best-LR ratio (IFT, LoRA's two LRs tied)", SWEEPS, tied, clear,
               judge, regime="ift")


def test_claim_5_lr_sensitivity(tmp_path: Path) -> None:
    judge = _part(claim_learning_rates, "LoRA more LR-sensitive")
    full = {1e-4: 0.3, 1e-3: 0.4, 1e-2: 0.3}
    same = _lr_truth(full, {1e-3: 0.3, 1e-2: 0.4, 1e-1: 0.3})
    sharper = _lr_truth(full, {1e-3: 0.1, 1e-2: 0.4, 1e-1: 0.1})
    _calibrate(tmp_path, "5 LR sensitivity (identical LR curves)", SWEEPS, same, sharper, judge,
               regime="ift")


@pytest.mark.parametrize("wide", ["full", "lora"])
def test_claim_5_sensitivity_does_not_depend_on_how_wide_each_sweep_is(tmp_path: Path,
                                                                         wide: str) -> None:
    # identical LR curves (a share lost growing as the square of the decades away), one method
    # swept ±1 decade and the other ±0.3: compared on the offsets both share, never on spans
    # of different width (which would say "does not hold" one way round, "holds" the other)
    def sweep(best: float, decades: float) -> dict[float, float]:
        return {best * 10 ** d: 0.1 * (1 - 0.5 * d * d) for d in (-decades, 0.0, decades)}

    spans = {"full": 1.0, "lora": 0.3} if wide == "full" else {"full": 0.3, "lora": 1.0}
    full, lora = sweep(1e-3, spans["full"]), sweep(1e-2, spans["lora"])
    methods = [{"kind": "full", "lr": sorted(full)},
               {"kind": "lora", "r": [8], "targets": ["all"], "lr": sorted(lora)}]
    sim = Simulation(tmp_path, methods, _lr_truth(full, lora), regime="ift")
    verdicts = sim.verdicts(_part(claim_learning_rates, "LoRA more LR-sensitive"), 5)
    assert verdicts == [UNTESTABLE] * 5
    claim = claim_learning_rates(ClaimData(sim.frame(np.random.default_rng(0))))
    assert "LRs at the same offsets (in decades) from the best LR" in claim.missing


# --- claim 6 ------------------------------------------------------------------------------------
def test_claim_6_all_above_mlp_above_attention(tmp_path: Path) -> None:
    methods = [{"kind": "full", "lr": [1e-3]},
               {"kind": "lora", "r": [8], "targets": ["attention", "mlp", "all"],
                "lr": [1e-3, 1e-2]}]

    def truth(learn: dict[str, float]) -> dict:
        out = {"full": {1e-3: [(0.2, 0.05), (0.4, 0.1)]}}
        for targets, value in learn.items():
            out[f"lora-r8-{targets}"] = {1e-3: [(value / 4, 0.02), (value / 2, 0.04)],
                                         1e-2: [(value / 2, 0.02), (value, 0.04)]}
        return out

    judge = _part(claim_modules, "all > MLP > attention")
    null = Simulation(tmp_path / "null", methods, truth(
        {"attention": 0.2, "mlp": 0.2, "all": 0.2})).verdicts(judge, REPLICATES)
    effect = Simulation(tmp_path / "effect", methods, truth(
        {"attention": 0.1, "mlp": 0.3, "all": 0.5})).verdicts(judge, REPLICATES, seed=1)
    _check("6 order", null, effect)


def test_claim_6_modules_matter_more_than_rank(tmp_path: Path) -> None:
    methods = [{"kind": "full", "lr": [1e-3]},
               {"kind": "lora", "r": [8, 64], "targets": ["attention", "all"], "lr": [1e-2]}]

    def truth(attention: float) -> dict:
        out = {"full": {1e-3: [(0.2, 0.05), (0.4, 0.1)]}}
        for r in (8, 64):
            out[f"lora-r{r}-all"] = {1e-2: [(0.1, 0.02), (0.2, 0.04)]}
            out[f"lora-r{r}-attention"] = {1e-2: [(attention / 2, 0.02), (attention, 0.04)]}
        return out

    judge = _part(claim_modules, "modules matter more than rank")
    _calibrate(tmp_path, "6 modules vs rank (all equal at the null)", methods, truth(0.2),
               truth(0.05), judge)


def test_claim_1_gap_larger_in_cpt_than_in_ift(tmp_path: Path) -> None:
    # two studies of one domain and base, independent: the share of full FT's learning that
    # LoRA misses, equal at the null (50% in both), larger in CPT at the effect (80% vs 20%)
    from learnforget.analysis.claims import judge_claims_across

    def study(regime: str, lora: float) -> Simulation:
        truth = {"full": {1e-3: [(0.2, 0.05), (0.4, 0.1)]},
                 "lora-r8-all": {1e-2: [(lora / 2, 0.02), (lora, 0.04)]}}
        return Simulation(tmp_path / f"{regime}-{lora}", PAIR, truth, regime=regime)

    def verdicts(cpt: Simulation, ift: Simulation, seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        return [judge_claims_across([cpt.frame(rng), ift.frame(rng)])[0].verdict
                for _ in range(REPLICATES)]

    null = verdicts(study("cpt", 0.2), study("ift", 0.2), 0)
    effect = verdicts(study("cpt", 0.08), study("ift", 0.32), 1)
    _check("1 larger gap in CPT than in IFT (two studies)", null, effect)
