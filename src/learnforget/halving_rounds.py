"""A study's runs round by round: one round under ``search: grid``, one per rung and a last one
under ``search: halving`` (successive halving over each method's LR sweep).

Under halving the rungs are the study's checkpoints but the last. Round k (k = 1 … rungs) trains
every run still in the search up to its k-th checkpoint; the rule of ``analysis.halving`` then
decides per method, on the learning measured there, which LRs go on to round k + 1, and the
runs of the others get the status ``stopped early`` (their checkpoints stay). The last round
trains the runs left to the last budget. A run goes on from its rung's checkpoint with its
optimizer state and RNG (``train.train_loop``), so it trains exactly as under grid: on the same
seeds, the same checkpoints.

Every decision is made again from the store when a study is run again: a run that reached a
rung before is not trained again (``runner.execute_run``), so a rerun under halving takes the
same decisions and leaves the runs the rule stopped where they are, and a rerun under grid (one
round, no stop) trains them on from their last checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from learnforget.analysis.frame import Frame, load_frame
from learnforget.analysis.halving import RungDecision, rung_decisions
from learnforget.plan import RunConfig
from learnforget.runfiles import RunFilesStore
from learnforget.runner import PAUSED
from learnforget.store import STOPPED_EARLY, Store
from learnforget.study import Study


@dataclass(frozen=True)
class StoppedRuns:
    """The runs of one method × LR that the rule stopped at a rung, and why."""

    rung: int  # 1 for the first rung
    step: int  # the rung's checkpoint step
    decision: RungDecision

    def line(self, study: str) -> str:
        """How ``learnforget run`` says it."""
        return (f"{study}: {self.decision.label} lr {self.decision.lr:g} stopped early at rung "
                f"{self.rung} (step {self.step}): {self.decision.reason}")


@dataclass
class StudyRounds:
    """Where one study's search stands: the round being trained and the runs in it."""

    study: Study
    out: Path
    runs: list[RunConfig]
    round: int = 1
    current: list[RunConfig] = field(default_factory=list)  # the runs of this round
    statuses: dict[str, str] = field(default_factory=dict)  # run id → its latest status
    stopped: list[StoppedRuns] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.current = list(self.runs)

    @property
    def rung_count(self) -> int:
        """How many rungs the search stops at: the checkpoints but the last (none under
        grid)."""
        return len(self.study.budgets.values) - 1 if self.study.search == "halving" else 0

    @property
    def ended(self) -> bool:
        """Whether no run of the study is left to train."""
        return not self.current

    def stop_after(self) -> int | None:
        """The checkpoint this round's runs stop after (None: the last budget)."""
        return self.round if self.round <= self.rung_count else None

    def final_statuses(self) -> list[str]:
        """Each run's status, in the study's order, once the search has ended."""
        return [self.statuses.get(run.run_id, "pending") for run in self.runs]

    def end(self) -> None:
        """Train nothing more (the search could not go on)."""
        self.current = []

    def round_ended(self, statuses: list[str]) -> list[StoppedRuns]:
        """Take the statuses this round's runs ended with (in ``current``'s order), apply the
        rule where runs stopped at a rung and set up the next round; returns the runs the rule
        stopped at this rung."""
        self.statuses.update({run.run_id: status
                              for run, status in zip(self.current, statuses, strict=True)})
        paused = [run for run, status in zip(self.current, statuses, strict=True)
                  if status == PAUSED]
        if not paused:  # every run ended (at the last budget, diverged or failed)
            self.current = []
            return []
        rung = self.round
        step, decisions = self._decide(rung, paused[0].run_id)
        goes_on = {run_id for d in decisions if d.goes_on for run_id in d.run_ids}
        decided = {run_id for d in decisions for run_id in d.run_ids}
        stopped = [StoppedRuns(rung, step, d) for d in decisions
                   if not d.goes_on and any(r.run_id in d.run_ids for r in paused)]
        stop_ids = {run_id for s in stopped for run_id in s.decision.run_ids
                    if self.statuses.get(run_id) == PAUSED}
        self._mark_stopped(stop_ids)
        # a run the rule did not judge goes on (never stopped without a reason); a finished
        # run the rule keeps stays in the search, so that later rungs rank the same LRs
        self.current = [run for run in self.current
                        if self.statuses[run.run_id] in (PAUSED, "finished")
                        and (run.run_id in goes_on or run.run_id not in decided)]
        if not any(self.statuses[run.run_id] == PAUSED for run in self.current):
            self.current = []
        self.round += 1
        self.stopped += stopped
        return stopped

    def _decide(self, rung: int, reached: str) -> tuple[int, list[RungDecision]]:
        """The rung's step (the ``rung``-th checkpoint of run ``reached``) and the rule's
        decisions on this round's runs there."""
        store = Store(self.out / "results.sqlite")
        try:
            step = store.checkpoint_steps(reached)[rung - 1]
        finally:
            store.close()
        frame = _only_runs(load_frame(self.out), {run.run_id for run in self.current})
        return step, rung_decisions(frame, step, self.study.eta)

    def _mark_stopped(self, run_ids: set[str]) -> None:
        """Give the runs the status ``stopped early`` (in the store and their ``run.json``)."""
        if not run_ids:
            return
        store = Store(self.out / "results.sqlite")
        try:
            for run in self.runs:
                if run.run_id in run_ids:
                    RunFilesStore(store, run, self.study.name, self.out).set_status(
                        run.run_id, STOPPED_EARLY)
        finally:
            store.close()
        self.statuses.update(dict.fromkeys(run_ids, STOPPED_EARLY))


def _only_runs(frame: Frame, run_ids: set[str]) -> Frame:
    """``frame`` with the rows of ``run_ids`` only: the runs still in the search (not those
    the rule stopped before, nor runs of an earlier definition of the study in its store)."""
    return dataclasses.replace(
        frame, checkpoints=frame.checkpoints[frame.checkpoints["run_id"].isin(run_ids)],
        runs=frame.runs[frame.runs["run_id"].isin(run_ids)], derived={})
