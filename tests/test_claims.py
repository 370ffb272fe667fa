"""The claims checklist: each of the paper's nine claims judged on small hand-made studies
(``claim_studies``), where it must hold, where it must not, and where it cannot be tested."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from claim_studies import (
    FULL_LORA,
    PLAIN,
    REGULARISED,
    Values,
    frame_of,
    full_lora,
    verdict_of,
)

from learnforget.analysis.claims import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    UNTESTABLE,
    ClaimData,
    claim_delta_rank,
    judge_claims,
    judge_claims_across,
)
from learnforget.analysis.frame import Frame

torch.set_num_threads(1)


# --- 1 ----------------------------------------------------------------------------------------
def test_claim_1_holds_when_full_learns_more_at_every_budget_and_rank_closes_the_gap(
        plain_frame: Frame) -> None:
    claim = verdict_of(plain_frame, 1)
    assert claim.verdict == HOLDS
    assert "full FT 0.2 vs LoRA r=8 (all) 0.12 at 8.19k tokens" in claim.evidence
    assert "r=8 0.08 → r=64 0.04" in claim.evidence  # gaps 0.20 − 0.12 and 0.20 − 0.16
    assert "best LoRA kept 80% of full FT's final learning" in claim.evidence
    assert "a CPT and an IFT study of the same domain and base model (this one is code CPT)" \
        in claim.missing
    assert claim.scope == "LoRA = the paper's configuration: LoRA r=8 (all), LoRA r=64 (all)"


def test_claim_1_does_not_hold_when_lora_learns_more_at_one_budget(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.05), (0.20, 0.10)], r8=[(0.05, 0.01), (0.12, 0.02)],
        r64=[(0.11, 0.02), (0.16, 0.03)]))
    claim = verdict_of(frame, 1)
    assert claim.verdict == FAILS
    assert "LoRA r=64 (all) at 4.1k tokens learned more (0.11 vs full FT 0.1)" in claim.evidence


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
    # the old rule compared studies of other domains or bases "anyway" and said holds
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
    # Over the checkpoints alone (the old rule) LoRA's slope is larger; through the base point
    # full FT's is: it forgot fastest, in its first steps
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


def test_claim_2_does_not_hold_when_lora_forgets_as_much(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.05), (0.20, 0.15)], r8=[(0.05, 0.01), (0.12, 0.02)],
        r64=[(0.08, 0.02), (0.16, 0.15)]))
    claim = verdict_of(frame, 2)
    assert claim.verdict == FAILS
    assert "LoRA r=64 (all) at 8.19k tokens forgot as much or more" in claim.evidence


# --- 3 ----------------------------------------------------------------------------------------
def test_claim_3_holds_when_lora_sits_on_full_finetunings_frontier(tmp_path: Path) -> None:
    # full FT's frontier (both LRs): (0, 0) (0.1, 0.05) (0.2, 0.1), forget = learn / 2; LoRA
    # reaches 0.16 learned, where the frontier forgets 0.08: tolerance 0.008; LoRA's best-LR
    # points lie 0.001–0.004 above it
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.05), (0.20, 0.10)], r8=[(0.05, 0.026), (0.12, 0.064)],
        r64=[(0.08, 0.041), (0.16, 0.081)]))
    claim = verdict_of(frame, 3)
    assert claim.verdict == HOLDS, claim
    assert "4 of 4 are; largest gap +0.004" in claim.evidence
    assert "spans up to the most learning a LoRA checkpoint reaches (0.08 at 0.16 learned); " \
        "no noise estimate: every checkpoint has one seed), i.e. ±0.008" in claim.evidence
    assert "two or more seeds" in claim.settle


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
    assert "(0.08 at 0.16 learned); no noise estimate" in claim.evidence
    assert "i.e. ±0.008" in claim.evidence
    assert "0 of 4 are; largest gap +0.03" in claim.evidence


def test_claim_3_does_not_hold_when_lora_is_far_above_the_frontier(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.05), (0.20, 0.10)], r8=[(0.05, 0.026), (0.12, 0.10)],
        r64=[(0.08, 0.041), (0.16, 0.081)]))
    claim = verdict_of(frame, 3)
    assert claim.verdict == FAILS
    assert "3 of 4 are; largest gap +0.04 (LoRA r=8 (all) at 8.19k tokens" in claim.evidence


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
    assert claim.verdict == HOLDS
    # the wd frontier at learn 0.05 is 0.02, at 0.12 it is 0.04 + 0.02·0.04 = 0.048
    assert "2 of 2 LoRA checkpoints forget less at equal learning (gaps -0.018 … -0.01)" \
        in claim.evidence
    above = {**below, "lora-r8-all": {1e-2: [(0.05, 0.01), (0.12, 0.07)]}}
    claim = verdict_of(frame_of(tmp_path / "b", REGULARISED, above), 4)
    assert claim.verdict == FAILS and "1 of 2" in claim.evidence
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
    assert "LoRA r=8 (all) 0.003 = 3× full FT's 0.001" in claim.evidence
    # full: 1e-4 lost 25% over 1 decade, 1e-2 diverged: 100% over 1 decade → 0.625
    # LoRA: (0.875/1 + 0.5/0.477 + 0.375/0.523) / 3 = 0.88
    assert "full FT 0.62; LoRA r=8 (all) 0.88" in claim.evidence


def test_claim_5_judges_the_lr_ratio_per_regime(tmp_path: Path) -> None:
    equal = ({1e-4: 0.15, 1e-3: 0.2, 1e-2: 0.1}, {3e-4: 0.02, 1e-3: 0.16, 3e-3: 0.15, 1e-2: 0.10})
    claim = verdict_of(_lr_study(tmp_path / "a", *equal, regime="ift"), 5)
    assert claim.verdict == FAILS and "= 1× full FT's" in claim.evidence
    assert "IFT: ≥ 2× full FT's" in claim.evidence
    # in CPT the paper reports about the same best LRs: equal ones hold (the old rule failed)
    claim = verdict_of(_lr_study(tmp_path / "b", *equal, regime="cpt"), 5)
    assert claim.verdict == HOLDS, claim
    assert "CPT: within 4× of full FT's" in claim.evidence
    # full FT best at 1e-4 (inside: 1e-3 learns less), LoRA at 3e-3: 30× is not "about the same"
    far = ({1e-4: 0.2, 1e-3: 0.15, 1e-2: 0.1}, {3e-4: 0.02, 1e-3: 0.08, 3e-3: 0.16, 1e-2: 0.10})
    claim = verdict_of(_lr_study(tmp_path / "c", *far, regime="cpt"), 5)
    assert claim.verdict == FAILS and "= 30× full FT's" in claim.evidence


def test_claim_5_is_not_testable_when_the_best_lrs_are_at_their_sweeps_edges(
        tmp_path: Path) -> None:
    # both best LRs at the top of their sweeps: either could be higher, the ratio is unknown
    frame = _lr_study(tmp_path, {1e-4: 0.1, 1e-3: 0.15, 1e-2: 0.2},
                      {3e-4: 0.02, 1e-3: 0.08, 3e-3: 0.10, 1e-2: 0.16})
    claim = verdict_of(frame, 5)
    assert claim.verdict == INCONCLUSIVE
    assert "widen the sweeps of full FT, LoRA r=8 (all)" in claim.settle


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


# --- 7 ----------------------------------------------------------------------------------------
def _spectrum_rows(overall: float, attention: float, mlp: float) -> dict[str, float]:
    """Summaries of a checkpoint's ΔW; random baselines 500 (attention) and 800 (MLP), so that
    10·r = 80 is judged for r = 8 and r = 64 is not."""
    return {"spectrum/rank90": overall, "spectrum/rank90_attention": attention,
            "spectrum/rank90_mlp": mlp, "spectrum/random_rank90": 500.0,
            "spectrum/rank90_ratio_attention": attention / 500,
            "spectrum/rank90_ratio_mlp": mlp / 800}


def _rank_study(out: Path, full_steps: list[dict[str, float]]) -> Frame:
    extra = {"full": full_steps,
             "lora-r8-all": [_spectrum_rows(3, 3, 3)] * 2,
             "lora-r64-all": [_spectrum_rows(9, 9, 10)] * 2}
    return frame_of(out, FULL_LORA, PLAIN, extra=extra)


def test_claim_7_holds_for_a_high_rank_rising_full_finetuning_update(tmp_path: Path) -> None:
    frame = _rank_study(tmp_path, [_spectrum_rows(180, 150, 250), _spectrum_rows(240, 180, 400)])
    claim = verdict_of(frame, 7)
    assert claim.verdict == HOLDS, claim
    # 240 / 8 = 30×; r=64 is not judged: 10·64 = 640 > 500, the random matrix's rank90
    assert "30× r=8" in claim.evidence and "r=64 not judged" in claim.evidence
    assert "the paper: 10–100× the LoRA ranks" in claim.evidence
    assert "full FT rank90 180 → 240" in claim.evidence
    assert "MLP 0.5 vs attention 0.36" in claim.evidence
    assert "LoRA r=8 (all) 3, LoRA r=64 (all) 9" in claim.evidence


@pytest.mark.parametrize(("steps", "failing"), [
    # 60 < 10 × 8: the old rule (≥ 2 × r) passed it
    ([_spectrum_rows(50, 40, 60), _spectrum_rows(60, 50, 70)], "far more than the LoRA rank"),
    ([_spectrum_rows(300, 250, 350), _spectrum_rows(240, 180, 300)], "high early and rising"),
    ([_spectrum_rows(60, 50, 70), _spectrum_rows(240, 180, 300)], "high early and rising"),
    # raw MLP 300 > attention 200, but per random rank 300/800 < 200/500: the shapes explain it
    ([_spectrum_rows(180, 150, 250), _spectrum_rows(240, 200, 300)], "MLP above attention"),
])
def test_claim_7_does_not_hold_when_a_part_fails(tmp_path: Path, steps: list,
                                                 failing: str) -> None:
    claim = verdict_of(_rank_study(tmp_path, steps), 7)
    assert claim.verdict == FAILS and f"{failing} — does not hold" in claim.evidence


def test_claim_7_needs_a_rise_larger_than_noise(tmp_path: Path) -> None:
    # 240 → 250 passed the old rule; a rise within 10% (no per-matrix spectra) is inconclusive
    claim = verdict_of(_rank_study(tmp_path / "a", [_spectrum_rows(240, 180, 400),
                                                    _spectrum_rows(250, 180, 400)]), 7)
    assert claim.verdict == INCONCLUSIVE
    assert "high early and rising — inconclusive" in claim.evidence
    # with per-matrix spectra the rise is judged matrix by matrix: +10 each, resolved
    frame = _rank_study(tmp_path / "b", [_spectrum_rows(240, 180, 400),
                                         _spectrum_rows(250, 180, 400)])
    runs = frame.runs[(frame.runs["label"] == "full") & (frame.runs["lr"] == 1e-3)]
    run_id = runs["run_id"].item()

    def matrices(ranks: list[int]) -> list[dict]:
        return [{"name": f"m{i}", "module": "q_proj", "rank90": r, "random_rank90": 500}
                for i, r in enumerate(ranks)]

    rising = [{"run_id": run_id, "step": 4, "data": matrices([230, 240, 250])},
              {"run_id": run_id, "step": 8, "data": matrices([240, 251, 259])}]
    claim = claim_delta_rank(ClaimData(frame), rising)
    assert "high early and rising — holds" in claim.evidence, claim
    noisy = [rising[0], {"run_id": run_id, "step": 8, "data": matrices([290, 220, 240])}]
    claim = claim_delta_rank(ClaimData(frame), noisy)
    assert "high early and rising — inconclusive" in claim.evidence, claim


def test_claim_7_is_not_testable_without_spectra_and_counts_matrices_with_them(
        tmp_path: Path, plain_frame: Frame) -> None:
    claim = verdict_of(plain_frame, 7)
    assert claim.verdict == UNTESTABLE and "evaluation.spectrum" in claim.missing
    frame = _rank_study(tmp_path / "b", [_spectrum_rows(180, 150, 250),
                                         _spectrum_rows(240, 180, 400)])
    full_runs = frame.runs[frame.runs["label"] == "full"]
    best = full_runs[full_runs["lr"] == 1e-3]["run_id"].item()
    spectra = [{"run_id": best, "step": 8, "data": [{"rank90": r} for r in (10, 80, 300)]},
               {"run_id": best, "step": 4, "data": [{"rank90": 1}]}]
    claim = claim_delta_rank(ClaimData(frame), spectra)
    assert "2 of 3 full-FT matrices need ≥ 80" in claim.evidence


def test_claim_7_is_not_testable_when_no_rank_can_be_outranked_tenfold(tmp_path: Path) -> None:
    rows = [{**_spectrum_rows(30, 25, 60), "spectrum/random_rank90": 65.0}] * 2
    claim = verdict_of(_rank_study(tmp_path, rows), 7)
    assert claim.verdict == UNTESTABLE
    assert "r ≤ 6 would test it" in claim.missing


# --- 8 ----------------------------------------------------------------------------------------
def _diversity(distinct: float, similarity: float, stderr: float | None) -> dict[str, float]:
    rows = {"diversity/mean_distinct": distinct,
            "diversity/mean_pairwise_similarity": similarity,
            "diversity/prompts": 4.0, "diversity/samples": 32.0}
    if stderr is not None:
        rows["diversity/mean_distinct_stderr"] = stderr
    return rows


def _diversity_study(out: Path, full: tuple, lora: tuple, stderr: float | None = None) -> Frame:
    extra = {"full": [{}, _diversity(*full, stderr)],
             "lora-r8-all": [{}, _diversity(*lora, stderr)],
             "lora-r64-all": [{}, _diversity(*lora, stderr)]}
    return frame_of(out, FULL_LORA, PLAIN, extra=extra,
        base_extra={"diversity/mean_pairwise_similarity": 0.25})


def test_claim_8_compares_the_diversity_of_generations(tmp_path: Path) -> None:
    claim = verdict_of(_diversity_study(tmp_path / "a", (5.0, 0.6), (7.5, 0.3)), 8)
    assert claim.verdict == HOLDS
    assert "per prompt (8 samples each): full FT 5 distinct (similarity 0.6)" in claim.evidence
    assert "base model similarity 0.25" in claim.evidence
    claim = verdict_of(_diversity_study(tmp_path / "b", (7.5, 0.3), (5.0, 0.6)), 8)
    assert claim.verdict == FAILS
    # the verdict is the number of distinct samples; similarity is reported, not judged (the
    # old rule failed this study on similarity)
    claim = verdict_of(_diversity_study(tmp_path / "c", (5.0, 0.3), (7.5, 0.35)), 8)
    assert claim.verdict == HOLDS
    assert "similarity reported, not judged" in claim.evidence
    # with standard errors over prompts, a difference of 0.5 ± 1.96·0.5 is within noise
    noisy = _diversity_study(tmp_path / "d", (5.0, 0.3), (5.5, 0.3),
                             stderr=0.35)
    claim = verdict_of(noisy, 8)
    assert claim.verdict == INCONCLUSIVE and "more prompts" in claim.settle


def test_claim_8_is_not_testable_when_every_method_keeps_all_samples_distinct(
        tmp_path: Path) -> None:
    # 8 of 8 distinct for every method: the count is at its ceiling (the old rule: LoRA − full
    # FT = 0 ± 0, "does not hold")
    claim = verdict_of(_diversity_study(tmp_path, (8.0, 0.42), (8.0, 0.21)), 8)
    assert claim.verdict == UNTESTABLE, claim
    assert "every method kept all 8 samples of every prompt distinct" in claim.missing
    assert "full FT 8 (similarity 0.42)" in claim.missing


def test_claim_8_is_not_testable_without_diversity_rows(plain_frame: Frame) -> None:
    claim = verdict_of(plain_frame, 8)
    assert claim.verdict == UNTESTABLE and "evaluation.diversity" in claim.missing


# --- 9 ----------------------------------------------------------------------------------------
def _intruder_study(out: Path, full: float, r8: float, r64: float) -> Frame:
    extra = {label: [{"spectrum/intruders": v}] * 2
             for label, v in (("full", full), ("lora-r8-all", r8), ("lora-r64-all", r64))}
    return frame_of(out, FULL_LORA, PLAIN, extra=extra)


@pytest.mark.parametrize(("full", "r8", "verdict"), [
    (0.2, 2.0, HOLDS),
    (1.5, 2.0, FAILS),  # full FT creates more than half as many
    (0.0, 0.5, FAILS),  # low-rank LoRA creates fewer than one per matrix
])
def test_claim_9_intruders(tmp_path: Path, full: float, r8: float, verdict: str) -> None:
    claim = verdict_of(_intruder_study(tmp_path, full, r8, 1.0), 9)
    assert claim.verdict == verdict
    assert f"full FT {full:.3g}; LoRA r=8 (all) {r8:.3g}; LoRA r=64 (all) 1" in claim.evidence


def test_claim_9_is_not_testable_without_intruder_counts(tmp_path: Path) -> None:
    frame = _rank_study(tmp_path, [_spectrum_rows(18, 15, 25)] * 2)
    claim = verdict_of(frame, 9)
    assert claim.verdict == UNTESTABLE and "intruder counts" in claim.missing
