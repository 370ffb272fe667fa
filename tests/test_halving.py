"""The successive-halving rule (``learnforget.analysis.halving``) on hand-made stores: the best
⌈n/η⌉ LRs go on, an LR within noise of the best goes on, one behind beyond noise stops, a
diverged one stops, and nobody stops on learning without a noise estimate."""

from __future__ import annotations

import math

from claim_studies import frame_of

from learnforget.analysis.halving import kept_count, rung_decisions, rungs

SWEEP = [{"kind": "full", "lr": [1e-4, 1e-3, 1e-2]}]


def _decisions(tmp_path, learn_at_4: dict[float, float], **kwargs):
    values = {"full": {lr: [(learn, 0.0), (learn, 0.0)] for lr, learn in learn_at_4.items()}}
    frame = frame_of(tmp_path, SWEEP, values, **kwargs)
    return {d.lr: d for d in rung_decisions(frame, 4, eta=3)}


def test_rungs_are_every_checkpoint_but_the_last():
    assert rungs([8, 4, 12, 4]) == [4, 8]
    assert rungs([5]) == []
    assert [kept_count(n) for n in (0, 1, 3, 4, 9, 10)] == [0, 1, 1, 2, 3, 4]


def test_the_best_ceil_n_over_eta_go_on_and_the_rest_stop_beyond_noise(tmp_path):
    decisions = _decisions(tmp_path, {1e-4: 0.10, 1e-3: 0.20, 1e-2: 0.05})
    assert [lr for lr, d in decisions.items() if d.goes_on] == [1e-3]
    assert decisions[1e-3].reason == "among the best 1 of 3 (rank 1)"
    assert decisions[1e-4].reason.startswith("behind the best beyond noise (-0.1 ± ")
    assert math.isclose(decisions[1e-2].learn, 0.05)
    assert all(len(d.run_ids) == 1 and d.label == "full" for d in decisions.values())


def test_an_lr_within_noise_of_the_best_goes_on(tmp_path):
    decisions = _decisions(tmp_path, {1e-4: 0.10, 1e-3: 0.200, 1e-2: 0.199})
    assert decisions[1e-2].goes_on
    assert decisions[1e-2].reason.startswith("within noise of the best (-0.001 ± ")
    assert not decisions[1e-4].goes_on


def test_a_diverged_lr_stops(tmp_path):
    values = {"full": {1e-4: [(0.10, 0.0)] * 2, 1e-3: [(0.101, 0.0)] * 2}}  # 1e-2 diverged
    frame = frame_of(tmp_path, SWEEP, values)
    decisions = {d.lr: d for d in rung_decisions(frame, 4)}
    assert not decisions[1e-2].goes_on and decisions[1e-2].reason == "diverged"
    assert math.isnan(decisions[1e-2].learn)
    assert decisions[1e-4].goes_on and decisions[1e-3].goes_on  # within noise of each other


def test_nobody_stops_on_learning_without_a_noise_estimate(tmp_path):
    decisions = _decisions(tmp_path, {1e-4: 0.10, 1e-3: 0.20, 1e-2: 0.05}, stderr=None)
    assert all(d.goes_on for d in decisions.values())
    assert decisions[1e-2].reason.startswith("no noise estimate")


def test_seeds_are_averaged_per_lr(tmp_path):
    values = {"full": {1e-4: [(0.10, 0.0)] * 2, 1e-3: [(0.20, 0.0)] * 2, 1e-2: [(0.05, 0.0)] * 2}}
    frame = frame_of(tmp_path, SWEEP, values, seed_offsets={0: 0.0, 1: 0.0})
    decisions = {d.lr: d for d in rung_decisions(frame, 4)}
    assert all(len(d.run_ids) == 2 for d in decisions.values())
    assert decisions[1e-3].goes_on and math.isclose(decisions[1e-3].learn, 0.20)
