"""Successive halving against the grid: the same best LRs and verdicts for fewer training tokens?

    python benchmarks/search_vs_grid.py DEMO_OUT [DEMO_OUT ...] [--eta 3] [--live LIVE_OUT]

Each DEMO_OUT is a multi-study output folder of ``learnforget demo`` (its study folders hold
``results.sqlite``), run with the grid search. Each study is replayed under the halving rule
(``learnforget.analysis.halving_replay.replay``: exact, rung by rung, from the grid's own
checkpoints) into a temporary copy, and both the grid and the replay are judged by the normal
path (``judge_study``). ``--live LIVE_OUT`` compares instead the folder of a live demo run with
``search: halving`` (its studies matched by folder name) with the first DEMO_OUT's grid.

Printed per study: the training tokens of halving over the grid's; each method's best LR under
both, and where they differ, whether the grid's learning at the two LRs differs beyond noise
(the draws of the verdict engine); every claim's verdict under both, and where one differs,
its parts and whether one side is inconclusive (a difference within noise) or both are definite.
The DEMO_OUT folders are only read (the stores are copied before anything opens them).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from learnforget.analysis.draws import build_draws
from learnforget.analysis.halving import ETA, search_summary
from learnforget.analysis.halving_replay import copy_study, replay
from learnforget.analysis.judge import StudyJudgement, judge_study
from learnforget.analysis.verdicts import INCONCLUSIVE, UNTESTABLE


def studies(out: Path) -> list[Path]:
    """The study folders of a demo output folder (each with a results.sqlite)."""
    return sorted(p for p in Path(out).iterdir() if (p / "results.sqlite").is_file())


def best_lr_lines(grid: StudyJudgement, other: StudyJudgement) -> list[str]:
    """Each method's best LR under both; where they differ, the grid's learning at the two LRs
    compared through the grid's draws."""
    from learnforget.analysis.best_lr import best_lrs

    ours, theirs = best_lrs(grid.frame), best_lrs(other.frame)
    draws = None
    lines = []
    for label in grid.frame.labels:
        a, b = ours.get(label), theirs.get(label)
        line = f"  best LR {grid.frame.name(label)}: grid {a:g} · halving {b:g}" \
            if a is not None and b is not None else f"  best LR {label}: grid {a} · halving {b}"
        if a is not None and b is not None and not math.isclose(a, b):
            draws = draws or build_draws(grid.frame)
            gap = draws.layout.difference(draws.groups[(label, a)].last("learn"),
                                          draws.groups[(label, b)].last("learn"))
            line += (f"  DIFFERS: grid's final learning {gap.text()} at {a:g} over {b:g}, "
                     + ("within noise" if gap.exceeds() is None else "beyond noise"))
        lines.append(line)
    return lines


def verdict_lines(grid: StudyJudgement, other: StudyJudgement) -> tuple[list[str], int]:
    """Every claim's verdict under both (and how many differ); a differing claim's parts."""
    lines, differ = [], 0
    theirs = {v.number: v for v in other.verdicts}
    for mine in grid.verdicts:
        their = theirs[mine.number]
        same = mine.verdict == their.verdict
        differ += not same
        line = f"  claim {mine.number}: grid {mine.verdict} · halving {their.verdict}"
        if not same:
            soft = {INCONCLUSIVE, UNTESTABLE} & {mine.verdict, their.verdict}
            line += ("  DIFFERS (one side inconclusive: within noise)" if soft
                     else "  DIFFERS (both definite: not within noise)")
            for part, verdict in mine.parts.items():
                their_part = their.parts.get(part)
                if their_part != verdict:
                    line += f"\n      part {part!r}: grid {verdict} · halving {their_part}"
        lines.append(line)
    return lines, differ


def compare(name: str, grid: StudyJudgement, other: StudyJudgement, tokens: int,
            grid_tokens: int) -> dict:
    """Print one study's comparison; return its numbers."""
    print(f"{name}: training tokens halving/grid {tokens:,}/{grid_tokens:,} = "
          f"{tokens / grid_tokens:.1%}")
    print("\n".join(best_lr_lines(grid, other)))
    lines, differ = verdict_lines(grid, other)
    print("\n".join(lines))
    return {"study": name, "share": tokens / grid_tokens, "verdicts_differ": differ}


def main(argv: list[str] | None = None) -> list[dict]:
    """Replay (or, with ``--live``, compare) every study; print and return the comparisons."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outs", nargs="+", type=Path, help="demo output folders (grid search)")
    parser.add_argument("--eta", type=int, default=ETA, help="halving's η (default 3)")
    parser.add_argument("--live", type=Path, help="a live `search: halving` demo output folder")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="search-vs-grid-"))
    results = []
    grid_outs = args.outs[:1] if args.live else args.outs
    for demo in grid_outs:
        for study in studies(demo):
            grid_copy = copy_study(study, work / demo.name / "grid" / study.name)
            grid = judge_study(grid_copy)
            name = f"{demo.name}/{study.name}"
            if args.live:
                live_study = args.live / study.name
                if not (live_study / "results.sqlite").is_file():
                    print(f"{name}: no live study {live_study}")
                    continue
                live = judge_study(copy_study(live_study, work / "live" / study.name))
                summary = search_summary(live.frame)
                grid_tokens = search_summary(grid.frame).tokens
                results.append(compare(name + " (live halving)", grid, live, summary.tokens,
                                       grid_tokens))
                continue
            replayed = replay(grid_copy, args.eta, work / demo.name / "halving" / study.name)
            results.append(compare(f"{name} (replay, η = {args.eta})", grid,
                                   judge_study(replayed.out), replayed.tokens,
                                   replayed.grid_tokens))
    total = [r["share"] for r in results]
    if total:
        differing = sum(r["verdicts_differ"] > 0 for r in results)
        print(f"mean tokens halving/grid over {len(total)} studies: "
              f"{sum(total) / len(total):.1%}; studies with a differing verdict: {differing}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
