"""Simulated studies for the checklist's calibration tests: a real study and store written once
(``claim_studies.write_study``), then, for each replicate, every checkpoint's per-item values
drawn anew in memory from a known truth, so that hundreds of replicates are judged in seconds.

The noise model: code_bpb and source_bpb each have ``n`` items of 100 bytes whose base
difficulty is spread (1–5 and 1–3 bits/byte, shared by every checkpoint: the pairing the
verdicts use); a checkpoint scores each item at its difficulty − its learning (code) or + its
forgetting (prose) plus independent item noise ``item_sd``; each run (seed) adds one offset
``seed_sd`` to its learning and one to its forgetting at every step.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from claim_studies import STEPS, write_study

from learnforget.analysis.claim_data import ClaimData
from learnforget.analysis.frame import Frame, load_frame

Truth = dict[str, dict[float, list[tuple[float, float]]]]  # label → lr → (learn, forget)/step
BYTES = 100.0


class Simulation:
    """A study whose replicates differ only in their items' and seeds' noise."""

    def __init__(self, out: Path, methods: list[dict], truth: Truth, seeds: int = 1,
                 n_items: int = 200, regime: str = "cpt", domain: str = "code") -> None:
        self.truth = truth
        self.n = n_items
        offsets = {seed: 0.0 for seed in range(seeds)}
        write_study(out, methods, truth, regime=regime, domain=domain, seed_offsets=offsets)
        self.template = load_frame(out)
        self.learn_task = f"{domain}_bpb"
        grid = np.arange(n_items) / max(n_items - 1, 1)
        self.difficulty = {self.learn_task: 1 + 4 * grid, "source_bpb": 1 + 2 * grid}

    def frame(self, rng: np.random.Generator, item_sd: float = 0.3,
              seed_sd: float = 0.0) -> Frame:
        """One replicate: every checkpoint's and the base model's items drawn anew."""
        cp = self.template.checkpoints.copy()
        items: dict[tuple[str, int], dict] = {}
        base_id = str(self.template.base["run_id"])
        items[(base_id, 0)] = {task: self._items(task, 0.0, rng, item_sd)
                               for task in self.difficulty}
        run_offsets = {run: rng.normal(0.0, seed_sd, 2) for run in cp["run_id"].unique()}
        learn, forget, learn_se, forget_se = [], [], [], []
        for row in cp.itertuples():
            points = self.truth[row.label][float(row.lr)]
            true_learn, true_forget = points[STEPS.index(int(row.step))]
            offset = run_offsets[row.run_id]
            code = self._items(self.learn_task, -(true_learn + offset[0]), rng, item_sd)
            prose = self._items("source_bpb", true_forget + offset[1], rng, item_sd)
            items[(str(row.run_id), int(row.step))] = {self.learn_task: code,
                                                       "source_bpb": prose}
            learn.append(_bpb(items[(base_id, 0)][self.learn_task]) - _bpb(code))
            forget.append(_bpb(prose) - _bpb(items[(base_id, 0)]["source_bpb"]))
            learn_se.append(_se(code))
            forget_se.append(_se(prose))
        cp["learn"], cp["forget"] = learn, forget
        cp["learn_stderr"], cp["forget_stderr"] = learn_se, forget_se
        base = self.template.base.copy()
        return dataclasses.replace(self.template, checkpoints=cp, items=items, base=pd.Series(base))

    def _items(self, task: str, shift: float, rng: np.random.Generator, sd: float) -> dict:
        per_byte = self.difficulty[task] + shift + rng.normal(0.0, sd, self.n)
        return {"bits": BYTES * per_byte, "bytes": np.full(self.n, BYTES)}

    def verdicts(self, judge, replicates: int, seed: int = 0, **noise) -> list[str]:
        """``judge(ClaimData)`` → a verdict (or a part's), on each of ``replicates`` replicates."""
        rng = np.random.default_rng(seed)
        return [judge(ClaimData(self.frame(rng, **noise))) for _ in range(replicates)]


def _bpb(record: dict) -> float:
    return float(np.sum(record["bits"]) / np.sum(record["bytes"]))


def _se(record: dict) -> float:
    """``measure.uncertainty.ratio_stderr`` in NumPy (equal item sizes: the per-byte values'
    standard error of the mean)."""
    per_byte = np.asarray(record["bits"]) / np.asarray(record["bytes"])
    return float(per_byte.std(ddof=1) / np.sqrt(per_byte.size))


def rate(verdicts: list[str], state: str) -> float:
    """The share of ``verdicts`` equal to ``state``."""
    return sum(v == state for v in verdicts) / len(verdicts)


def part_verdict(claim, name: str) -> str:
    """The verdict of the part ``name`` of a judged claim."""
    return claim.parts.get(name, "not testable")
