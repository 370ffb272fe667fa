"""The claims checklist: each of the paper's nine claims judged on small hand-made studies, where
it must hold, where it must not, and where it cannot be tested.

Stores are written with the real ``Store`` and real run configs (``plan.expand`` of a real
``Study``); every checkpoint's learning and forgetting are given directly as the change of the
study's first learning task (``<task>/bpb`` = 3 − learn) and of ``source_bpb`` (2 + forget), so
the expected verdicts follow from the numbers in each test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from learnforget.analysis.claims import (
    CLAIMS,
    FAILS,
    HOLDS,
    UNTESTABLE,
    ClaimData,
    claim_delta_rank,
    judge_claims,
    judge_claims_across,
)
from learnforget.plan import expand
from learnforget.report.frame import Frame, load_frame
from learnforget.store import Measurement, Store
from learnforget.study import parse_study

torch.set_num_threads(1)

STEPS = (4, 8)
TOKENS_PER_STEP = 1024
Values = dict[str, dict[float, list[tuple[float, float]]]]
Extra = dict[str, list[dict[str, float]]]


def write_study(out: Path, methods: list[dict], values: Values, extra: Extra | None = None,
                domain: str = "code", regime: str = "cpt", name: str = "claims",
                base_extra: dict[str, float] | None = None,
                artifacts: dict[str, list[dict]] | None = None) -> Path:
    """OUT with study.json and a store holding the base model and every run of ``methods``.

    ``values[label][lr]`` lists (learn, forget) at steps 4 and 8; a run whose (label, lr) is
    missing is stored as diverged without a checkpoint. ``extra[label]`` lists, per step, more
    ``task/metric`` values for every run of the label; ``artifacts[label]`` per step artifacts
    (``{kind: payload}``)."""
    learn_task = f"{domain}_bpb"
    study = parse_study({
        "name": name, "base": "builtin:micro", "target": {"domain": domain, "regime": regime},
        "methods": methods, "budgets": {"steps": list(STEPS)},
        "evaluation": {"learning": [learn_task], "forgetting": ["source_bpb"]}})
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(study.model_dump_json())
    store = Store(out / "results.sqlite")
    base = [Measurement(learn_task, "bpb", 3.0), Measurement("source_bpb", "bpb", 2.0),
            *(Measurement(*key.split("/"), v) for key, v in (base_extra or {}).items())]
    store.ensure_run("base-x", study.name, "base", "base", {"base": {}})
    store.record_checkpoint("base-x", 0, 0, None, [(0, 0, m) for m in base])
    store.set_status("base-x", "finished")
    for run in expand(study):
        store.ensure_run(run.run_id, study.name, run.method.kind, run.label,
                         run.model_dump(mode="json"))
        points = values.get(run.label, {}).get(run.method.lr)
        if points is None:
            store.set_status(run.run_id, "diverged")
            continue
        for i, (step, (learn, forget)) in enumerate(zip(STEPS, points, strict=False)):
            rows = [Measurement(learn_task, "bpb", 3.0 - learn),
                    Measurement(learn_task, "bpb_delta", -learn),
                    Measurement("source_bpb", "bpb", 2.0 + forget),
                    Measurement("source_bpb", "bpb_delta", forget)]
            more = (extra or {}).get(run.label, [])
            if i < len(more):
                rows += [Measurement(*key.split("/"), v) for key, v in more[i].items()]
            stored = (artifacts or {}).get(run.label, [])
            tokens = step * TOKENS_PER_STEP
            store.record_checkpoint(run.run_id, step, tokens, None,
                                    [(step, tokens, m) for m in rows],
                                    stored[i] if i < len(stored) else None)
        store.set_status(run.run_id, "finished")
    store.close()
    return out


def frame_of(tmp_path: Path, methods: list[dict], values: Values, **kwargs) -> Frame:
    """``write_study`` then ``load_frame``."""
    return load_frame(write_study(tmp_path, methods, values, **kwargs))


def verdict_of(frame: Frame, number: int):
    """Claim ``number`` of ``judge_claims(frame)``."""
    verdicts = judge_claims(frame)
    assert [v.number for v in verdicts] == list(range(1, 10))
    return verdicts[number - 1]


FULL_LORA = [{"kind": "full", "lr": [1e-4, 1e-3]},
             {"kind": "lora", "r": [8, 64], "targets": ["all"], "lr": [1e-3, 1e-2]}]


def full_lora(full: list, r8: list, r64: list) -> Values:
    """Full FT best at 1e-3 and LoRA best at 1e-2 with the given points; the other LRs learn
    half as much (forgetting the same)."""
    def sweep(points: list, best: float, other: float) -> dict:
        return {best: points, other: [(learn / 2, forget) for learn, forget in points]}

    return {"full": sweep(full, 1e-3, 1e-4), "lora-r8-all": sweep(r8, 1e-2, 1e-3),
            "lora-r64-all": sweep(r64, 1e-2, 1e-3)}


# full FT learns and forgets more than LoRA r=8 and r=64 (all), r=64 closer to full FT
PLAIN = full_lora(full=[(0.10, 0.05), (0.20, 0.10)], r8=[(0.05, 0.01), (0.12, 0.02)],
                  r64=[(0.08, 0.02), (0.16, 0.03)])


@pytest.fixture(scope="module")
def plain_frame(tmp_path_factory) -> Frame:
    """``PLAIN`` without spectra or diversity."""
    return frame_of(tmp_path_factory.mktemp("plain"), FULL_LORA, PLAIN)


# --- 1 ----------------------------------------------------------------------------------------
def test_claim_1_holds_when_full_learns_more_at_every_budget_and_rank_closes_the_gap(
        plain_frame: Frame) -> None:
    claim = verdict_of(plain_frame, 1)
    assert claim.verdict == HOLDS
    assert "full FT 0.2 vs LoRA r=8 (all) 0.12 at 8.19k tokens" in claim.evidence
    assert "r=8 0.08 → r=64 0.04" in claim.evidence  # gaps 0.20 − 0.12 and 0.20 − 0.16
    assert "best LoRA kept 80% of full FT's final learning" in claim.evidence
    assert "a CPT and an IFT study (this one is code CPT)" in claim.missing


def test_claim_1_does_not_hold_when_lora_learns_more_at_one_budget(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.05), (0.20, 0.10)], r8=[(0.05, 0.01), (0.12, 0.02)],
        r64=[(0.11, 0.02), (0.16, 0.03)]))
    claim = verdict_of(frame, 1)
    assert claim.verdict == FAILS
    assert "LoRA r=64 (all) learned more at 4.1k tokens (0.11 vs full FT 0.1)" in claim.evidence


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
    ift = _gap_study(tmp_path / "b", "math", "ift", 0.9)  # LoRA misses 10%
    (claim,) = judge_claims_across([cpt, ift])
    assert claim.verdict == HOLDS
    assert "code-cpt (CPT) gap 40% vs math-ift (IFT) 10%" in claim.evidence
    assert "differ in target domain" in claim.evidence
    wide_ift = _gap_study(tmp_path / "c", "code", "ift", 0.5)  # same domain: compared alone
    (claim,) = judge_claims_across([cpt, ift, wide_ift])
    assert claim.verdict == FAILS
    assert "code-ift" in claim.evidence and "math-ift" not in claim.evidence
    (claim,) = judge_claims_across([cpt])
    assert claim.verdict == UNTESTABLE and "code-cpt (CPT)" in claim.missing


def test_claim_1_across_studies_pairs_studies_of_one_base_model(tmp_path: Path) -> None:
    cpt = _gap_study(tmp_path / "a", "code", "cpt", 0.6)  # LoRA misses 40%
    ift = _gap_study(tmp_path / "b", "math", "ift", 0.9)  # 10%, same base (builtin:micro)
    other = _gap_study(tmp_path / "c", "math", "ift", 0.3)  # 70%, on another base
    assert other.study is not None
    other.study = other.study.model_copy(update={
        "name": "math-ift-tiny",
        "base": other.study.base.model_copy(update={"model": "builtin:tiny"})})
    (claim,) = judge_claims_across([cpt, ift, other])
    assert claim.verdict == HOLDS, claim
    assert "math-ift-tiny" not in claim.evidence and "base model" not in claim.evidence
    (claim,) = judge_claims_across([cpt, other])  # no IFT study on cpt's base: compared anyway
    assert claim.verdict == FAILS
    assert "differ in target domain and base model" in claim.evidence


# --- 2 ----------------------------------------------------------------------------------------
def test_claim_2_holds_when_lora_forgets_less_and_full_forgets_faster(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.05), (0.20, 0.15)], r8=[(0.05, 0.01), (0.12, 0.02)],
        r64=[(0.08, 0.02), (0.16, 0.05)]))
    claim = verdict_of(frame, 2)
    assert claim.verdict == HOLDS, claim
    # slopes per million tokens: (0.15 − 0.05) / 4096 · 1e6 = 24.4, LoRA r=8 2.44, r=64 7.32
    assert "full FT +24.4; LoRA r=8 (all) +2.44; LoRA r=64 (all) +7.32" in claim.evidence


def test_claim_2_does_not_hold_when_lora_forgetting_grows_faster(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.10), (0.20, 0.12)], r8=[(0.05, 0.01), (0.12, 0.08)],
        r64=[(0.08, 0.02), (0.16, 0.05)]))
    claim = verdict_of(frame, 2)
    assert claim.verdict == FAILS
    assert "LoRA forgets less at every budget — holds" in claim.evidence
    assert "full FT's grows faster — does not hold" in claim.evidence


def test_claim_2_does_not_hold_when_lora_forgets_as_much(tmp_path: Path) -> None:
    frame = frame_of(tmp_path, FULL_LORA, full_lora(
        full=[(0.10, 0.05), (0.20, 0.15)], r8=[(0.05, 0.01), (0.12, 0.02)],
        r64=[(0.08, 0.02), (0.16, 0.15)]))
    claim = verdict_of(frame, 2)
    assert claim.verdict == FAILS
    assert "LoRA r=64 (all) forgot as much or more at 8.19k tokens" in claim.evidence


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
    assert "spans up to the most learning a LoRA checkpoint reaches (0.08 at 0.16 learned), " \
        "i.e. ±0.008" in claim.evidence


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
REGULARISED = [{"kind": "full", "lr": [1e-3], "weight_decay": [0.0, 0.1]},
               {"kind": "lora", "r": [8], "lr": [1e-2]}]


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
def _lr_study(out: Path, full: dict, lora: dict) -> Frame:
    methods = [{"kind": "full", "lr": [1e-4, 1e-3, 1e-2]},
               {"kind": "lora", "r": [8], "lr": [3e-4, 1e-3, 3e-3, 1e-2]}]
    values = {"full": {lr: [(v / 2, 0.01), (v, 0.02)] for lr, v in full.items()},
              "lora-r8-all": {lr: [(v / 2, 0.01), (v, 0.02)] for lr, v in lora.items()}}
    return frame_of(out, methods, values)


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


def test_claim_5_does_not_hold_when_the_best_lrs_are_equal(tmp_path: Path) -> None:
    frame = _lr_study(tmp_path, {1e-4: 0.15, 1e-3: 0.2, 1e-2: 0.1},
                      {3e-4: 0.02, 1e-3: 0.16, 3e-3: 0.15, 1e-2: 0.10})
    claim = verdict_of(frame, 5)
    assert claim.verdict == FAILS and "= 1× full FT's" in claim.evidence


def test_claim_5_is_not_testable_when_the_best_lrs_are_at_their_sweeps_edges(
        tmp_path: Path) -> None:
    # both best LRs at the top of their sweeps: either could be higher, the ratio is unknown
    frame = _lr_study(tmp_path, {1e-4: 0.1, 1e-3: 0.15, 1e-2: 0.2},
                      {3e-4: 0.02, 1e-3: 0.08, 3e-3: 0.10, 1e-2: 0.16})
    claim = verdict_of(frame, 5)
    assert claim.verdict == UNTESTABLE
    assert "widen the sweeps of full FT, LoRA r=8 (all)" in claim.missing


def test_claim_5_leaves_out_a_lora_trained_at_one_lr(tmp_path: Path) -> None:
    # an extra grid axis (LoRA on attention at one LR) must not make the ratio inconclusive
    methods = [{"kind": "full", "lr": [1e-4, 1e-3, 1e-2]},
               {"kind": "lora", "r": [8], "lr": [3e-4, 1e-3, 3e-3, 1e-2]},
               {"kind": "lora", "r": [8], "targets": ["attention"], "lr": [3e-3]}]
    values = {"full": {lr: [(v / 2, 0.01), (v, 0.02)] for lr, v in {1e-4: 0.15, 1e-3: 0.2}.items()},
              "lora-r8-all": {lr: [(v / 2, 0.01), (v, 0.02)]
                              for lr, v in {3e-4: 0.02, 1e-3: 0.08, 3e-3: 0.16, 1e-2: 0.1}.items()},
              "lora-r8-attention": {3e-3: [(0.05, 0.01), (0.1, 0.02)]}}
    claim = verdict_of(frame_of(tmp_path, methods, values), 5)
    assert claim.verdict == HOLDS, claim
    assert "trained at one LR, not judged: LoRA r=8 (attention)" in claim.evidence


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
    assert "r=8: all 0.2 > mlp 0.15 > attention 0.1" in claim.evidence
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
    return {"spectrum/rank90": overall, "spectrum/rank90_attention": attention,
            "spectrum/rank90_mlp": mlp, "spectrum/random_rank90": 65.0}


def _rank_study(out: Path, full_steps: list[dict[str, float]]) -> Frame:
    extra = {"full": full_steps,
             "lora-r8-all": [_spectrum_rows(3, 3, 3)] * 2,
             "lora-r64-all": [_spectrum_rows(9, 9, 10)] * 2}
    return frame_of(out, FULL_LORA, PLAIN, extra=extra)


def test_claim_7_holds_for_a_high_rank_rising_full_finetuning_update(tmp_path: Path) -> None:
    frame = _rank_study(tmp_path, [_spectrum_rows(18, 15, 25), _spectrum_rows(24, 18, 30)])
    claim = verdict_of(frame, 7)
    assert claim.verdict == HOLDS, claim
    # 24 / 8 = 3×; r=64 is not judged: 2·64 = 128 > 65, the random matrix's rank90
    assert "3× r=8" in claim.evidence and "r=64 not judged" in claim.evidence
    assert "full FT rank90 18 → 24" in claim.evidence
    assert "MLP 30 vs attention 18" in claim.evidence
    assert "LoRA r=8 (all) 3, LoRA r=64 (all) 9" in claim.evidence


@pytest.mark.parametrize(("steps", "failing"), [
    ([_spectrum_rows(10, 8, 12), _spectrum_rows(12, 10, 14)], "far more than the LoRA rank"),
    ([_spectrum_rows(30, 25, 35), _spectrum_rows(24, 18, 30)], "high early and rising"),
    ([_spectrum_rows(6, 5, 7), _spectrum_rows(24, 18, 30)], "high early and rising"),
    ([_spectrum_rows(18, 15, 25), _spectrum_rows(24, 30, 20)], "MLP above attention"),
])
def test_claim_7_does_not_hold_when_a_part_fails(tmp_path: Path, steps: list,
                                                 failing: str) -> None:
    claim = verdict_of(_rank_study(tmp_path, steps), 7)
    assert claim.verdict == FAILS and f"{failing} — does not hold" in claim.evidence


def test_claim_7_is_not_testable_without_spectra_and_counts_matrices_with_them(
        tmp_path: Path, plain_frame: Frame) -> None:
    claim = verdict_of(plain_frame, 7)
    assert claim.verdict == UNTESTABLE and "evaluation.spectrum" in claim.missing
    frame = _rank_study(tmp_path / "b", [_spectrum_rows(18, 15, 25), _spectrum_rows(24, 18, 30)])
    full_runs = frame.runs[frame.runs["label"] == "full"]
    best = full_runs[full_runs["lr"] == 1e-3]["run_id"].item()
    spectra = [{"run_id": best, "step": 8, "data": [{"rank90": r} for r in (10, 16, 30)]},
               {"run_id": best, "step": 4, "data": [{"rank90": 1}]}]
    claim = claim_delta_rank(ClaimData(frame), spectra)
    assert "2 of 3 full-FT matrices need ≥ 16" in claim.evidence


# --- 8 ----------------------------------------------------------------------------------------
def _diversity(distinct: float, similarity: float) -> dict[str, float]:
    return {"diversity/mean_distinct": distinct, "diversity/mean_pairwise_similarity": similarity,
            "diversity/prompts": 4.0, "diversity/samples": 32.0}


def _diversity_study(out: Path, full: tuple, lora: tuple) -> Frame:
    extra = {"full": [{}, _diversity(*full)], "lora-r8-all": [{}, _diversity(*lora)],
             "lora-r64-all": [{}, _diversity(*lora)]}
    return frame_of(out, FULL_LORA, PLAIN, extra=extra,
        base_extra={"diversity/mean_pairwise_similarity": 0.25})


def test_claim_8_compares_the_diversity_of_generations(tmp_path: Path) -> None:
    claim = verdict_of(_diversity_study(tmp_path / "a", (5.0, 0.6), (7.5, 0.3)), 8)
    assert claim.verdict == HOLDS
    assert "per prompt (8 samples each): full FT 5 distinct, similarity 0.6" in claim.evidence
    assert "base model similarity 0.25" in claim.evidence
    claim = verdict_of(_diversity_study(tmp_path / "b", (7.5, 0.3), (5.0, 0.6)), 8)
    assert claim.verdict == FAILS
    # more distinct samples but more similar ones is not clearly more diverse
    claim = verdict_of(_diversity_study(tmp_path / "c", (5.0, 0.3), (7.5, 0.35)), 8)
    assert claim.verdict == FAILS


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


# --- the verdict records ----------------------------------------------------------------------
def test_verdicts_are_json_ready_and_name_the_claims(plain_frame: Frame) -> None:
    records = json.loads(json.dumps([c.to_dict() for c in judge_claims(plain_frame)]))
    assert [r["claim"] for r in records] == [CLAIMS[n] for n in range(1, 10)]
    assert all(r["verdict"] in (HOLDS, FAILS, UNTESTABLE) for r in records)
    for record in records:  # a tested claim shows numbers; an untested one says what is missing
        assert record["evidence"] if record["verdict"] != UNTESTABLE else record["missing"]
        assert not any(isinstance(v, float) and math.isnan(v) for v in record.values())
