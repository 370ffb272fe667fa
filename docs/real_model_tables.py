"""Print the tables of docs/real-models.md from the studies' output folders, so that every
number in the document comes from files a reader can open (each study's results.sqlite and
claims.json), not retyped.

    python docs/real_model_tables.py out/smollm2-cpu
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from learnforget.analysis.claim_data import ClaimData
from learnforget.analysis.comparison import Z
from learnforget.analysis.frame import Frame, load_frame

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_tables import claims_table  # noqa: E402

COLUMNS = [  # (header, task/metric, scale): accuracies in %, bits/byte as they are
    ("math_bpb", "math_bpb/bpb", 1.0), ("code_bpb", "code_bpb/bpb", 1.0),
    ("GSM8K strict EM %", "gsm8k/exact_match_strict", 100.0),
    ("HumanEval pass@1 %", "humaneval/pass@1", 100.0),
    ("HellaSwag acc %", "hellaswag/acc", 100.0), ("ARC-C acc %", "arc_challenge/acc", 100.0),
    ("WinoGrande acc %", "winogrande/acc", 100.0), ("source_bpb", "source_bpb/bpb", 1.0),
]


def _cell(row, column: str, scale: float) -> str:
    value = float(row.get(column, math.nan))
    if not math.isfinite(value):
        return "–"
    se = float(row.get(f"{column}_stderr", math.nan))
    digits = 1 if scale != 1.0 else 3
    text = f"{value * scale:.{digits}f}"
    return text + (f" ± {Z * se * scale:.{digits}f}" if math.isfinite(se) else "")


def results_table(frame: Frame) -> str:
    """One row for the base and one per run × checkpoint: train loss, every task (± 1.96
    standard errors over items), and learning / forgetting as the report defines them."""
    columns = [(h, c, s) for h, c, s in COLUMNS
               if c in frame.checkpoints or c in frame.base.index]
    header = ["method", "lr", "step", "train loss", *[h for h, _, _ in columns],
              "learn", "forget"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base = frame.base
    lines.append("| base | – | 0 | – | " + " | ".join(_cell(base, c, s) for _, c, s in columns)
                 + " | 0 | 0 |")
    losses = frame.train.set_index(["run_id", "step"])["train/loss"] \
        if "train/loss" in frame.train else None
    for row in frame.checkpoints.to_dict("records"):
        key = (row["run_id"], row["step"])
        loss = float(losses.get(key, math.nan)) if losses is not None else math.nan
        cells = [frame.name(row["label"]), f"{row['lr']:g}", str(row["step"]),
                 f"{loss:.3f}" if math.isfinite(loss) else "–",
                 *[_cell(row, c, s) for _, c, s in columns],
                 f"{row['learn']:+.3f}", f"{row['forget']:+.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differences_table(frame: Frame) -> str:
    """Full FT − each LoRA in learning and forgetting at every shared step, with the paired
    standard error over the items both were scored on (± 1.96 standard errors)."""
    data = ClaimData(frame)
    if data.ref is None:
        return "(no full-finetuning run)"
    lines = ["| step | LoRA | learning: full − LoRA | forgetting: full − LoRA |",
             "|---|---|---|---|"]
    for label in data.judged():
        steps = sorted(set(data.curve(label)["step"]) & set(data.curve(data.ref)["step"]))
        for step in steps:
            learn = data.compare(data.ref, label, "learn", int(step))
            forget = data.compare(data.ref, label, "forget", int(step))
            lines.append(f"| {step} | {data.name(label)} | {learn.text()} | {forget.text()} |")
    return "\n".join(lines)


def main() -> None:
    """Print the tables of every study under the output folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    outs = sorted(p.parent for p in args.out.glob("*/results.sqlite"))
    for out in outs:
        frame = load_frame(out)
        print(f"**{out.name}** (learning: {frame.learn_label}; forgetting: "
              f"{frame.forget_label})\n\n{results_table(frame)}\n\n{differences_table(frame)}\n")
    if all((out / "claims.json").exists() for out in outs):
        print(claims_table(outs))


if __name__ == "__main__":
    main()
