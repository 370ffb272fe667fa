"""A study judged: everything the report shows that analysis concludes, computed once from the
study's output folder, and ``OUT/claims.json``.

``judge_study(OUT)`` reads the store into a ``Frame`` and the weight data of each method at its
best LR, then judges the paper's claims, compares each method with full finetuning, recommends
a checkpoint for each goal and compares the variants; the report renders the result
(``StudyJudgement``) and ``write_claims_json`` writes its verdicts. ``judge_run(OUTS)`` does the
same for the index of a multi-study run: each study's findings and checklist, and the claims
that need several studies.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from learnforget.analysis.best_lr import AtBestLR
from learnforget.analysis.claims import judge_claims, judge_claims_across
from learnforget.analysis.findings import Findings, headline, study_findings
from learnforget.analysis.frame import Frame, load_frame
from learnforget.analysis.halving import SearchSummary, search_summary
from learnforget.analysis.recommend import (
    GOALS,
    Recommendation,
    VerdictRow,
    frontier_note,
    recommend,
    verdict,
)
from learnforget.analysis.variants import variant_comparison
from learnforget.analysis.verdicts import VERDICTS, ClaimVerdict
from learnforget.analysis.weights import StudyWeights, load_weights
from learnforget.errors import UserError


@dataclass(frozen=True)
class StudyJudgement:
    """One study's conclusions: the claims' verdicts (``verdicts``, what claims.json holds),
    each method against full finetuning (``methods``), a recommendation per goal
    (``recommendations``, in ``GOALS`` order) with the frontier's note, the verdict sentence of
    the judged LoRA (``headline``), the variants compared apart (``variants``), the weight
    data of each method at its best LR (``weights``) and which LR search ran with the training
    tokens it spent against the grid's (``search``)."""

    out: Path
    frame: Frame
    verdicts: list[ClaimVerdict]
    methods: list[VerdictRow]
    recommendations: list[Recommendation]
    frontier_note: str
    headline: str
    variants: pd.DataFrame
    weights: StudyWeights
    search: SearchSummary

    @property
    def name(self) -> str:
        """The study's name (its folder's when the folder has no study.json)."""
        return self.frame.study.name if self.frame.study else self.out.name

    def recommendation(self, goal: str) -> Recommendation:
        """The recommendation for ``goal``."""
        return next(r for r in self.recommendations if r.goal == goal)

    def findings(self) -> Findings:
        """The few lines printed at the end of a run: verdict sentence, balanced recommendation,
        claims count by state and where the report is."""
        states = [v.verdict for v in self.verdicts]
        return Findings(self.name, self.headline, self.recommendation("balanced"),
                        {state: states.count(state) for state in VERDICTS},
                        self.out / "report" / "index.html")


def judge_study(out: Path) -> StudyJudgement:
    """Read OUT's store and judge the study (``StudyJudgement``); ``UserError`` when there is
    no store."""
    out = Path(out)
    frame = load_frame(out)
    weights = load_weights(out, AtBestLR(frame))
    return StudyJudgement(
        out=out, frame=frame, verdicts=judge_claims(frame, weights.records),
        methods=verdict(frame), recommendations=[recommend(frame, goal) for goal in GOALS],
        frontier_note=frontier_note(frame), headline=headline(frame),
        variants=variant_comparison(frame), weights=weights, search=search_summary(frame))


def claims_record(judgement: StudyJudgement) -> dict:
    """What ``OUT/claims.json`` holds: the study, its target and every verdict."""
    study = judgement.frame.study
    return {"study": study.name if study else None,
            "target": study.target.model_dump(mode="json") if study else None,
            "claims": [v.to_dict() for v in judgement.verdicts]}


def write_claims_json(judgement: StudyJudgement) -> Path:
    """Write ``OUT/claims.json`` (see ``claims_record``); returns its path."""
    path = judgement.out / "claims.json"
    path.write_text(json.dumps(claims_record(judgement), indent=2, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    return path


# --- several studies ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyChecklist:
    """One study of a multi-study run as its index shows it: folder, name, findings and
    {claim number: verdict}."""

    out: Path
    name: str
    findings: Findings
    verdicts: dict[int, str]


@dataclass(frozen=True)
class RunJudgement:
    """A multi-study run's conclusions: each study's checklist (studies with a store), the
    verdicts that need several studies (``across``) and a note for each folder without a
    store."""

    studies: list[StudyChecklist]
    across: list[ClaimVerdict]
    notes: list[str]


def checklist(out: Path, frame: Frame) -> dict[int, str]:
    """{claim number: verdict} from OUT/claims.json (written with the study's report), or
    judged now when it has not been written."""
    path = out / "claims.json"
    if path.is_file():
        claims = json.loads(path.read_text(encoding="utf-8"))["claims"]
        return {int(c["number"]): c["verdict"] for c in claims}
    return {v.number: v.verdict for v in judge_claims(frame)}


def judge_run(outs: Sequence[Path]) -> RunJudgement:
    """Judge a multi-study run from its studies' folders (``RunJudgement``)."""
    frames, notes = [], []
    for out in outs:
        try:
            frames.append((Path(out), load_frame(out)))
        except UserError as error:
            notes.append(str(error))
    studies = [StudyChecklist(out, frame.study.name if frame.study else out.name,
                              study_findings(out, frame), checklist(out, frame))
               for out, frame in frames]
    across = judge_claims_across([frame for _, frame in frames]) if frames else []
    return RunJudgement(studies, across, notes)
