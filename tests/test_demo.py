"""The smoke test: `learnforget demo --scale micro` runs the whole study end to end."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from learnforget.store import Store


def test_micro_demo_writes_every_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    started = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "learnforget", "demo", "--scale", "micro", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    elapsed = time.time() - started
    assert result.returncode == 0, result.stderr[-3000:]
    index = (out / "index.html").read_text()
    spans = {}
    for study in ("code-cpt", "math-ift"):
        folder = out / study
        assert f"{study}/report/index.html" in index
        store = Store(folder / "results.sqlite")
        statuses = {r["status"] for r in store.runs()}
        assert statuses == {"finished"}, statuses
        assert len(store.runs()) == 1 + 5  # the base and 3 full + 2 LoRA runs
        spans[study] = [(r["started_at"], r["finished_at"]) for r in store.runs()
                        if r["label"] != "base"]
        page = (folder / "report" / "index.html").read_text()
        assert not re.search(r"(src|href)=\"(https?:|/)", page), "the report must be offline"
        assert (folder / "measurements.csv").stat().st_size > 1000
        assert len(list((folder / "report").glob("*.png"))) >= 4
    # one queue of runs for both studies: math-ift's first run starts while code-cpt's last
    # one still trains (5 runs on 2 workers), not after it
    assert min(start for start, _ in spans["math-ift"]) < max(end for _, end in spans["code-cpt"])
    # each study ends with its findings, and the demo with the index of reports
    output = result.stdout + result.stderr
    for study in ("code-cpt", "math-ift"):
        assert f"report: {out / study / 'report' / 'index.html'}" in output
    assert output.count("verdict: ") == 2 and output.count("recommended (balanced): ") == 2
    assert re.search(r"claims: \d+ holds, \d+ does not hold, \d+ inconclusive, "
                     r"\d+ not testable", output)
    assert "checkpoint " in output  # the recommended checkpoint's folder
    print(f"micro demo took {elapsed:.0f} s")
    again = subprocess.run(
        [sys.executable, "-m", "learnforget", "demo", "--scale", "micro", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("nothing to do: all 5 runs") == 2
    # `learnforget report` on the run's folder, or on one of its studies, rewrites the index
    # too (a stale one, or a missing one for the run's folder): the same page as the demo wrote,
    # from the stores alone
    for target in (out, out / "code-cpt"):
        if target == out:
            (out / "index.html").unlink()
        else:
            (out / "index.html").write_text("stale")
        rewritten = subprocess.run([sys.executable, "-m", "learnforget", "report", str(target)],
                                   capture_output=True, text=True, timeout=600)
        assert rewritten.returncode == 0, rewritten.stderr[-3000:]
        assert (out / "index.html").read_text() == index
        assert f"report: {out / 'index.html'}" in rewritten.stdout + rewritten.stderr
