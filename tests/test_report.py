"""The study report: learn/forget definitions, best LR, Pareto frontier, verdict, recommendation,
figures, the self-contained HTML and the CSV.

Stores are built by hand with the real ``Store`` and real run configs (``plan.expand`` of a real
``Study``), with measurements from stated formulas, so every expected value below is computed
from those formulas. One end-to-end test (marked slow) runs the micro study through the CLI.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from collections.abc import Callable
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import torch

from learnforget.analysis.best_lr import best_lrs
from learnforget.analysis.findings import study_findings
from learnforget.analysis.frame import load_frame
from learnforget.analysis.judge import judge_study
from learnforget.analysis.pareto import distance_to_front, frontier, pareto_front
from learnforget.analysis.recommend import frontier_note, recommend, verdict
from learnforget.pipeline import write_study_report
from learnforget.plan import MethodConfig, RunConfig, expand, method_name
from learnforget.report import figures as figs
from learnforget.report.build import SECTION_BUILDERS, build_report
from learnforget.report.html import Section
from learnforget.store import Measurement, Store
from learnforget.study import Study, parse_study

torch.set_num_threads(1)

BASE_CODE_BPB, BASE_SOURCE_BPB, BASE_CLOZE = 3.0, 2.0, 0.5
Point = Callable[[RunConfig, int], "tuple[float, float] | None"]


def make_study(methods: list[dict], **extra) -> Study:
    """A code-CPT study on the micro base with checkpoints at steps 4 and 8."""
    return parse_study({"name": "synthetic", "base": "builtin:micro",
                        "target": {"domain": "code", "regime": "cpt"}, "methods": methods,
                        "budgets": {"steps": [4, 8]}, **extra})


def write_out(out: Path, study: Study, point: Point,
              status: Callable[[RunConfig], str] = lambda run: "finished",
              spectrum: bool = True, extra_rows: Callable[[float], list] | None = None,
              error: str | None = None, runs: bool = True) -> Path:
    """OUT with study.json and a store: the base (run ``base-x``) and every run of ``study``.

    ``point(run, step)`` gives (learn, forget) → code_bpb = 3 − learn, source_bpb = 2 + forget,
    source_cloze acc_norm = 0.5 − forget / 4 (each with its ``_delta``); None = NULL values.
    Runs whose ``status`` is failed or pending get no checkpoint; ``runs=False`` writes the base
    model only."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(study.model_dump_json())
    store = Store(out / "results.sqlite")
    base_rows = [Measurement("code_bpb", "bpb", BASE_CODE_BPB),
                 Measurement("source_bpb", "bpb", BASE_SOURCE_BPB),
                 Measurement("source_cloze", "acc_norm", BASE_CLOZE),
                 *(extra_rows(0.0) if extra_rows else [])]
    store.ensure_run("base-x", study.name, "base", "base", {"base": {}})
    store.record_checkpoint("base-x", 0, 0, None, [(0, 0, m) for m in base_rows])
    store.set_status("base-x", "finished")
    for run in expand(study) if runs else []:
        store.ensure_run(run.run_id, study.name, run.method.kind, run.label,
                         run.model_dump(mode="json"))
        final = status(run)
        if final in ("failed", "pending"):
            store.set_status(run.run_id, final, error if final == "failed" else None)
            continue
        for step in (4, 8):
            values = point(run, step)
            if values is None and step == 8:
                break
            learn, forget = values if values is not None else (math.nan, math.nan)
            rows = [Measurement("code_bpb", "bpb", BASE_CODE_BPB - learn),
                    Measurement("code_bpb", "bpb_delta", -learn),
                    Measurement("source_bpb", "bpb", BASE_SOURCE_BPB + forget),
                    Measurement("source_bpb", "bpb_delta", forget),
                    Measurement("source_cloze", "acc_norm", BASE_CLOZE - forget / 4),
                    Measurement("source_cloze", "acc_norm_delta", -forget / 4)]
            if extra_rows:
                rows += extra_rows(forget)
            if spectrum:
                rank = 30.0 if run.method.kind == "full" else run.method.r / 2
                rows.append(Measurement("spectrum", "rank90", rank))
            train = [(s, s * 1024, Measurement("train", "loss", 5.0 - 0.1 * s))
                     for s in range(step - 3, step + 1)]
            store.record_checkpoint(run.run_id, step, step * 1024, None,
                                    [*train, *((step, step * 1024, m) for m in rows)])
        store.set_status(run.run_id, final)
    store.close()
    return out


# --- the rich synthetic study -------------------------------------------------------------------
# final learn = 0.2·s·q and final forget = 0.1·s²·q, with s the method's strength and q the LR's
# factor; the step-4 checkpoint has 60% of the final learn and 50% of the final forget. So at a
# shared q a method with strength s keeps s of full finetuning's learning and s² of its forgetting.
STRENGTH = {"full": 1.0, "full-wd0.1": 0.9, "lora-r8-attention": 0.4, "lora-r64-attention": 0.5,
            "lora-r8-all": 0.6, "lora-r64-all": 0.7}
LR_FACTOR = {"full": {1e-4: 0.5, 1e-3: 1.0, 1e-2: 0.8}, "lora": {1e-3: 0.6, 1e-2: 1.0}}
FAILED_ERROR = "Traceback (most recent call last):\nRuntimeError: <script>boom</script>"


def _strength(run: RunConfig) -> float:
    family = run.label.removesuffix("-lion")
    return STRENGTH[family] * (1.1 if run.label.endswith("-lion") else 1.0)


def rich_point(run: RunConfig, step: int) -> tuple[float, float] | None:
    if _rich_status(run) == "diverged":
        return None
    s, q = _strength(run), LR_FACTOR[run.method.kind][run.method.lr]
    learn, forget = 0.2 * s * q, 0.1 * s * s * q
    return (learn, forget) if step == 8 else (0.6 * learn, 0.5 * forget)


def _rich_status(run: RunConfig) -> str:
    if run.label == "full" and run.method.lr == 1e-2:
        return "diverged"
    if run.label == "lora-r8-attention-lion" and run.method.lr == 1e-3:
        return "failed"
    return "finished"


RICH_METHODS = [
    {"kind": "full", "lr": [1e-4, 1e-3, 1e-2], "weight_decay": [0.0, 0.1]},
    {"kind": "lora", "r": [8, 64], "targets": ["attention", "all"], "lr": [1e-3, 1e-2],
     "optimizer": ["adamw", "lion"]},
]


@pytest.fixture(scope="module")
def rich_out(tmp_path_factory) -> Path:
    """The rich study's OUT (22 runs: LR sweeps, wd, rank × targets, AdamW vs Lion)."""
    return write_out(tmp_path_factory.mktemp("rich"), make_study(RICH_METHODS), rich_point,
                     _rich_status, error=FAILED_ERROR)


@pytest.fixture(scope="module")
def rich_report(rich_out: Path) -> Path:
    return write_study_report(rich_out)[0]


# --- Pareto -------------------------------------------------------------------------------------
def _dominated(p: tuple[float, float], q: tuple[float, float]) -> bool:
    """q dominates p: learns at least as much, forgets at most as much, better in one."""
    return q[0] >= p[0] and q[1] <= p[1] and (q[0] > p[0] or q[1] < p[1])


def test_pareto_front_matches_the_definition_on_random_points() -> None:
    rng = random.Random(0)
    for _ in range(50):
        points = [(round(rng.random(), 1), round(rng.random(), 1)) for _ in range(12)]
        expected = {i for i, p in enumerate(points)
                    if not any(_dominated(p, q) for q in points)}
        front = pareto_front(points)
        # duplicates: exactly one of each non-dominated value is on the front
        assert {points[i] for i in front} == {points[i] for i in expected}
        assert len(front) == len({points[i] for i in expected})


def test_pareto_front_ignores_nan_and_frontier_rises() -> None:
    points = [(0.1, 0.05), (0.3, 0.2), (0.2, 0.3), (math.nan, 0.0), (0.25, 0.1), (0.0, 0.0)]
    assert pareto_front(points) == [0, 1, 4, 5]
    assert frontier(points) == [(0.0, 0.0), (0.1, 0.05), (0.25, 0.1), (0.3, 0.2)]


def test_distance_to_front_interpolates_vertically() -> None:
    front = [(0.0, 0.0), (0.2, 0.1), (0.4, 0.5)]
    # at learn 0.3 the line between (0.2, 0.1) and (0.4, 0.5) is at 0.3
    assert distance_to_front((0.3, 0.45), front) == pytest.approx(0.15)
    assert distance_to_front((0.1, 0.0), front) == pytest.approx(-0.05)
    assert distance_to_front((0.2, 0.1), front) == pytest.approx(0.0)
    assert math.isnan(distance_to_front((0.5, 0.1), front))  # beyond the front's learning
    assert math.isnan(distance_to_front((math.nan, 0.1), front))


# --- frame semantics ----------------------------------------------------------------------------
def test_frame_orients_learn_and_forget_from_the_stored_values(rich_out: Path) -> None:
    frame = load_frame(rich_out)
    cp = frame.checkpoints
    assert frame.learn_label == "code bits/byte gained vs base"
    assert frame.forget_label == "prose bits/byte lost vs base"
    # bpb: learn = base − value, forget = value − base
    assert cp["learn"].to_numpy() == pytest.approx(
        (BASE_CODE_BPB - cp["code_bpb/bpb"]).to_numpy(), nan_ok=True)
    assert cp["forget"].to_numpy() == pytest.approx(
        (cp["source_bpb/bpb"] - BASE_SOURCE_BPB).to_numpy(), nan_ok=True)
    row = cp[(cp["label"] == "lora-r8-all") & (cp["lr"] == 1e-2) & (cp["step"] == 8)].iloc[0]
    assert (row["learn"], row["forget"]) == pytest.approx((0.2 * 0.6, 0.1 * 0.36))
    assert row["r"] == 8 and row["targets"] == "all" and row["optimizer"] == "adamw"
    assert frame.base["learn"] == 0 and frame.base["forget"] == 0 and frame.base["tokens"] == 0
    assert frame.base["code_bpb/bpb"] == BASE_CODE_BPB
    assert "train" not in {c.split("/")[0] for c in frame.metric_columns()}
    assert len(frame.runs) == 22 and set(frame.runs["status"]) == {"finished", "diverged",
                                                                  "failed"}
    # the diverged run's NULL checkpoint is kept, with NaN learn; the failed run has none
    diverged = cp[cp["status"] == "diverged"]
    assert len(diverged) == 1 and math.isnan(diverged["learn"].iloc[0])
    assert frame.train["train/loss"].notna().all() and len(frame.train) == 20 * 8 + 4


def test_best_lr_is_the_lr_with_most_final_learning_among_usable_runs(rich_out: Path) -> None:
    best = best_lrs(load_frame(rich_out))
    # full: q(1e-3) = 1 beats 0.5 and the diverged 1e-2; wd 0.1: 1e-3 (1.0) beats 1e-2 (0.8)
    assert best["full"] == 1e-3 and best["full-wd0.1"] == 1e-3
    assert all(best[label] == 1e-2 for label in best if label.startswith("lora"))
    assert len(best) == 2 + 8


def test_forget_mean_averages_accuracy_drops_when_the_first_task_is_accuracy(tmp_path) -> None:
    """Forgetting on source_cloze, hellaswag and arc_challenge: drops 0.25·f, f and 2f."""
    study = make_study([{"kind": "full", "lr": [1e-3]}],
                       evaluation={"forgetting": ["source_cloze", "hellaswag", "arc_challenge"]})

    def extra(forget: float) -> list[Measurement]:
        return [Measurement("hellaswag", "acc", 0.6 - forget),
                Measurement("hellaswag", "acc_delta", -forget),
                Measurement("arc_challenge", "acc", 0.4 - 2 * forget)]  # no delta: from base

    write_out(tmp_path, study, lambda run, step: (0.1 * step, 0.01 * step), extra_rows=extra)
    frame = load_frame(tmp_path)
    final = frame.checkpoints[frame.checkpoints["step"] == 8].iloc[0]
    forget = 0.08
    assert final["forget_mean"] == pytest.approx((forget / 4 + forget + 2 * forget) / 3)
    assert final["forget"] == final["forget_mean"]
    assert frame.forget_mean_tasks == ["source_cloze", "hellaswag", "arc_challenge"]
    assert frame.forget_label.startswith("mean accuracy lost vs base")


def _method(**settings) -> MethodConfig:
    """A typed method (LoRA unless ``kind`` says otherwise) at an LR that names ignore."""
    return MethodConfig(**{"kind": "lora", "lr": 1e-3, **settings})


def test_method_names_come_from_settings_not_labels() -> None:
    assert method_name(_method(r=8, targets="all")) == "LoRA r=8 (all)"
    assert method_name(_method(r=64, targets="mlp", use_dora=True), "lion") == \
        "LoRA r=64 (mlp, DoRA, Lion)"
    assert method_name(_method(r=8, targets="all", alpha=8.0, init="pissa", use_rslora=True)) \
        == "LoRA r=8 (all, α=8, rsLoRA, pissa init)"
    assert method_name(_method(r=8, targets="all", alpha=16.0)) == "LoRA r=8 (all)"  # α = 2r
    assert method_name(_method(kind="full", train_embeddings=False, weight_decay=0.1)) == \
        "full finetuning (frozen embeddings, weight decay 0.1)"
    assert method_name(_method(kind="full", attention_dropout=0.1)) == \
        "full finetuning (attention dropout 0.1)"


def test_frame_names_and_settings_come_from_the_stored_config(rich_out: Path) -> None:
    frame = load_frame(rich_out)
    methods = frame.methods
    lion = methods.loc["lora-r8-attention-lion"]
    assert (lion["kind"], lion["r"], lion["targets"], lion["optimizer"]) == \
        ("lora", 8, "attention", "lion")
    assert frame.name("lora-r8-attention-lion") == "LoRA r=8 (attention, Lion)"
    assert pd.isna(methods.loc["full", "r"]) and methods.loc["full", "kind"] == "full"


# --- verdict and recommendation -----------------------------------------------------------------
def test_verdict_shares_are_learn_and_forget_over_full_finetuning(rich_out: Path) -> None:
    rows = {r.label: r for r in verdict(load_frame(rich_out))}
    full = rows["full"]
    assert full.is_reference and (full.learn, full.forget) == pytest.approx((0.2, 0.1))
    assert (full.runs, full.diverged) == (3, 1)
    r8 = rows["lora-r8-all"]
    assert (r8.learn_share, r8.forget_share) == pytest.approx((0.6, 0.36))
    assert r8.sentence == ("LoRA r=8 (all) kept 60% of full finetuning's learning and 36% of its "
                           "forgetting.")
    assert r8.rank90 == 4.0 and full.rank90 == 30.0
    # full's frontier at learn 0.12 lies on the segment (0, 0)–(0.12, 0.05) of its step-4 point
    assert r8.frontier_gap == pytest.approx(0.036 - 0.05)
    lion = rows["lora-r8-attention-lion"]
    assert (lion.failed, lion.lr) == (1, 1e-2)
    assert lion.learn_share == pytest.approx(0.44)


def _small_frame(tmp_path: Path, points: dict[str, list[tuple[float, float]]]):
    """Full (lr 1e-3) and LoRA r=8 / r=64 on all modules (lr 1e-2): (step 4, step 8) points."""
    study = make_study([{"kind": "full", "lr": [1e-3]},
                        {"kind": "lora", "r": [8, 64], "targets": ["all"], "lr": [1e-2]}])
    write_out(tmp_path, study, lambda run, step: points[run.label][step // 4 - 1])
    return load_frame(tmp_path)


def test_recommendation_for_each_goal(tmp_path: Path) -> None:
    frame = _small_frame(tmp_path, {"full": [(0.10, 0.08), (0.20, 0.20)],
                                    "lora-r8-all": [(0.05, 0.01), (0.12, 0.03)],
                                    "lora-r64-all": [(0.01, 0.02), (0.10, 0.025)]})
    learn = recommend(frame, "learn")
    assert (learn.label, learn.lr, learn.tokens) == ("full", 1e-3, 8 * 1024)
    # front: (0.05,.01) (0.10,.025) (0.12,.03) (0.20,.20); learn/0.2 − forget/0.2 is largest,
    # 0.45, at (0.12, 0.03)
    balanced = recommend(frame, "balanced")
    assert (balanced.label, balanced.r, balanced.targets) == ("lora-r8-all", 8, "all")
    assert (balanced.learn, balanced.forget) == pytest.approx((0.12, 0.03))
    # learn ≥ 0.1: (0.10, .08), (0.12, .03), (0.20, .20), (0.10, .025) → least forgetting
    retain = recommend(frame, "retain")
    assert (retain.label, retain.forget) == ("lora-r64-all", pytest.approx(0.025))
    assert "mixes methods" in balanced.frontier_note
    with pytest.raises(ValueError):
        recommend(frame, "fast")  # type: ignore[arg-type]


def test_frontier_note_names_a_dominating_method(tmp_path: Path) -> None:
    frame = _small_frame(tmp_path, {"full": [(0.15, 0.001), (0.30, 0.002)],
                                    "lora-r8-all": [(0.05, 0.01), (0.12, 0.03)],
                                    "lora-r64-all": [(0.06, 0.02), (0.10, 0.025)]})
    assert frontier_note(frame).startswith("Every frontier point is full finetuning")


def test_nothing_is_recommended_when_nothing_was_learned(tmp_path: Path) -> None:
    frame = _small_frame(tmp_path, {label: [(-0.1, 0.1), (-0.2, 0.2)]
                                    for label in ("full", "lora-r8-all", "lora-r64-all")})
    rec = recommend(frame, "balanced")
    assert rec.label is None and "no checkpoint improved" in rec.reason


# --- figures, HTML and CSV ----------------------------------------------------------------------
ALL_FIGURES = [s.name for s in figs.MAIN_FIGURES + figs.EXTRA_FIGURES]


def test_every_figure_is_drawn_for_the_rich_study(rich_report: Path) -> None:
    for name in ALL_FIGURES:
        path = rich_report.parent / f"{name}.png"
        image = matplotlib.image.imread(path)
        assert image.shape[0] == int(4.6 * figs.DPI), name  # 4.6-inch figures at 150 dpi
    page = rich_report.read_text()
    assert "not drawn" not in page and "could not be" not in page


def _assert_self_contained(page: str, out: Path) -> None:
    assert "http://" not in page and "https://" not in page
    assert str(out.resolve()) not in page and str(out) not in page
    for ref in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert ref.startswith(("data:image/png;base64,", "#")), ref
    assert "<script" not in page and "<link" not in page


def test_html_is_self_contained_and_escapes_user_text(rich_report: Path, rich_out: Path) -> None:
    page = rich_report.read_text()
    _assert_self_contained(page, rich_out)
    assert page.count("data:image/png;base64,") == len(ALL_FIGURES)
    assert "&lt;script&gt;boom&lt;/script&gt;" in page  # the failed run's error, escaped
    for text in ("Verdict", "Recommendation", "How to read this report", "Runs",
                 "LoRA r=8 (all) kept 60% of full finetuning&#x27;s learning"):
        assert text in page


def test_csv_traces_every_plotted_number(rich_report: Path, rich_out: Path) -> None:
    csv = pd.read_csv(rich_out / "measurements.csv")
    assert list(csv.columns) == [
        "study", "run_id", "label", "method", "r", "alpha", "targets", "init", "use_rslora",
        "use_dora", "dropout", "weight_decay", "attention_dropout", "train_embeddings",
        "optimizer", "lr", "seed", "status", "step", "tokens", "task", "metric", "value",
        "stderr", "n", "unit", "derived_from"]
    assert set(csv["study"]) == {"synthetic"}
    text = pd.read_csv(rich_out / "measurements.csv", dtype=str)
    for column in ("r", "seed", "step", "tokens"):  # integers written as integers: 8, not 8.0
        assert not text[column].dropna().str.contains(".", regex=False).any(), column
    lion = csv[csv["label"] == "lora-r8-attention-lion"].iloc[0]
    assert (lion["method"], lion["r"], lion["targets"], lion["optimizer"]) == \
        ("lora", 8, "attention", "lion")
    bpb = csv[(csv["task"] == "code_bpb") & (csv["metric"] == "bpb")]
    assert set(bpb["unit"]) == {"bits/byte"}
    learn_rows = csv[(csv["task"] == "derived") & (csv["metric"] == "learn")]
    assert set(learn_rows["derived_from"]) == {"code_bpb/bpb"}
    assert set(learn_rows["unit"]) == {"bits/byte"}
    frame = load_frame(rich_out)
    derived = csv[(csv["task"] == "derived") & (csv["metric"] == "learn") & (csv["step"] > 0)]
    merged = derived.merge(frame.checkpoints[["run_id", "step", "learn"]], on=["run_id", "step"])
    assert len(merged) == len(frame.checkpoints)
    assert merged["value"].to_numpy() == pytest.approx(merged["learn"].to_numpy(), nan_ok=True)
    # learn is recomputable from the CSV alone: base code_bpb − checkpoint code_bpb
    bpb = csv[(csv["task"] == "code_bpb") & (csv["metric"] == "bpb")]
    base = bpb[bpb["label"] == "base"]["value"].item()
    check = derived.merge(bpb[["run_id", "step", "value"]], on=["run_id", "step"],
                          suffixes=("", "_bpb"))
    assert check["value"].to_numpy() == pytest.approx((base - check["value_bpb"]).to_numpy(),
                                                      nan_ok=True)
    assert {"train", "spectrum", "derived"} <= set(csv["task"])


def test_csv_folds_standard_errors_and_counts_into_their_metric(tmp_path: Path) -> None:
    study = make_study([{"kind": "full", "lr": [1e-3]}])

    def errors(forget: float) -> list[Measurement]:
        return [Measurement("source_cloze", "acc_norm_stderr", 0.02),
                Measurement("source_cloze", "n", 500.0),
                Measurement("code_bpb", "bpb_stderr", 0.01), Measurement("code_bpb", "n", 50.0)]

    out = write_out(tmp_path, study, lambda run, step: (0.1 * step, 0.01 * step),
                    extra_rows=errors)
    write_study_report(out)[0]
    csv = pd.read_csv(out / "measurements.csv")
    assert not csv["metric"].str.endswith("_stderr").any() and not csv["metric"].eq("n").any()
    cloze = csv[(csv["task"] == "source_cloze") & (csv["metric"] == "acc_norm")]
    assert set(cloze["stderr"]) == {0.02} and set(cloze["n"]) == {500}
    learn = csv[(csv["task"] == "derived") & (csv["metric"] == "learn") & (csv["step"] == 8)]
    assert learn["stderr"].item() == pytest.approx(0.01)


def test_report_with_partial_data(tmp_path: Path) -> None:
    """Only full runs, no spectrum, one failed, one pending, one diverged before measuring."""
    study = make_study([{"kind": "full", "lr": [1e-4, 1e-3, 1e-2, 1e-1]}])
    statuses = {1e-4: "failed", 1e-3: "finished", 1e-2: "pending", 1e-1: "diverged"}
    write_out(tmp_path, study,
              lambda run, step: None if run.method.lr == 1e-1 else (0.01 * step, 0.005 * step),
              lambda run: statuses[run.method.lr], spectrum=False, error="boom")
    page = write_study_report(tmp_path)[0].read_text()
    _assert_self_contained(page, tmp_path)
    assert "could not be" not in page
    assert "LoRA rank × target modules: not drawn" in page
    for name in ("learning_curves", "tradeoff", "lr_sensitivity", "training_loss"):
        assert (tmp_path / "report" / f"{name}.png").is_file()
    assert all(f"1 {status}" in page for status in ("finished", "failed", "pending", "diverged"))


@pytest.mark.parametrize("with_runs", [True, False])
def test_report_before_any_checkpoint_skips_figures(tmp_path: Path, with_runs: bool) -> None:
    """Runs registered but pending, or only the base model measured."""
    study = make_study([{"kind": "full", "lr": [1e-3]}])
    write_out(tmp_path, study, lambda run, step: None, lambda run: "pending", runs=with_runs)
    page = write_study_report(tmp_path)[0].read_text()
    assert "could not be" not in page and page.count("not drawn") == len(ALL_FIGURES)
    assert "Nothing to recommend" in page


def test_a_section_builder_can_be_added_and_a_broken_one_is_contained(tmp_path: Path) -> None:
    write_out(tmp_path, make_study([{"kind": "full", "lr": [1e-3]}]),
              lambda run, step: (0.01 * step, 0.005 * step))

    def claims(ctx) -> Section:
        return Section("Claims checklist", f"<p>{len(ctx.frame.runs)} runs checked</p>")

    def broken(ctx) -> Section:
        raise KeyError("no such column")

    page = build_report(judge_study(tmp_path), [*SECTION_BUILDERS, claims, broken]).read_text()
    assert "Claims checklist" in page and "1 runs checked" in page
    assert "this section could not be built: KeyError" in page


def test_the_rich_study_covers_the_grid() -> None:
    """Guard for the fixtures above: 6 full + 16 LoRA runs with the expected labels."""
    labels = {run.label for run in expand(make_study(RICH_METHODS))}
    lora = {f"lora-r{r}-{t}{o}" for r, t, o in
            itertools.product((8, 64), ("attention", "all"), ("", "-lion"))}
    assert labels == {"full", "full-wd0.1"} | lora


# --- end to end ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_micro_study_end_to_end(tmp_path: Path) -> None:
    """The real micro study through the CLI (about a minute): report, figures and CSV exist."""
    from typer.testing import CliRunner

    from learnforget.cli import app

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "micro"
    result = CliRunner().invoke(app, ["run", str(root / "examples" / "micro.yaml"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    index = out / "report" / "index.html"
    page = index.read_text()
    _assert_self_contained(page, out)
    for spec in figs.MAIN_FIGURES:
        assert (out / "report" / f"{spec.name}.png").is_file(), spec.name
    drawn = list((out / "report").glob("*.png"))  # the main figures and the weights' figures
    assert len(drawn) > len(figs.MAIN_FIGURES)
    assert page.count("data:image/png;base64,") == len(drawn)  # each one inside the page
    assert "could not be" not in page
    csv = pd.read_csv(out / "measurements.csv")
    assert {"full", "lora-r8-all", "base"} <= set(csv["label"])
    assert "LoRA r=8 (all) kept" in page


# --- findings at the end of a run -------------------------------------------------------------
def test_report_page_structure(rich_report: Path) -> None:
    page = rich_report.read_text()
    study = page[page.index('<section id="study">'):]
    study = study[:study.index("</section>")]
    assert "<thead>" not in study  # the Study table has no empty header row
    assert page.count('<div class="scroll"><table>') == page.count("<table>")  # never overflows
    how = page[page.index('<section id="how-to-read-this-report">'):]
    assert "<b>in this study</b>: LoRA r=64 (all) kept 70%" in how
    assert "← all studies" not in page  # a single study has no index to go back to


def test_runs_table_shows_standard_errors_and_item_counts(tmp_path: Path) -> None:
    study = make_study([{"kind": "full", "lr": [1e-3]}])

    def errors(forget: float) -> list[Measurement]:
        return [Measurement("source_cloze", "acc_norm_stderr", 0.02),
                Measurement("source_cloze", "n", 500.0)]

    out = write_out(tmp_path, study, lambda run, step: (0.1 * step, 0.01 * step),
                    extra_rows=errors)
    page = write_study_report(out)[0].read_text()
    runs = page[page.index('<section id="runs">'):]
    assert "± 0.039 (n=500)" in runs  # 1.96 × 0.02
    study_section = page[page.index('<section id="study">'):page.index('<section id="verdict">')]
    assert "base 0.5 ± 0.039 (n=500)" in study_section  # the base model's cloze acc_norm


def test_findings_name_the_verdict_recommendation_claims_and_report(rich_report: Path,
                                                                    rich_out: Path) -> None:
    findings = study_findings(rich_out)
    claims = json.loads((rich_out / "claims.json").read_text())["claims"]
    assert sum(findings.claims.values()) == 9
    assert findings.claims == {state: [c["verdict"] for c in claims].count(state)
                               for state in ("holds", "does not hold", "inconclusive",
                                             "not testable")}
    # the judged LoRA (all linear modules) with the largest share: r=64 keeps 0.7 of the learning
    assert findings.verdict.startswith("LoRA r=64 (all) kept 70% of full finetuning's learning")
    lines = findings.lines()
    assert lines[1].startswith(f"recommended (balanced): {findings.recommendation.name}, lr ")
    assert f"step {findings.recommendation.step}" in lines[1]
    assert lines[2].startswith("claims: ") and "inconclusive" in lines[2]
    assert lines[3] == f"report: {rich_out / 'report' / 'index.html'}"
