"""Print the tables of docs/demo.md from a demo's output folder, so that every number in the
document comes from files a reader can open (each study's results.sqlite, measurements.csv and
claims.json), not retyped.

    python docs/demo_tables.py demo-out            # after `learnforget demo --out demo-out`
    python docs/demo_tables.py demo-out --claims   # the claims table only
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from learnforget.analysis.best_lr import lr_table
from learnforget.analysis.claim_data import ClaimData
from learnforget.analysis.comparison import Z
from learnforget.analysis.frame import load_frame


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "—"


def _pm(value: float, se: float) -> str:
    return _fmt(value) + (f" ± {Z * se:.3f}" if math.isfinite(se) else "")


def results_table(out: Path) -> str:
    """One row per method: learning at each LR, then at the best LR learning and forgetting
    (± 1.96 standard errors), ΔW rank90, intruders per matrix and, when measured, exact match."""
    frame = load_frame(out)
    data = ClaimData(frame)
    table = lr_table(frame)
    em = "math_em/exact_match_strict"
    has_em = em in frame.checkpoints
    header = ["method", "learning per LR (bits/byte)", "best LR", "learning", "forgetting",
              "ΔW rank90", "intruders/matrix", *(["exact match"] if has_em else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in frame.labels:
        rows = table[table["label"] == label].sort_values("lr")
        best = data.best.get(label, math.nan)
        per_lr = " / ".join(
            (f"**{_fmt(r.learn)}**" if math.isclose(r.lr, best) else _fmt(r.learn))
            + f" ({r.lr:g})" for r in rows.itertuples())
        cells = [data.name(label), per_lr, f"{best:g}",
                 _pm(data.value(label, "learn"), data.error(label, "learn")),
                 _pm(data.value(label, "forget"), data.error(label, "forget")),
                 _fmt(data.value(label, "spectrum/rank90"), 1),
                 _fmt(data.value(label, "spectrum/intruders"), 2)]
        if has_em:
            cells.append(_pm(data.value(label, em), data.error(label, em)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_table(outs: list[Path]) -> str:
    """The nine verdicts of each study (from its claims.json)."""
    verdicts = {out.name: json.loads((out / "claims.json").read_text())["claims"] for out in outs}
    names = list(verdicts)
    lines = ["| # | claim | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for i in range(9):
        first = verdicts[names[0]][i]
        cells = [f"**{verdicts[name][i]['verdict']}**" for name in names]
        lines.append(f"| {first['number']} | {first['claim']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Print the tables for the studies under the demo's output folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--claims", action="store_true", help="only the claims table")
    args = parser.parse_args()
    outs = sorted(p.parent for p in args.out.glob("*/claims.json"))
    if not args.claims:
        for out in outs:
            print(f"**{out.name}**\n\n{results_table(out)}\n")
    print(claims_table(outs))


if __name__ == "__main__":
    main()
