"""What every section of a study's report gets (``ReportContext``): the output folder, what
analysis concluded (``StudyJudgement``, with its ``Frame``) and where figures go, and the type
of a section builder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from learnforget.analysis.frame import Frame
from learnforget.analysis.judge import StudyJudgement
from learnforget.report import figures as figs
from learnforget.report.html import FigureRef, Section


@dataclass
class ReportContext:
    """What a section builder gets: the output folder, the study as analysis judged it, its
    ``Frame`` and where figures go. ``draw`` renders figures once and remembers them."""

    out: Path
    judgement: StudyJudgement
    report_dir: Path
    drawn: dict[str, FigureRef | str] = field(default_factory=dict)

    @property
    def frame(self) -> Frame:
        """The study's measurements (``judgement.frame``)."""
        return self.judgement.frame

    def draw(self, specs: Sequence[figs.FigureSpec]) -> tuple[list[FigureRef], list[str]]:
        """(figures drawn, notes for those skipped) for ``specs``; a figure that raises
        anything but ``FigureSkipped`` is noted with its error, not raised."""
        refs, notes = [], []
        for spec in specs:
            if spec.name not in self.drawn:
                try:
                    path = spec.draw(self.frame, self.report_dir)
                    self.drawn[spec.name] = FigureRef(path, spec.title, spec.caption)
                except figs.FigureSkipped as skipped:
                    self.drawn[spec.name] = f"{spec.title}: not drawn — {skipped}."
                except Exception as exc:  # a figure bug must not cost the whole report
                    self.drawn[spec.name] = (f"{spec.title}: could not be drawn — "
                                             f"{type(exc).__name__}: {exc}")
            result = self.drawn[spec.name]
            (refs if isinstance(result, FigureRef) else notes).append(result)
        return refs, notes


SectionBuilder = Callable[[ReportContext], "Section | None"]
