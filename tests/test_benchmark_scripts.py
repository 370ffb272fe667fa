"""The side-by-side benchmarks in benchmarks/ run on a tiny configuration and both sides
compute the same numbers (never a speed assertion)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
pytest.importorskip("lm_eval")


def test_training_throughput_sides_train_to_the_same_losses(capsys) -> None:
    import train_throughput

    results = train_throughput.main(["--model", "builtin:micro", "--steps", "3", "--batch-size",
                                     "4", "--seq-len", "32", "--repeats", "1", "--in-process",
                                     "--methods", "full,lora-r8", "--profile"])
    for method in ("full", "lora-r8"):
        summary = results["methods"][method]
        ours, theirs = summary["learnforget"]["losses"], summary["Trainer+PEFT"]["losses"]
        assert len(ours) == len(theirs) == 3
        assert ours == pytest.approx(theirs, rel=1e-4)  # same data order, init and updates
        assert summary["ratio"] > 0 and summary["learnforget"]["gemm_fraction"] > 0
        # the same steps on the same model: the profiler counts the same matrix work
        work = {side: found["gflop"] for side, found in summary["profile"].items()}
        assert work["learnforget"] == pytest.approx(work["Trainer+PEFT"], rel=0.1), work
    assert results["gemm_peak_gflops"] > 0
    assert "Trainer+PEFT" in capsys.readouterr().out


def test_training_throughput_in_bf16_mixed_trains_both_sides_alike() -> None:
    """``--precision bf16-mixed`` (the GPU comparison's setting) puts both sides under bf16
    autocast; on a CPU too they train to the same losses."""
    import train_throughput

    results = train_throughput.main(["--model", "builtin:micro", "--steps", "3", "--batch-size",
                                     "4", "--seq-len", "32", "--repeats", "1", "--in-process",
                                     "--methods", "full", "--precision", "bf16-mixed"])
    summary = results["methods"]["full"]
    assert results["precision"] == "bf16-mixed"
    assert summary["learnforget"]["losses"] == pytest.approx(summary["Trainer+PEFT"]["losses"],
                                                              rel=1e-3)
    fp32 = train_throughput.main(["--model", "builtin:micro", "--steps", "3", "--batch-size",
                                  "4", "--seq-len", "32", "--repeats", "1", "--in-process",
                                  "--methods", "full"])
    # autocast did act: bf16 matrix products give other losses than float32 after the first step
    in_fp32 = fp32["methods"]["full"]["learnforget"]["losses"]
    assert summary["learnforget"]["losses"][1:] != in_fp32[1:]


def test_choice_scoring_sides_agree_item_by_item() -> None:
    import choice_scoring

    results = choice_scoring.main(["--model", "builtin:micro", "--limit", "3", "--threads", "1",
                                   "--repeats", "1", "--profile"])
    for task, entry in results["tasks"].items():
        assert entry["differing_items"] == [], task
        assert entry["learnforget"] == entry["lm-eval"]
        assert entry["max_ll_difference"] < 1e-3
        grouped, plain = entry["positions"]["learnforget"], entry["positions"]["lm-eval"]
        if task == "hellaswag":  # cut to micro's 128-token context, so scored (and counted) plain
            assert grouped == plain > 0
        else:
            assert 0 < grouped < plain, task
        # the profiler counts the matrix products: sharing the context does less of them (on
        # HellaSwag micro's 128-token context cuts the requests, which are then scored plain)
        ours, theirs = (entry["profile"][side]["gflop"] for side in ("learnforget", "lm-eval"))
        assert 0 < ours <= theirs * 1.001, task
        if task != "hellaswag":
            assert ours < theirs / 1.5, task
        profiled = entry["profile"]
        assert all(side["top"] and side["seconds"] > 0 for side in profiled.values())


def test_generation_sides_give_the_same_completions() -> None:
    import generation

    results = generation.main(["--model", "builtin:micro", "--limit", "2",
                               "--max-new-tokens", "8", "--repeats", "1"])
    for task, entry in results["tasks"].items():
        assert entry["differing"] == [], task
        assert entry["sides"]["learnforget"]["tokens"] == entry["sides"]["lm-eval"]["tokens"]


@pytest.mark.slow
def test_memory_estimate_compares_the_estimate_with_the_recorded_peak() -> None:
    """The script estimates and runs the same study through the command line and pairs each
    run's estimate with the peak the run recorded (the 10% check is tests/test_memory.py's).
    Slow (a whole `learnforget run`, about 40 s): CI runs it with ``-m slow``."""
    import memory_estimate

    results = memory_estimate.main(["--model", "builtin:micro", "--methods", "full",
                                    "--batch-size", "8", "--seq-len", "64", "--steps", "1"])
    [run] = results["runs"]
    assert run["method"] == "full"
    assert run["estimated_mb"] == pytest.approx(sum(run["estimate_mb"].values()), rel=1e-6)
    assert run["recorded_mb"] > 0
    assert abs(run["difference"]) < 0.25, run  # small activations: mostly the libraries


@pytest.mark.parametrize("script", ["demo_time.sh", "run_all.sh"])
def test_shell_scripts_are_valid_bash(script: str) -> None:
    assert subprocess.run(["bash", "-n", str(BENCHMARKS / script)]).returncode == 0


def test_proxy_correlation_is_spearmans_rho_and_says_why_it_is_undefined() -> None:
    from proxy_correlation import rank_correlation
    from scipy.stats import spearmanr

    xs = [1.2, 1.1, 1.05, 0.9, 0.95, 0.8]  # bits/byte falls ...
    ys = [0.20, 0.25, 0.24, 0.40, 0.35, 0.50]  # ... as the score rises
    result = rank_correlation(xs, ys, resamples=500)
    assert result["rho"] == pytest.approx(spearmanr(xs, ys).statistic) and result["rho"] < -0.9
    low, high = result["interval95"]
    assert -1.0 <= low <= result["rho"] <= high <= 1.0
    flat = rank_correlation(xs, [0.3] * 6, resamples=100)
    assert flat["rho"] is None and flat["interval95"] is None
    assert flat["undefined_because"] == "the benchmark takes one value over every point"


def test_adamw_step_sides_make_the_same_update() -> None:
    import adamw_step

    result = adamw_step.main(["--shapes", "micro", "--repeats", "2"])
    assert result["max_weight_difference"] < 1e-6  # fused and per-tensor: rounding only
    assert all(seconds > 0 for seconds in result["seconds"].values())
