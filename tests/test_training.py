"""Real micro runs: training lowers the loss, checkpoints are what PEFT and transformers load,
rows land in the store."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import micro_study
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from learnforget.base import load_base
from learnforget.data.prepare import build_stream
from learnforget.measure.base_measurement import base_run_id, measure_base
from learnforget.methods import apply_method, scoring_view
from learnforget.plan import expand
from learnforget.runner import execute_run
from learnforget.store import Store
from learnforget.study import parse_study
from learnforget.train import train_loop

torch.set_num_threads(1)


def train_one(run, on_checkpoint=None, out: Path | None = None):
    """Train ``run`` in this process; returns (model, tokenizer, losses, result)."""
    torch.manual_seed(run.seed)
    loaded = load_base(run.base, log=lambda m: None)
    stream = build_stream(run, loaded.tokenizer)
    model = apply_method(loaded.model, run.method)
    losses: list[float] = []
    result = train_loop(
        model, loaded.tokenizer, stream, run, [int(v) for v in run.budgets.values],
        out or Path(tempfile.mkdtemp(prefix="learnforget-train-")),
        on_checkpoint or (lambda *a: None),
        on_step=lambda step, tokens, loss, tps: losses.append(loss),
    )
    return model, loaded.tokenizer, losses, result


@pytest.mark.parametrize("optimizer", ["adamw", "lion"])
def test_both_optimizers_lower_the_loss(optimizer: str, tmp_path: Path) -> None:
    lr = 1e-3 if optimizer == "adamw" else 3e-4  # Lion wants a ~3-10x smaller LR
    study = parse_study(micro_study(
        methods=[{"kind": "full", "lr": [lr]}], optimizer={"name": optimizer},
        budgets={"steps": [30]}, schedule={"name": "constant", "warmup": 0.0}))
    (run,) = expand(study)
    _, _, losses, result = train_one(run, out=tmp_path)
    assert result.status == "finished"
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.05, (first, last)


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory) -> dict:
    """A LoRA run trained in-process; at its checkpoint, the tool's own logits are recorded."""
    out = tmp_path_factory.mktemp("lora")
    study = parse_study(micro_study(
        methods=[{"kind": "lora", "lr": [5e-3], "r": [4], "targets": ["all"]}],
        budgets={"steps": [5]}))
    (run,) = expand(study)
    probe = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0))
    seen: dict = {}

    def on_checkpoint(model, step, tokens, folder, rows):
        with torch.no_grad():
            seen["logits"] = model(input_ids=probe).logits.clone()
        seen["folder"] = folder
        seen["rows"] = rows

    model, tokenizer, _, _ = train_one(run, on_checkpoint, out)
    return {"probe": probe, "model": model, "run": run, **seen}


def test_adapter_loads_in_plain_peft_with_the_same_logits(lora_checkpoint: dict) -> None:
    folder: Path = lora_checkpoint["folder"]
    assert (folder / "adapter_config.json").exists()
    assert (folder / "adapter_model.safetensors").exists()
    config = json.loads((folder / "adapter_config.json").read_text())
    base_path = config["base_model_name_or_path"]
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), folder)
    plain.eval()
    with torch.no_grad():
        logits = plain(input_ids=lora_checkpoint["probe"]).logits
    torch.testing.assert_close(logits, lora_checkpoint["logits"], atol=1e-5, rtol=0)


def test_merged_weights_equal_base_plus_adapter(lora_checkpoint: dict) -> None:
    folder: Path = lora_checkpoint["folder"]
    config = json.loads((folder / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    merged = PeftModel.from_pretrained(base, folder).merge_and_unload().state_dict()
    adapter = load_file(folder / "adapter_model.safetensors")
    scale = config["lora_alpha"] / config["r"]
    checked = 0
    for key, a in adapter.items():
        if "lora_A" not in key:
            continue
        b = adapter[key.replace("lora_A", "lora_B")]
        name = key.replace("base_model.model.", "").replace(".lora_A.weight", ".weight")
        expected = base_state[name] + scale * (b @ a)
        torch.testing.assert_close(merged[name], expected, atol=1e-6, rtol=0)
        checked += 1
    assert checked == 2 * 7  # 2 layers × (q, k, v, o, gate, up, down)


def test_training_rows_cover_every_step_window(lora_checkpoint: dict) -> None:
    rows = lora_checkpoint["rows"]
    metrics = {(m.task, m.metric) for _, _, m in rows}
    assert {("train", "loss"), ("train", "tokens_per_s"), ("train", "lr")} <= metrics
    assert all(step == 5 for step, _, _ in rows)


def test_micro_study_trains_full_and_lora_and_stores_rows(tmp_path: Path) -> None:
    study = parse_study(micro_study())
    measure_base(study, tmp_path, log=lambda m: None)
    statuses = [execute_run(study, run, tmp_path, log=lambda m: None) for run in expand(study)]
    assert statuses == ["finished", "finished"]
    store = Store(tmp_path / "results.sqlite")
    runs = {r["run_id"]: r for r in store.runs()}
    assert {r["method"] for r in runs.values()} == {"base", "full", "lora"}
    for run in expand(study):
        rows = store.measurements(run.run_id)
        assert store.checkpoint_steps(run.run_id) == [3, 6]
        by_key = {(r["step"], r["task"], r["metric"]): r["value"] for r in rows}
        for step in (3, 6):
            assert by_key[(step, "code_bpb", "bpb")] > 0
            assert (step, "source_bpb", "bpb_delta") in by_key
            for task in ("code_bpb", "source_bpb"):  # uncertainty beside every score
                assert 0 < by_key[(step, task, "bpb_stderr")] < by_key[(step, task, "bpb")]
                assert by_key[(step, task, "n")] == 4
            assert by_key[(step, "train", "loss")] > 0
            assert by_key[(step, "spectrum", "matrices_changed")] >= 14
        assert runs[run.run_id]["status"] == "finished"
        assert runs[run.run_id]["finished_at"] >= runs[run.run_id]["started_at"]
        assert (tmp_path / "runs" / run.run_id / "checkpoint-6").is_dir()
        assert not any(r["metric"] in ("bpb_stderr_delta", "n_delta") for r in rows)
    base_rows = {(r["task"], r["metric"]): r["value"]
                 for r in store.measurements(base_run_id(study))}
    assert base_rows[("code_bpb", "n")] == 4 and base_rows[("code_bpb", "bpb_stderr")] > 0
    lora = next(r for r in expand(study) if r.method.kind == "lora")
    lora_rank = {r["step"]: r["value"] for r in store.measurements(lora.run_id)
                 if r["task"] == "spectrum" and r["metric"] == "rank90"}
    assert max(lora_rank.values()) <= 4  # a rank-4 adapter cannot need more
    # Run again: everything is found finished, nothing is added.
    before = len(store.measurements())
    assert [execute_run(study, run, tmp_path) for run in expand(study)] == ["finished"] * 2
    assert len(store.measurements()) == before


def test_a_nan_loss_ends_the_run_as_diverged_and_the_study_goes_on(tmp_path: Path) -> None:
    study = parse_study(micro_study())
    full, lora = expand(study)
    measure_base(study, tmp_path, log=lambda m: None)
    # Poison the full run's base: a NaN in the final norm makes every logit NaN.
    import learnforget.runner as runner_module

    real_load_base = runner_module.load_base

    def poisoned_load_base(spec, **kwargs):
        loaded = real_load_base(spec, **kwargs)
        with torch.no_grad():
            loaded.model.model.norm.weight[0] = float("nan")
        return loaded

    runner_module.load_base = poisoned_load_base
    try:
        assert execute_run(study, full, tmp_path, log=lambda m: None) == "diverged"
    finally:
        runner_module.load_base = real_load_base
    assert execute_run(study, lora, tmp_path, log=lambda m: None) == "finished"
    store = Store(tmp_path / "results.sqlite")
    runs = {r["run_id"]: r for r in store.runs()}
    assert runs[full.run_id]["status"] == "diverged"
    assert "loss nan" in runs[full.run_id]["error"]
    assert store.checkpoint_steps(full.run_id) == []
    # A diverged run is final: running the study again does not retry it.
    assert execute_run(study, full, tmp_path, log=lambda m: None) == "diverged"


def test_a_task_added_later_is_measured_on_the_saved_checkpoints(tmp_path: Path) -> None:
    first = parse_study(micro_study(methods=[{"kind": "lora", "lr": [5e-3], "r": [4]}]))
    (run,) = expand(first)
    measure_base(first, tmp_path, log=lambda m: None)
    assert execute_run(first, run, tmp_path, log=lambda m: None) == "finished"
    store = Store(tmp_path / "results.sqlite")
    before = {(r["step"], r["task"], r["metric"]): r["value"]
              for r in store.measurements(run.run_id)}
    assert not any(task == "source_cloze" for _, task, _ in before)

    evaluation = {"learning": ["code_bpb"], "forgetting": ["source_bpb", "source_cloze"],
                  "limit": 4}
    second = parse_study(micro_study(methods=[{"kind": "lora", "lr": [5e-3], "r": [4]}],
                                     evaluation=evaluation))
    assert [r.run_id for r in expand(second)] == [run.run_id]  # evaluation is not in the id
    measure_base(second, tmp_path, log=lambda m: None)
    assert execute_run(second, run, tmp_path, log=lambda m: None) == "finished"
    after = {(r["step"], r["task"], r["metric"]): r["value"]
             for r in store.measurements(run.run_id)}
    for step in (3, 6):
        assert 0.0 <= after[(step, "source_cloze", "acc")] <= 1.0
        assert (step, "source_cloze", "acc_delta") in after
    # Nothing was retrained: every earlier row is unchanged.
    assert all(after[key] == value for key, value in before.items())


def test_eval_command_scores_a_checkpoint_adapter(lora_checkpoint: dict) -> None:
    from typer.testing import CliRunner

    from learnforget.cli import app

    folder: Path = lora_checkpoint["folder"]
    base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    runner = CliRunner()
    args = ["eval", "--model", base, "--tasks", "code_bpb,source_bpb", "--limit", "3", "--json"]
    plain = runner.invoke(app, args)
    tuned = runner.invoke(app, [*args, "--adapter", str(folder)])
    assert plain.exit_code == 0 and tuned.exit_code == 0, plain.output + tuned.output
    plain_json = json.loads(plain.stdout[plain.stdout.index("{"):])
    tuned_json = json.loads(tuned.stdout[tuned.stdout.index("{"):])
    assert plain_json["n"] == tuned_json["n"] == {"code_bpb": 3, "source_bpb": 3}
    for output in (plain_json, tuned_json):
        for metrics in output["results"].values():
            assert set(metrics) == {"bpb", "bpb_stderr"} and metrics["bpb_stderr"] > 0
    # Five LoRA steps on code: the adapter changes the code score, so it was really applied.
    assert tuned_json["results"]["code_bpb"]["bpb"] != plain_json["results"]["code_bpb"]["bpb"]


def test_eval_command_reports_accuracy_with_its_stderr_and_item_count() -> None:
    from typer.testing import CliRunner

    from learnforget.cli import app

    args = ["eval", "--model", "builtin:micro", "--tasks", "source_cloze", "--limit", "6"]
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    output = json.loads(as_json.stdout[as_json.stdout.index("{"):])
    assert output["n"] == {"source_cloze": 6}
    metrics = output["results"]["source_cloze"]
    assert set(metrics) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
    for metric in ("acc", "acc_norm"):  # 0/1 items: sample std / sqrt(n) = sqrt(p(1-p)/(n-1))
        p = metrics[metric]
        assert metrics[f"{metric}_stderr"] == pytest.approx((p * (1 - p) / 5) ** 0.5)
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    expected = f"{metrics['acc']:.4f} ± {metrics['acc_stderr']:.4f} (n=6)"
    assert expected in text.stdout


@pytest.mark.parametrize("variant", [{}, {"use_dora": True}])
def test_scoring_view_merges_lora_into_a_copy(variant: dict, tmp_path: Path) -> None:
    # a trained LoRA (and DoRA) micro model: the merged copy computes the same logits, and the
    # trained model's own weights are untouched, bit for bit
    study = parse_study(micro_study(
        methods=[{"kind": "lora", "lr": [5e-3], "r": [4], "targets": ["all"], **variant}],
        budgets={"steps": [3]}))
    (run,) = expand(study)
    model, _, _, _ = train_one(run, out=tmp_path)
    model.eval()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    probe = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(input_ids=probe).logits
        with scoring_view(model) as merged:
            assert not isinstance(merged, PeftModel)
            assert not any("lora_" in name for name, _ in merged.named_parameters())
            got = merged(input_ids=probe).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
    with scoring_view(model, max_bytes=1) as same:  # too large to copy: scored unmerged
        assert same is model


def test_scoring_view_leaves_full_finetuning_alone() -> None:
    loaded = load_base(parse_study(micro_study()).base, log=lambda m: None)
    with scoring_view(loaded.model) as same:
        assert same is loaded.model


def test_prepared_training_data_is_what_each_run_then_loads(tmp_path: Path,
                                                            monkeypatch) -> None:
    """``prepare_training_data`` (what ``learnforget run`` does before starting the runs) builds
    each distinct set of training examples once, into the cache the runs read: a run then
    trains without touching the corpus."""
    import learnforget.data.prepare as prepare

    study = parse_study(micro_study(training={"batch_size": 8, "seq_len": 48},
                                    budgets={"steps": [2]}))
    runs = expand(study)
    tokenizer = load_base(study.base).tokenizer
    fingerprint = prepare._tokenizer_fingerprint(tokenizer)
    paths = {prepare._prepared_path(prepare._training_key(run, fingerprint)) for run in runs}
    assert len(paths) == 1  # full finetuning and LoRA train on the same examples
    for path in paths:
        path.unlink(missing_ok=True)
    logged: list[str] = []
    prepare.prepare_training_data(runs, lambda: tokenizer, log=logged.append)
    assert all(path.exists() for path in paths)
    assert logged == ["preparing the training data (code cpt, 48-token sequences)"]
    prepare.prepare_training_data(runs, lambda: tokenizer, log=logged.append)  # all prepared
    assert len(logged) == 1

    def no_corpus(*args, **kwargs):
        raise AssertionError("the run built its training data again")

    monkeypatch.setattr(prepare, "training_material", no_corpus)
    measure_base(study, tmp_path, log=lambda m: None)
    assert execute_run(study, runs[0], tmp_path, log=lambda m: None) == "finished"


def _trained_with_lag(run, lag: int, monkeypatch, nan_at_call: int | None = None):
    """Train ``run`` in this process with losses read ``lag`` steps after their step is queued
    (a GPU reads them 1 late); returns (progress events, checkpoint rows, weights, result).
    ``nan_at_call``: that call of the loss function returns NaN."""
    import learnforget.train as train_module

    monkeypatch.setattr(train_module, "loss_read_lag", lambda device, scaler: lag)
    if nan_at_call is not None:
        real_loss, calls = train_module.response_loss, []

        def loss_turning_nan(*args):
            calls.append(1)
            loss = real_loss(*args)
            return loss * float("nan") if len(calls) == nan_at_call else loss

        monkeypatch.setattr(train_module, "response_loss", loss_turning_nan)
    torch.manual_seed(run.seed)
    loaded = load_base(run.base, log=lambda m: None)
    model = apply_method(loaded.model, run.method)
    events, rows = [], []

    def on_checkpoint(model, step, tokens, folder, train_rows):
        rows.append([(s, t, m.metric, m.value) for s, t, m in train_rows
                     if m.metric not in ("tokens_per_s", "peak_memory_mb")])

    result = train_loop(model, loaded.tokenizer, build_stream(run, loaded.tokenizer), run,
                        [int(v) for v in run.budgets.values],
                        Path(tempfile.mkdtemp(prefix="learnforget-lag-")), on_checkpoint,
                        on_step=lambda step, tokens, loss, tps: events.append((step, tokens,
                                                                               loss)))
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    return events, rows, weights, result


@pytest.mark.parametrize("lag", [1, 2])
def test_losses_read_steps_late_count_every_step_as_read_at_once(lag: int,
                                                                  monkeypatch) -> None:
    """On a GPU the loop reads a step's loss while the next step runs; forced on the CPU (with
    gradient accumulation, checkpoints inside a row window and at its end), every step is
    reported with the same tokens and loss, the checkpoints get the same training rows and the
    weights end the same as when each loss is read at once."""
    study = parse_study(micro_study(methods=[{"kind": "full", "lr": [1e-3]}],
                                    training={"batch_size": 8, "seq_len": 64, "grad_accum": 2},
                                    budgets={"steps": [4, 12]}))
    (run,) = expand(study)
    at_once = _trained_with_lag(run, 0, monkeypatch)
    late = _trained_with_lag(run, lag, monkeypatch)
    assert late[0] == at_once[0] and [e[0] for e in late[0]] == list(range(1, 13))
    assert late[1] == at_once[1] and len(late[1]) == 2
    assert {"loss", "lr"} <= {metric for _, _, metric, _ in late[1][1]}
    assert all(torch.equal(late[2][name], value) for name, value in at_once[2].items())
    assert late[3] == at_once[3] and late[3].status == "finished"


def test_a_nan_read_a_step_late_ends_the_run_at_its_own_step(monkeypatch) -> None:
    """A loss that turns NaN at step 5 (its first micro-batch) is found one step later on a GPU,
    but the run ends as diverged at step 5 with the tokens before it, as when read at once, and
    the steps before it were reported the same."""
    study = parse_study(micro_study(methods=[{"kind": "full", "lr": [1e-3]}],
                                    training={"batch_size": 8, "seq_len": 64, "grad_accum": 2},
                                    budgets={"steps": [12]}))
    (run,) = expand(study)
    at_once = _trained_with_lag(run, 0, monkeypatch, nan_at_call=11)
    late = _trained_with_lag(run, 1, monkeypatch, nan_at_call=11)
    assert (late[3].status, late[3].step) == ("diverged", 5)
    assert late[3] == at_once[3] and late[3].tokens == 5 * 8 * 64
    assert late[0] == at_once[0] and len(late[0]) == 5
