"""The claims checklist: the paper's claims 1–6 (learning, forgetting, the learn–forget
frontier, learning rates, target modules) judged on small hand-made studies
(``claim_studies``), where each must hold, where it must not, where noise leaves it inconclusive
and where it cannot be tested. Claims 7–9 are in ``test_weight_claims``."""

from __future__ import annotations

from pathlib import Path

import torch
from claim_studies import (
    FULL_LORA,
    REGULARISED,
    Values,
    frame_of,
    full_lora,
    verdict_of,
)

from learnforget.analysis.claims import judge_claims, judge_claims_across
from learnforget.analysis.frame import Frame
from learnforget.analysis.verdicts import FAILS, HOLDS, INCONCLUSIVE, UNTESTABLE

torch.set_num_threads(1)


# --- 1 ----------------------------------------------------------------------------------------
def test_claim_1_holds_when_full_learns_more_at_every_budget_and_rank_closes_the_gap(
        plain_frame: Frame) -> None:
    claim = verdict_of(plain_frame, 1)
    assert claim.verdict == HOLDS, claim
    # every difference is paired with its 95% interval (bits/byte errors of 0.001 per value)
    assert "LoRA r=8 (all) at 8.19k tokens: full FT − LoRA +0.08 ± 0.0029" in claim.evidence
    assert "full FT learns at least as much at every budget — holds" in claim.evidence
    assert "r=8 0.08 → r=64 0.04" in claim.evidence  # gaps 0.20 − 0.12 and 0.20 − 0.16
    assert "final learning r=64 − r=8 +0.04 ± 0.0026" in claim.evidence
    assert "best LoRA kept 80% of full FT's final learning" in claim.evidence
    assert "a CPT and an IFT study of the same domain and base model (this one is code CPT)" \
        in claim.missing
    assert claim.scope == "LoRA = the paper's configuration: LoRA r=8 (all), LoRA r=64 (all)"


def test_claim_1_does_not_hold_when_lora_learns_more_at_one_budget(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.05), (0.20, 0.10)], r8=[(0.05, 0.01), (0.12, 0.02)],
        r64=[(0.11, 0.02), (0.16, 0.03)]))
    claim = verdict_of(frame, 1)
    assert claim.verdict == FAILS, claim
    # LoRA r=64 learned 0.01 more than full FT at 4 steps, beyond noise (± 0.0028)
    assert "LoRA r=64 (all) at 4.1k tokens: full FT − LoRA -0.01 ± 0.0028 (against)" \
        in claim.evidence
    assert "full FT learns at least as much at every budget — does not hold" in claim.evidence


def test_claim_1_does_not_hold_when_a_higher_rank_widens_the_gap(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.05), (0.20, 0.10)], r8=[(0.05, 0.01), (0.16, 0.02)],
        r64=[(0.08, 0.02), (0.12, 0.03)]))
    claim = verdict_of(frame, 1)
    assert claim.verdict == FAILS
    assert "gap narrows as rank grows — does not hold" in claim.evidence
    assert "full FT learns at least as much at every budget — holds" in claim.evidence


def test_claim_1_is_not_testable_without_lora(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, [{"kind": "full", "lr": [1e-3]}],
                     {"full": {1e-3: [(0.1, 0.05), (0.2, 0.1)]}})
    claims = judge_claims(frame)
    assert claims[0].verdict == UNTESTABLE and "measured LoRA run" in claims[0].missing
    # with only full finetuning no claim can be tested
    assert {c.verdict for c in claims} == {UNTESTABLE}


def _gap_study(out: Path, domain: str, regime: str, lora_share: float) -> Frame:
    methods = [{"kind": "full", "lr": [1e-3]}, {"kind": "lora", "r": [8], "lr": [1e-2]}]
    values = {"full": {1e-3: [(0.1, 0.05), (0.2, 0.1)]},
              "lora-r8-all": {1e-2: [(0.1 * lora_share, 0.01), (0.2 * lora_share, 0.02)]}}
    return frame_of(out, methods, values, domain=domain, regime=regime,
                    name=f"{domain}-{regime}")


def test_claim_1_across_studies_compares_the_gaps_of_cpt_and_ift(tmp_path: Path) -> None:
    cpt = _gap_study(tmp_path / "a", "code", "cpt", 0.6)  # LoRA misses 40%
    ift = _gap_study(tmp_path / "b", "code", "ift", 0.9)  # LoRA misses 10%
    (claim,) = judge_claims_across([cpt, ift])
    assert claim.verdict == HOLDS
    assert "code-cpt (CPT) gap 40% vs code-ift (IFT) 10%" in claim.evidence
    wide_ift = _gap_study(tmp_path / "c", "code", "ift", 0.5)
    (claim,) = judge_claims_across([cpt, ift, wide_ift])
    assert claim.verdict == FAILS
    (claim,) = judge_claims_across([cpt])
    assert claim.verdict == UNTESTABLE and "code-cpt (code CPT" in claim.missing


def test_claim_1_across_studies_needs_one_domain_and_one_base(tmp_path: Path) -> None:
    # studies of another domain or another base are never paired: no verdict from them
    cpt = _gap_study(tmp_path / "a", "code", "cpt", 0.6)  # LoRA misses 40%
    math_ift = _gap_study(tmp_path / "b", "math", "ift", 0.9)  # other domain, same base
    (claim,) = judge_claims_across([cpt, math_ift])
    assert claim.verdict == UNTESTABLE
    assert "same target domain and base model" in claim.missing
    other = _gap_study(tmp_path / "c", "code", "ift", 0.9)  # same domain, another base
    assert other.study is not None
    other.study = other.study.model_copy(update={
        "name": "code-ift-tiny",
        "base": other.study.base.model_copy(update={"model": "builtin:tiny"})})
    (claim,) = judge_claims_across([cpt, other])
    assert claim.verdict == UNTESTABLE and "code-ift-tiny" in claim.missing
    same = _gap_study(tmp_path / "d", "code", "ift", 0.9)
    (claim,) = judge_claims_across([cpt, math_ift, other, same])
    assert claim.verdict == HOLDS
    assert "code-ift-tiny" not in claim.evidence and "math-ift" not in claim.evidence


# --- 2 ----------------------------------------------------------------------------------------
def test_claim_2_holds_when_lora_forgets_less_and_full_forgets_faster(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.05), (0.20, 0.15)], r8=[(0.05, 0.01), (0.12, 0.02)],
        r64=[(0.08, 0.02), (0.16, 0.05)]))
    claim = verdict_of(frame, 2)
    assert claim.verdict == HOLDS, claim
    # slopes through (0, 0) and checkpoints at h = 4096 and 2h tokens: final / (2h) · 1e6 =
    # 0.15 / 8192 · 1e6 = 18.3, LoRA r=8 2.44, r=64 6.1
    assert "full FT +18.3; LoRA r=8 (all) +2.44; LoRA r=64 (all) +6.1" in claim.evidence
    assert "through the base model's point" in claim.evidence


def test_claim_2_counts_forgetting_in_the_first_steps_as_growth(tmp_path: Path) -> None:
    # full FT forgets 0.10 by the first checkpoint and 0.12 by the second; LoRA 0.01 → 0.08.
    # Over the checkpoints alone LoRA's slope would be larger; the slope through the base point
    # makes full FT's larger: it forgot fastest, in its first steps
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.10), (0.20, 0.12)], r8=[(0.05, 0.01), (0.12, 0.08)],
        r64=[(0.08, 0.02), (0.16, 0.05)]))
    claim = verdict_of(frame, 2)
    assert claim.verdict == HOLDS, claim
    assert "full FT's grows faster — holds" in claim.evidence


def test_claim_2_does_not_hold_when_lora_forgetting_overtakes(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.10), (0.20, 0.12)], r8=[(0.05, 0.01), (0.12, 0.13)],
        r64=[(0.08, 0.02), (0.16, 0.05)]))
    claim = verdict_of(frame, 2)
    assert claim.verdict == FAILS
    assert "full FT's grows faster — does not hold" in claim.evidence


def test_claim_2_is_inconclusive_when_lora_forgets_as_much_and_fails_when_it_forgets_more(
        tmp_path: Path) -> None:
    # LoRA r=64 forgets exactly as much as full FT at 8 steps: 0 ± noise is not "less", but
    # not "more" beyond noise either: inconclusive, not failed
    frame = frame_of(tmp_path / "a", FULL_LORA, full_lora(
        full=[(0.10, 0.05), (0.20, 0.15)], r8=[(0.05, 0.01), (0.12, 0.02)],
        r64=[(0.08, 0.02), (0.16, 0.15)]))
    claim = verdict_of(frame, 2)
    assert claim.verdict == INCONCLUSIVE, claim
    assert "LoRA forgets less at every budget — inconclusive" in claim.evidence
    assert "LoRA r=64 (all) at 8.19k tokens: full FT − LoRA +0 ± 0.0029 (within noise)" \
        in claim.evidence
    assert "LoRA forgets less at every budget: 1 comparison(s) within noise" in claim.settle
    # forgetting 0.05 more than full FT is beyond noise: the claim does not hold
    frame = frame_of(tmp_path / "b", FULL_LORA, full_lora(
        full=[(0.10, 0.05), (0.20, 0.15)], r8=[(0.05, 0.01), (0.12, 0.02)],
        r64=[(0.08, 0.02), (0.16, 0.20)]))
    claim = verdict_of(frame, 2)
    assert claim.verdict == FAILS, claim
    assert "LoRA forgets less at every budget — does not hold" in claim.evidence
    assert "LoRA r=64 (all) at 8.19k tokens: full FT − LoRA -0.05 ± 0.0029 (against)" \
        in claim.evidence


def test_claim_2_does_not_count_a_forgetting_that_falls_as_growth(tmp_path: Path) -> None:
    # LoRA r=8 forgets 0.05 at 4 steps and 0.02 at 8: above the base, but falling
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.10), (0.20, 0.15)], r8=[(0.05, 0.05), (0.12, 0.02)],
        r64=[(0.08, 0.02), (0.16, 0.05)]))
    claim = verdict_of(frame, 2)
    assert claim.verdict == FAILS, claim
    assert "both grow with training — does not hold" in claim.evidence
    assert "LoRA r=8 (all): first checkpoint +0.05 ± 0.0029, last − first -0.03" \
        in claim.evidence


# --- 3 ----------------------------------------------------------------------------------------
def frontier_study(r8: list, r64: list) -> Values:
    """Full FT's frontier (0, 0) (0.1, 0.05) (0.2, 0.1), forget = learn / 2, from its best LR,
    and LoRA's points. Full FT's other LR lies clearly behind the frontier: none of its points
    ties a frontier point in learning or in forgetting, where noise would make it join the
    frontier on some draws and not on others."""
    values = full_lora(full=[(0.10, 0.05), (0.20, 0.10)], r8=r8, r64=r64)
    values["full"][1e-4] = [(0.04, 0.06), (0.09, 0.11)]
    return values


def test_claim_3_holds_when_lora_sits_on_full_finetunings_frontier(tmp_path: Path) -> None:
    # LoRA reaches 0.16 learned, where the frontier forgets 0.08: band ±0.008; LoRA's best-LR
    # points lie 0.001–0.004 above it, each gap's 95% interval (± 0.003) inside the band
    frame = frame_of(tmp_path, FULL_LORA, frontier_study(
        r8=[(0.05, 0.026), (0.12, 0.064)], r64=[(0.08, 0.041), (0.16, 0.081)]))
    claim = verdict_of(frame, 3)
    assert claim.verdict == HOLDS, claim
    assert "spans up to the most learning a LoRA checkpoint reaches (0.08 at 0.16 learned), " \
        "i.e. ±0.008, beyond noise (both one-sided tests: equivalence)" in claim.evidence
    assert "LoRA r=8 (all) at 8.19k tokens +0.004 ± 0.0027" in claim.evidence
    assert "largest +0.004" in claim.evidence
    assert claim.comparisons == 8 and not claim.settle  # two one-sided tests per checkpoint


def test_claim_3_is_inconclusive_when_a_gaps_interval_straddles_the_band(
        tmp_path: Path) -> None:
    # the same study with errors of 0.004 per value: the gaps (0.001–0.004) lie inside the band
    # but their intervals do not, and none lies outside beyond noise
    frame = frame_of(tmp_path, FULL_LORA, frontier_study(
        r8=[(0.05, 0.026), (0.12, 0.064)], r64=[(0.08, 0.041), (0.16, 0.081)]), stderr=0.004)
    claim = verdict_of(frame, 3)
    assert claim.verdict == INCONCLUSIVE, claim
    assert "the gaps' intervals must fit inside the band" in claim.settle


def test_claim_3_band_ignores_forgetting_beyond_what_lora_learns(tmp_path: Path) -> None:
    # full FT's best LR ends at (0.4, 2.0): its frontier's forgetting range is 2.0, but LoRA
    # reaches only 0.16 learned, where the frontier forgets 0.08, so the band is ±0.008 (not
    # ±0.2) and LoRA's points, each 0.03 above the frontier, are not near it
    values = {
        "full": {1e-3: [(0.2, 0.1), (0.4, 2.0)], 1e-4: [(0.1, 0.05), (0.2, 0.1)]},
        "lora-r8-all": {1e-2: [(0.05, 0.055), (0.12, 0.09)], 1e-3: [(0.02, 0.01), (0.06, 0.09)]},
        "lora-r64-all": {1e-2: [(0.08, 0.07), (0.16, 0.11)], 1e-3: [(0.04, 0.01), (0.08, 0.1)]},
    }
    claim = verdict_of(frame_of(tmp_path, FULL_LORA, values), 3)
    assert claim.verdict == FAILS, claim
    assert "(0.08 at 0.16 learned), i.e. ±0.008" in claim.evidence
    assert "LoRA r=64 (all) at 8.19k tokens +0.0296 ± 0.0025" in claim.evidence
    assert "largest +0.03" in claim.evidence


def test_claim_3_does_not_hold_when_lora_is_far_above_the_frontier(tmp_path: Path) -> None:
    # one checkpoint lies 0.04 above the frontier, beyond the band (±0.008) and the noise
    frame = frame_of(tmp_path, FULL_LORA, frontier_study(
        r8=[(0.05, 0.026), (0.12, 0.10)], r64=[(0.08, 0.041), (0.16, 0.081)]))
    claim = verdict_of(frame, 3)
    assert claim.verdict == FAILS, claim
    assert "LoRA r=8 (all) at 8.19k tokens +0.04 ± 0.0027" in claim.evidence
    assert "largest +0.04" in claim.evidence


def test_claim_3_is_not_testable_when_lora_learns_beyond_full_finetuning(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.05), (0.20, 0.10)], r8=[(0.25, 0.026), (0.3, 0.1)],
        r64=[(0.4, 0.041), (0.5, 0.081)]))
    claim = verdict_of(frame, 3)
    assert claim.verdict == UNTESTABLE and "4 lie outside" in claim.missing


# --- 4 ----------------------------------------------------------------------------------------


def test_claim_4_compares_lora_with_regularised_full_finetuning(tmp_path: Path) -> None:
    full = {1e-3: [(0.10, 0.05), (0.20, 0.10)]}
    below = {"full": full, "full-wd0.1": {1e-3: [(0.10, 0.04), (0.20, 0.08)]},
             "lora-r8-all": {1e-2: [(0.05, 0.01), (0.12, 0.03)]}}
    claim = verdict_of(frame_of(tmp_path / "a", REGULARISED, below), 4)
    assert claim.verdict == HOLDS, claim
    # the wd frontier at learn 0.05 is 0.02, at 0.12 it is 0.04 + 0.02·0.04 = 0.048: gaps
    # -0.01 and -0.018, each below 0 beyond noise
    assert "2 of 2 LoRA checkpoints forget less at equal learning beyond noise (gaps 4.1k " \
        "tokens -0.01 ± 0.0028; 8.19k tokens -0.018 ± 0.003)" in claim.evidence
    above = {**below, "lora-r8-all": {1e-2: [(0.05, 0.01), (0.12, 0.07)]}}
    claim = verdict_of(frame_of(tmp_path / "b", REGULARISED, above), 4)
    assert claim.verdict == FAILS, claim
    assert "1 of 2 LoRA checkpoints" in claim.evidence
    assert "8.19k tokens +0.022 ± 0.003" in claim.evidence  # 0.07 − 0.048, above beyond noise
    plain = {"full": full, "lora-r8-all": below["lora-r8-all"]}
    claim = verdict_of(frame_of(tmp_path / "c", [REGULARISED[0] | {"weight_decay": [0.0]},
                                                 REGULARISED[1]], plain), 4)
    assert claim.verdict == UNTESTABLE and "weight decay or attention dropout" in claim.missing


# --- 5 ----------------------------------------------------------------------------------------
def _lr_study(out: Path, full: dict, lora: dict, regime: str = "ift") -> Frame:
    methods = [{"kind": "full", "lr": [1e-4, 1e-3, 1e-2]},
               {"kind": "lora", "r": [8], "lr": [3e-4, 1e-3, 3e-3, 1e-2]}]
    values = {"full": {lr: [(v / 2, 0.01), (v, 0.02)] for lr, v in full.items()},
              "lora-r8-all": {lr: [(v / 2, 0.01), (v, 0.02)] for lr, v in lora.items()}}
    return frame_of(out, methods, values, regime=regime)


def test_claim_5_holds_when_lora_needs_a_higher_lr_and_is_more_sensitive(tmp_path: Path) -> None:
    # full: 1e-2 diverged, so its best 1e-3 is inside the sweep; LoRA best 3e-3 = 3× full's
    frame = _lr_study(tmp_path, {1e-4: 0.15, 1e-3: 0.2},
                      {3e-4: 0.02, 1e-3: 0.08, 3e-3: 0.16, 1e-2: 0.10})
    claim = verdict_of(frame, 5)
    assert claim.verdict == HOLDS, claim
    # no other LR comes near either best LR, so each best LR is the only plausible one
    assert "LoRA r=8 (all) 0.003 = 3× full FT's 0.001 (plausible best LRs 0.003 vs 0.001: " \
        "ratio 3× … 3×)" in claim.evidence
    # offsets from each best LR: full FT −1 and +1 decades, LoRA −1, −0.5 and +0.5: only −1 is
    # shared. There full FT lost 25% of its best learning (0.15 of 0.2), LoRA 87.5% (0.02 of
    # 0.16)
    assert "LoRA r=8 (all) 0.88 vs full FT 0.25 per decade at -1 decades from each best LR " \
        "(difference +0.625 ± 0.018)" in claim.evidence


def test_claim_5_judges_the_lr_ratio_per_regime(tmp_path: Path) -> None:
    equal = ({1e-4: 0.15, 1e-3: 0.2, 1e-2: 0.1}, {3e-4: 0.02, 1e-3: 0.16, 3e-3: 0.15, 1e-2: 0.10})
    ratio = "LoRA's best LR relative to full FT's"
    claim = verdict_of(_lr_study(tmp_path / "a", *equal, regime="ift"), 5)
    assert claim.verdict == FAILS and claim.parts[ratio] == FAILS, claim
    assert "= 1× full FT's" in claim.evidence and "IFT: ≥ 2× full FT's" in claim.evidence
    # in CPT the paper reports about the same best LRs: equal ones hold.
    # The claim as a whole does not: at +1 decade LoRA lost less than full FT (0.38 vs 0.5)
    claim = verdict_of(_lr_study(tmp_path / "b", *equal, regime="cpt"), 5)
    assert claim.parts[ratio] == HOLDS, claim
    assert "CPT: within 4× of full FT's" in claim.evidence
    assert claim.parts["LoRA more LR-sensitive"] == FAILS
    # full FT best at 1e-4, the lowest LR it tried, so its best may lie lower still: the ratio
    # is at least 30×, which is not "about the same"
    far = ({1e-4: 0.2, 1e-3: 0.15, 1e-2: 0.1}, {3e-4: 0.02, 1e-3: 0.08, 3e-3: 0.16, 1e-2: 0.10})
    claim = verdict_of(_lr_study(tmp_path / "c", *far, regime="cpt"), 5)
    assert claim.verdict == FAILS and claim.parts[ratio] == FAILS, claim
    assert "= 30× full FT's" in claim.evidence and "ratio 30× … ∞" in claim.evidence


def test_claim_5_is_inconclusive_when_the_best_lrs_are_at_their_sweeps_edges(
        tmp_path: Path) -> None:
    # both best LRs at the top of their sweeps: either could be higher, the ratio is unknown
    frame = _lr_study(tmp_path, {1e-4: 0.1, 1e-3: 0.15, 1e-2: 0.2},
                      {3e-4: 0.02, 1e-3: 0.08, 3e-3: 0.10, 1e-2: 0.16})
    claim = verdict_of(frame, 5)
    assert claim.verdict == INCONCLUSIVE, claim
    assert claim.parts["LoRA's best LR relative to full FT's"] == INCONCLUSIVE
    assert "(plausible best LRs 0.01 vs 0.01: ratio 0× … ∞)" in claim.evidence
    assert "sweeps that extend past the best LR on both sides" in claim.settle


def test_claim_5_leaves_out_a_lora_trained_at_one_lr(tmp_path: Path) -> None:
    # an extra grid axis (LoRA on attention at one LR) must not make the ratio inconclusive
    methods = [{"kind": "full", "lr": [1e-4, 1e-3, 1e-2]},
               {"kind": "lora", "r": [8], "lr": [3e-4, 1e-3, 3e-3, 1e-2]},
               {"kind": "lora", "r": [8], "targets": ["attention"], "lr": [3e-3]}]
    values = {"full": {lr: [(v / 2, 0.01), (v, 0.02)] for lr, v in {1e-4: 0.15, 1e-3: 0.2}.items()},
              "lora-r8-all": {lr: [(v / 2, 0.01), (v, 0.02)]
                              for lr, v in {3e-4: 0.02, 1e-3: 0.08, 3e-3: 0.16, 1e-2: 0.1}.items()},
              "lora-r8-attention": {3e-3: [(0.05, 0.01), (0.1, 0.02)]}}
    claim = verdict_of(frame_of(tmp_path, methods, values, regime="ift"), 5)
    assert claim.verdict == HOLDS, claim
    assert "compared apart, not judged: LoRA r=8 (attention)" in claim.scope


# --- 6 ----------------------------------------------------------------------------------------
MODULES = [{"kind": "full", "lr": [1e-3]},
           {"kind": "lora", "r": [8, 64], "targets": ["attention", "mlp", "all"], "lr": [1e-2]}]


def _module_values(learn: dict[tuple[str, int], float]) -> Values:
    values: Values = {"full": {1e-3: [(0.1, 0.05), (0.3, 0.1)]}}
    for (targets, r), v in learn.items():
        values[f"lora-r{r}-{targets}"] = {1e-2: [(v / 2, 0.01), (v, 0.02)]}
    return values


def test_claim_6_orders_target_modules_and_compares_with_rank(tmp_path: Path) -> None:
    ordered = {("attention", 8): 0.10, ("mlp", 8): 0.15, ("all", 8): 0.20,
               ("attention", 64): 0.11, ("mlp", 64): 0.17, ("all", 64): 0.22}
    claim = verdict_of(frame_of(tmp_path / "a", MODULES, _module_values(ordered)), 6)
    assert claim.verdict == HOLDS, claim
    assert "r=8: all 0.2 vs mlp 0.15 vs attention 0.1" in claim.evidence
    # across targets: (0.1 + 0.11) / 2 = 0.105; across ranks: (0.01 + 0.02 + 0.02) / 3 = 0.0167
    assert "at one rank 0.105 vs across ranks for one target set 0.0167" in claim.evidence
    rank_matters = {key: v + (0.3 if key[1] == 64 else 0) for key, v in ordered.items()}
    claim = verdict_of(frame_of(tmp_path / "b", MODULES, _module_values(rank_matters)), 6)
    assert claim.verdict == FAILS and "modules matter more than rank — does not hold" \
        in claim.evidence
    swapped = {**ordered, ("attention", 8): 0.18}
    claim = verdict_of(frame_of(tmp_path / "c", MODULES, _module_values(swapped)), 6)
    assert claim.verdict == FAILS and "r=8: all 0.2 vs mlp 0.15 vs attention 0.18" \
        in claim.evidence


def test_claim_6_is_not_testable_with_one_target_set(plain_frame: Frame) -> None:
    claim = verdict_of(plain_frame, 6)
    assert claim.verdict == UNTESTABLE and "two or more target-module sets" in claim.missing
