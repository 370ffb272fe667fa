"""Seeds as a source of noise in the verdicts: their spread widens a difference's interval
(Student's t on their degrees of freedom), and seeds that share their items do not shrink the
items' noise (stores without per-item values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from claim_studies import FULL_LORA, PLAIN, frame_of

from learnforget.analysis.claim_data import ClaimData
from learnforget.analysis.claims import claim_learns_less
from learnforget.analysis.verdicts import HOLDS


def test_the_spread_of_seeds_widens_a_difference(tmp_path: Path) -> None:
    # full FT's two seeds learn 0.20 and 0.08 at the end, LoRA's 0.13 and 0.13: on items alone
    # (± 0.003) full FT − LoRA = +0.01 would be resolved; counted with the seeds it is not
    frame = frame_of(tmp_path, FULL_LORA, PLAIN, seed_offsets={0: 0.0, 1: 0.0})
    cp = frame.checkpoints
    full = cp["label"].eq("full") & cp["lr"].eq(1e-3) & cp["step"].eq(8)
    lora = cp["label"].isin(["lora-r8-all", "lora-r64-all"]) & cp["lr"].eq(1e-2) & cp["step"].eq(8)
    cp.loc[full, "learn"] = np.where(cp.loc[full, "seed"].eq(0), 0.20, 0.08)
    cp.loc[lora, "learn"] = 0.13
    data = ClaimData(frame)
    diff = data.compare("full", "lora-r8-all", "learn", 8)
    assert abs(diff.value - 0.01) < 1e-9
    assert diff.df < 10 and diff.critical > 2.2  # two seeds a side: Student's t, not 1.96
    assert diff.exceeds() is None and diff.se > 0.03, diff
    claim = claim_learns_less(data)
    assert claim.verdict != HOLDS, claim
    assert "seeds: up to 2 per method × LR, resampled" in claim.noise


def test_seeds_that_share_their_items_keep_the_items_noise(tmp_path: Path) -> None:
    # a store without per-item values: an identical second seed does not divide the error by √2
    one = ClaimData(frame_of(tmp_path / "one", FULL_LORA, PLAIN, stderr=0.05))
    two = ClaimData(frame_of(tmp_path / "two", FULL_LORA, PLAIN, stderr=0.05,
                             seed_offsets={0: 0.0, 1: 0.0}))
    single = one.compare("full", "lora-r8-all", "learn", 8)
    doubled = two.compare("full", "lora-r8-all", "learn", 8)
    assert abs(single.se - 0.05 * np.sqrt(2)) < 0.01, single
    assert doubled.se >= 0.95 * single.se, (single, doubled)


def test_no_standard_errors_means_no_verdict_from_a_point_estimate(tmp_path: Path) -> None:
    claim = claim_learns_less(ClaimData(frame_of(tmp_path, FULL_LORA, PLAIN, stderr=None)))
    assert claim.verdict == "inconclusive", claim
    assert "no noise estimate" in claim.evidence and "no standard errors stored" in claim.noise
