"""Print the table of docs/peft-methods.md from a run of examples/peft-methods.yaml, so that every
number in the document comes from the run's files (its results.sqlite), not retyped.

    learnforget run examples/peft-methods.yaml --out peft-out
    python docs/peft_tables.py peft-out
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from learnforget.analysis.comparison import Z
from learnforget.analysis.frame import load_frame
from learnforget.analysis.peft_comparison import peft_comparison


def _pm(value: float, se: float, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:+.{digits}f}" + (f" ± {Z * se:.{digits}f}" if math.isfinite(se) else "")


def _num(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}" if math.isfinite(value) else "—"


def peft_table(out: Path) -> str:
    """One row per method at its best LR: learning and forgetting (± 1.96 errors), their paired
    differences from full finetuning and from LoRA, parameters, ΔW, memory and speed."""
    table = peft_comparison(load_frame(out))
    header = ["method", "best LR", "learning", "forgetting", "learning − full FT",
              "forgetting − full FT", "learning − LoRA", "forgetting − LoRA", "trainable",
              "ΔW rank90", "intruders/matrix", "peak MB", "tokens/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.itertuples():
        no_delta = bool(row.no_delta_w)
        cells = [row.name, f"{row.lr:g}", _pm(row.learn, row.learn_stderr),
                 _pm(row.forget, row.forget_stderr),
                 _pm(row.learn_vs_full, row.learn_vs_full_stderr),
                 _pm(row.forget_vs_full, row.forget_vs_full_stderr),
                 _pm(row.learn_vs_lora, row.learn_vs_lora_stderr),
                 _pm(row.forget_vs_lora, row.forget_vs_lora_stderr),
                 f"{int(row.trainable):,}" if math.isfinite(row.trainable) else "—",
                 "no ΔW" if no_delta else _num(row.rank90),
                 "no ΔW" if no_delta else _num(row.intruders, 2),
                 _num(row.peak_memory_mb, 0), _num(row.tokens_per_s, 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Print the table for the run's output folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    print(peft_table(parser.parse_args().out))


if __name__ == "__main__":
    main()
