"""Bad input and broken files end in one error line naming the problem and the fix, a non-zero
exit and no traceback (``--debug`` shows it); studies are checked before OUT is created."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from learnforget.cli import app
from learnforget.data.loaders import load_documents
from learnforget.data.target import load_target
from learnforget.errors import UserError
from learnforget.measure.weight_change import changed_matrices
from learnforget.plan import expand
from learnforget.store import Measurement, Store
from learnforget.study import load_studies, parse_study

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MICRO = yaml.safe_load((EXAMPLES / "micro.yaml").read_text())
NO_GPU = not torch.cuda.is_available()


def invoke(*args: object, env: dict | None = None):
    """Run the CLI in-process."""
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def assert_one_error(result, *expected: str, status: int | None = None) -> str:
    """A non-zero exit without a traceback, one ``error:`` line holding every ``expected``."""
    assert result.exit_code != 0, result.output
    if status is not None:
        assert result.exit_code == status, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}")
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for text in expected:
        assert text in result.output, (text, result.output)
    return result.output


def write_study(path: Path, **changes: object) -> Path:
    """The micro example study with top-level ``changes``, written to ``path``."""
    path.write_text(yaml.safe_dump({**MICRO, **changes}))
    return path


# --- the output folder ---------------------------------------------------------------------
def test_out_that_is_a_file_is_refused_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.write_text("not a folder")
    result = invoke("run", EXAMPLES / "micro.yaml", "--out", out)
    assert_one_error(result, str(out), "existing file")
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("out", ["/proc/learnforget-out", "/sys/kernel/learnforget-out"])
def test_out_in_a_system_folder_is_refused(out: str) -> None:
    assert_one_error(invoke("run", EXAMPLES / "micro.yaml", "--out", out), out, "system folder")


def test_out_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            result = invoke("run", EXAMPLES / "micro.yaml", "--out", locked / "out")
        finally:
            locked.chmod(0o700)
        assert_one_error(result, "cannot be created", "write")
        return
    mount = tmp_path / "read-only"  # root writes anywhere but on a read-only mount
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip("running as root, and no read-only file system can be mounted here")
    try:
        result = invoke("run", EXAMPLES / "micro.yaml", "--out", mount / "out")
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    assert_one_error(result, str(mount / "out"), "read-only")


# --- the results store ---------------------------------------------------------------------
def _good_store(path: Path) -> None:
    store = Store(path)
    for index in range(40):
        store.ensure_run(f"r{index}", "s", "full", "full", {"pad": "x" * 400})
        store.record_checkpoint(f"r{index}", 1, 10, None, [(1, 10, Measurement("t", "m", 0.5))],
                                {"spectrum": {"pad": "y" * 1500}})
    store.close()


@pytest.mark.parametrize("damage", ["directory", "garbage", "truncated"])
def test_a_broken_results_store_is_a_user_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "results.sqlite"
    if damage == "directory":
        path.mkdir()
    elif damage == "garbage":
        path.write_bytes(b"not sqlite at all " * 64)
    else:
        _good_store(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="results"):
        Store(path)


def test_run_into_a_folder_with_a_corrupt_store_exits_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.sqlite").write_bytes(b"\x00garbage" * 200)
    assert_one_error(invoke("run", EXAMPLES / "micro.yaml", "--out", out), "results.sqlite")


# --- study files ---------------------------------------------------------------------------
def test_binary_study_file(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    for command in ("plan", "run"):
        assert_one_error(invoke(command, path), str(path), "not a text file")


def test_a_folder_given_as_the_study(tmp_path: Path) -> None:
    assert_one_error(invoke("plan", tmp_path), str(tmp_path), "is a folder")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_learning_rate_is_named_as_such(tmp_path: Path, value: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text((EXAMPLES / "micro.yaml").read_text().replace("lr: [1e-3]", f"lr: [{value}]"))
    output = assert_one_error(invoke("plan", path), "methods.0", "finite number")
    assert "less than 1" not in output


def test_duplicate_yaml_keys_name_the_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: a\nworkers: 1\nbase: builtin:micro\nworkers: 2\n")
    assert_one_error(invoke("plan", path), "duplicate key 'workers'", "line 4", "first on line 2")
    nested = tmp_path / "nested.yaml"
    nested.write_text((EXAMPLES / "micro.yaml").read_text().replace(
        "training: {batch_size: 8,", "training: {batch_size: 8, batch_size: 4,"))
    with pytest.raises(UserError, match="duplicate key 'batch_size'"):
        load_studies(nested)


@pytest.mark.parametrize(("methods", "where"), [
    ([{"kind": "full", "lr": [1e-3, 1e-3]}], "methods[0] twice"),
    ([{"kind": "full", "lr": 1e-3}, {"kind": "lora", "lr": 1e-3},
      {"kind": "full", "lr": [3e-4, 1e-3]}], "methods[0] and methods[2]"),
])
def test_duplicate_run_definitions_are_named(methods: list, where: str) -> None:
    with pytest.raises(UserError, match=rf"{re.escape(where)}.*full, lr 0.001"):
        expand(parse_study({**MICRO, "methods": methods}))


def test_token_budgets_on_one_step_are_rejected() -> None:
    # code CPT packs batch_size 8 x seq_len 128 = 1024 tokens per step
    study = {**MICRO, "budgets": {"tokens": [1500, 2048, 9000]}}
    with pytest.raises(UserError, match="budgets.tokens 1500 and 2048 both fall on step 2"):
        parse_study(study)
    parse_study({**MICRO, "budgets": {"tokens": [2048, 3072]}})


def test_seq_len_beyond_the_models_positions_is_refused_at_plan(tmp_path: Path) -> None:
    path = write_study(tmp_path / "s.yaml", training={"batch_size": 8, "seq_len": 4096})
    assert_one_error(invoke("plan", path), "training.seq_len 4096", "128")


def test_plan_checks_tasks_device_and_data(tmp_path: Path) -> None:
    tasks = write_study(tmp_path / "tasks.yaml", evaluation={"learning": ["no_such_task"]})
    assert_one_error(invoke("plan", tasks), "evaluation", "'no_such_task'")
    device = write_study(tmp_path / "device.yaml", base={"model": "builtin:micro", "device": "tpu"})
    assert_one_error(invoke("plan", device), "base.device", "'tpu'")
    missing = tmp_path / "missing.jsonl"
    data = write_study(tmp_path / "data.yaml",
                       target={"domain": "custom", "regime": "cpt", "data": str(missing)})
    assert_one_error(invoke("plan", data), str(missing))


@pytest.mark.skipif(not NO_GPU, reason="this machine has a CUDA GPU")
def test_cuda_on_a_machine_without_one(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s.yaml", base={"model": "builtin:micro", "device": "cuda"})
    assert_one_error(invoke("plan", study), "base.device 'cuda'", "no CUDA GPU")
    out = tmp_path / "out"
    assert_one_error(invoke("run", study, "--out", out), "base.device 'cuda'")
    assert not out.exists()
    assert_one_error(invoke("eval", "-m", "builtin:micro", "--device", "cuda"),
                     "--device 'cuda'", "cpu or auto")


def test_run_validates_everything_before_creating_out(tmp_path: Path) -> None:
    missing = tmp_path / "nothere.jsonl"
    study = write_study(tmp_path / "s.yaml",
                        target={"domain": "custom", "regime": "cpt", "data": str(missing)})
    out = tmp_path / "out"
    assert_one_error(invoke("run", study, "--out", out), str(missing))
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = invoke("--debug", "plan", tmp_path)
    assert isinstance(result.exception, UserError)
    assert "error:" not in result.output


# --- custom data fields --------------------------------------------------------------------
def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_text_field_is_a_study_field(tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "d.jsonl", [{"content": f"document number {i} " * 5}
                                         for i in range(30)])
    study = parse_study({**MICRO, "target": {"domain": "custom", "regime": "cpt",
                                             "data": str(data), "text_field": "content"}})
    loaded = load_target(study.target)
    assert len(loaded.documents) + len(loaded.heldout_documents) == 30


def test_records_missing_the_text_field_are_counted(tmp_path: Path, caplog) -> None:
    records = [{"text": f"doc {i}"} if i % 3 else {"body": f"doc {i}"} for i in range(12)]
    data = _jsonl(tmp_path / "d.jsonl", records)
    with caplog.at_level(logging.WARNING, logger="learnforget.data.loaders"):
        documents = list(load_documents(str(data)))
    assert len(documents) == 8
    assert "4 of 12 records" in caplog.text and "'text'" in caplog.text
    none = _jsonl(tmp_path / "none.jsonl", [{"body": "x"}] * 5)
    with pytest.raises(UserError, match=r"\['body'\].*expected 'text'"):
        list(load_documents(str(none)))


# --- hub ids without network ---------------------------------------------------------------
@pytest.mark.parametrize("env", [{"HF_ENDPOINT": "http://127.0.0.1:9"}, {"HF_HUB_OFFLINE": "1"}])
def test_hub_id_without_network_fails_in_seconds(env: dict) -> None:
    started = time.time()
    result = invoke("eval", "-m", "someone/not-cached-model", "--tasks", "source_bpb", env=env)
    assert time.time() - started < 10
    assert_one_error(result, "'someone/not-cached-model'", "out of reach", "local folder")


# --- checkpoints, adapters and spectra (tiny random Llamas saved to folders) ------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory, scoring_tokenizer) -> dict[str, Path]:
    """Model folders: base (with and without tokenizer), tuned, deeper, wider, a truncated copy
    and a LoRA adapter made for the wider model."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("models")
    torch.set_num_threads(1)

    def model(layers: int = 2, hidden: int = 32) -> LlamaForCausalLM:
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=len(scoring_tokenizer), hidden_size=hidden, intermediate_size=64,
            num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
            max_position_embeddings=64, tie_word_embeddings=False,
            eos_token_id=scoring_tokenizer.eos_token_id))

    paths = {name: root / name for name in ("base", "base_tok", "tuned", "deep", "wide",
                                            "truncated", "adapter")}
    model().save_pretrained(paths["base"])
    model().save_pretrained(paths["base_tok"])
    scoring_tokenizer.save_pretrained(paths["base_tok"])
    tuned = model()
    with torch.no_grad():
        for param in tuned.parameters():
            param.add_(0.01 * torch.randn_like(param))
    tuned.save_pretrained(paths["tuned"])
    model(layers=3).save_pretrained(paths["deep"])
    model(hidden=48).save_pretrained(paths["wide"])
    shutil.copytree(paths["base_tok"], paths["truncated"])
    weights = paths["truncated"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    lora = get_peft_model(model(hidden=48), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(paths["adapter"])
    return paths


def test_truncated_checkpoint_in_eval_and_spectrum(folders: dict[str, Path]) -> None:
    truncated = folders["truncated"]
    assert_one_error(invoke("eval", "-m", truncated, "--tasks", "source_bpb", "--device", "cpu"),
                     str(truncated), "truncated or corrupt")
    assert_one_error(invoke("spectrum", "--base", folders["base"], "--tuned", truncated),
                     str(truncated), "truncated or corrupt")


def test_adapter_for_another_base_in_eval_and_spectrum(folders: dict[str, Path]) -> None:
    adapter = folders["adapter"]
    assert_one_error(invoke("eval", "-m", folders["base_tok"], "--adapter", adapter,
                            "--tasks", "source_bpb", "--device", "cpu"),
                     str(adapter), "another base model", "size mismatch")
    assert_one_error(invoke("spectrum", "--base", folders["base"], "--adapter", adapter),
                     str(adapter), "another base model")


def test_spectrum_needs_no_tokenizer(folders: dict[str, Path]) -> None:
    result = invoke("spectrum", "--base", folders["base"], "--tuned", folders["tuned"],
                    "--intruder-k", "2", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout[result.stdout.index("["):])
    assert {row["name"] for row in rows} >= {"model.layers.1.self_attn.q_proj.weight"}


def test_spectrum_refuses_other_depth_and_shapes(folders: dict[str, Path]) -> None:
    assert_one_error(invoke("spectrum", "--base", folders["base"], "--tuned", folders["deep"]),
                     "only the tuned model has layers 2")
    assert_one_error(invoke("spectrum", "--base", folders["base"], "--tuned", folders["wide"]),
                     "in the base but (48, 64) in the tuned model")
    base = {"model.layers.0.mlp.up_proj.weight": torch.zeros(8, 4)}
    with pytest.raises(UserError, match=r"up_proj.weight is \(8, 4\) .* \(8, 6\)"):
        changed_matrices(base, {"model.layers.0.mlp.up_proj.weight": torch.ones(8, 6)})


def test_binary_samples_file_for_score_code(tmp_path: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    samples.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 50)
    assert_one_error(invoke("score-code", samples), str(samples), "not a text file")


def test_budgets_on_one_step_of_the_data_are_named(caplog) -> None:
    from learnforget.data.batches import BatchStream
    from learnforget.data.prepare import checkpoint_steps

    study = parse_study({**MICRO, "target": {"domain": "math", "regime": "ift"},
                         "budgets": {"epochs": [0.5, 0.52, 1]}})
    (run,) = [r for r in expand(study) if r.method.kind == "full"]
    stream = BatchStream(torch.ones(80, 16, dtype=torch.long), 8, 0, 0)  # 10 steps per epoch
    with caplog.at_level(logging.WARNING, logger="learnforget.data.prepare"):
        assert checkpoint_steps(run, stream) == [5, 10]
    assert "budgets.epochs 0.5 and 0.52 both fall on step 5" in caplog.text


def test_a_huge_batch_is_planned_by_arithmetic_not_enumeration(tmp_path: Path) -> None:
    # batch_size 10¹²: the memory fit search looped over range(batch_size) and never ended
    from learnforget.memory_estimate import divisors

    assert divisors(12) == [1, 2, 3, 4, 6, 12]
    assert len(divisors(10**12)) == 169 and divisors(10**12)[-1] == 10**12
    study = {"name": "big", "base": "builtin:micro", "target": {"domain": "code", "regime": "cpt"},
             "methods": [{"kind": "full", "lr": [1e-3]}], "budgets": {"steps": [2]},
             "training": {"batch_size": 10**12, "seq_len": 64}}
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(study))
    started = time.monotonic()
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 60
    # the first accumulation that fits depends on this machine's memory: any divisor will do
    accum = re.search(r"training\.grad_accum: (\d+)", " ".join(result.output.split()))
    assert accum and 10**12 % int(accum.group(1)) == 0, result.output


WIDE_LORA = {"kind": "lora", "r": list(range(1, 301)),
             "lr": [1e-3 * (i + 1) / 400 for i in range(300)]}  # 300 × 300 = 90,000 runs


@pytest.mark.parametrize("change", [{"training": {"seeds": list(range(100_000))}},
                                    {"methods": [WIDE_LORA]}])
def test_a_grid_past_its_limit_is_refused_with_its_size(change: dict) -> None:
    from learnforget.study import parse_study

    data = {"name": "grid", "base": "builtin:micro",
            "target": {"domain": "code", "regime": "cpt"},
            "methods": [{"kind": "full", "lr": [1e-3]}], "budgets": {"steps": [2]}, **change}
    started = time.monotonic()
    with pytest.raises(UserError) as error:
        parse_study(data)
    assert time.monotonic() - started < 5
    assert "runs" in str(error.value) and "more than 10,000" in str(error.value)
    assert "100,000 runs" in str(error.value) or "90,000 runs" in str(error.value)


def _micro_study(tmp_path: Path, **extra) -> Path:
    study = {"name": "small", "base": "builtin:micro",
             "target": {"domain": "code", "regime": "cpt"},
             "methods": [{"kind": "full", "lr": [1e-3]}], "budgets": {"steps": [2]},
             "training": {"seq_len": 64}, **extra}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.mark.parametrize("extra, field", [
    ({"optimizer": {"betas": [1.5, 0.9]}}, "optimizer.betas.0"),
    ({"optimizer": {"betas": [0.9, -0.1]}}, "optimizer.betas.1"),
    ({"training": {"seeds": [2**70], "seq_len": 64}}, "training.seeds.0"),
    ({"training": {"seeds": [-1], "seq_len": 64}}, "training.seeds.0"),
])
def test_values_torch_would_refuse_later_are_refused_by_plan(tmp_path: Path, extra: dict,
                                                             field: str) -> None:
    result = CliRunner().invoke(app, ["plan", str(_micro_study(tmp_path, **extra))])
    assert result.exit_code == 2, result.output
    assert field in result.output and "Traceback" not in result.output


def test_an_empty_out_is_refused_instead_of_writing_into_this_folder(tmp_path: Path,
                                                                     monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", str(_micro_study(tmp_path)), "--out", ""])
    assert result.exit_code == 2, result.output
    assert "--out is empty" in result.output
    assert not (tmp_path / "study.json").exists() and not (tmp_path / "results.sqlite").exists()


def test_an_out_whose_study_json_is_not_a_study_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.json").write_text("[1, 2, 3]")
    result = CliRunner().invoke(app, ["run", str(_micro_study(tmp_path)), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "is not a study record" in result.output and "--force-new-study" in result.output
    assert (out / "study.json").read_text() == "[1, 2, 3]"


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_deeply_nested_record_is_refused_with_its_line_not_a_crash(tmp_path: Path,
                                                                   suffix: str) -> None:
    # 20,000 levels crashed the JSON reader behind `datasets` (exit 139, no message); the
    # scan runs in a separate process here so that a regression cannot take the tests down
    import sys

    deep = "[" * 20_000 + "]" * 20_000
    rows = [{"text": "fine"}, {"text": "fine too"}]
    body = ("".join(json.dumps(r) + "\n" for r in rows) + '{"text": ' + deep + "}\n"
            if suffix == ".jsonl" else
            "[\n" + ",\n".join(json.dumps(r) for r in rows) + ',\n{"text": ' + deep + "}\n]")
    data = tmp_path / f"deep{suffix}"
    data.write_text(body)
    study = {"name": "deep", "base": "builtin:micro",
             "target": {"domain": "custom", "regime": "cpt", "data": str(data)},
             "methods": [{"kind": "full", "lr": [1e-3]}], "budgets": {"steps": [2]},
             "training": {"seq_len": 64}}
    path = tmp_path / "deep.yaml"
    path.write_text(yaml.safe_dump(study))
    result = subprocess.run([sys.executable, "-m", "learnforget", "plan", str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    line = 3 if suffix == ".jsonl" else 4  # the array's "[" is line 1
    assert f"Line {line} of {data}" in result.stderr + result.stdout
    assert "nests deeper than 100 levels" in result.stderr + result.stdout


@pytest.mark.parametrize("content", ["garbage: [1, 2\n", "\x00\x01binary", "foo: bar\n",
                                     "- 1\n- 2\n"])
def test_a_garbage_accelerate_config_is_named_before_anything_launches(tmp_path: Path,
                                                                       content: str) -> None:
    config = tmp_path / "accelerate.yaml"
    config.write_text(content)
    result = CliRunner().invoke(app, ["run", str(_micro_study(tmp_path)), "--launcher",
                                      "accelerate", "--accelerate-config", str(config)])
    assert result.exit_code == 2, result.output
    assert "is not an accelerate config" in result.output and "Traceback" not in result.output


def test_a_study_nested_thousands_of_levels_deep_is_named(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 2, result.output
    assert "nests lists or mappings thousands of levels deep" in result.output


@pytest.mark.parametrize("timeout", ["nan", "inf", "0", "-1"])
def test_score_code_refuses_a_timeout_that_is_not_a_positive_number(tmp_path: Path,
                                                                    timeout: str) -> None:
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return True\n"})
                       + "\n")
    result = CliRunner().invoke(app, ["score-code", str(samples), "--timeout", timeout])
    assert result.exit_code == 2, result.output
    assert "--timeout must be a positive number of seconds" in result.output


def test_score_code_says_which_pass_at_k_it_could_not_compute(tmp_path: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return True\n"})
                       + "\n")
    result = CliRunner().invoke(app, ["score-code", str(samples), "--k", "1,10"])
    assert result.exit_code == 0, result.output
    assert "pass@10 not computed" in result.output and "the fewest here: 1" in result.output
    assert '"pass@1": 0.0' in result.output


def _damaged_store(tmp_path: Path, sql: str | None = None, study_json: bytes | None = None
                   ) -> Path:
    """A small real store (``claim_studies``) with one piece damaged."""
    import sqlite3

    from claim_studies import FULL_LORA, PLAIN, write_study

    out = write_study(tmp_path / "out", FULL_LORA, PLAIN,
                      artifacts={"full": [{"items:code_bpb": {"bits": [1.0, 2.0],
                                                              "bytes": [1.0, 1.0]}}] * 2})
    if sql is not None:
        with sqlite3.connect(out / "results.sqlite") as db:
            db.execute(sql)
    if study_json is not None:
        (out / "study.json").write_bytes(study_json)
    return out


@pytest.mark.parametrize("sql, message", [
    ("UPDATE measurements SET value='abc' WHERE rowid IN (SELECT rowid FROM measurements "
     "WHERE run_id != 'base-x' LIMIT 1)", "holds 'abc', not a number"),
    ("UPDATE runs SET config_json='garbage{' WHERE run_id != 'base-x'",
     "(runs.config_json) are not a JSON object"),
    ("UPDATE runs SET config_json='[1, 2]' WHERE run_id != 'base-x'",
     "(runs.config_json) are not a JSON object"),
])
def test_a_damaged_store_is_named_not_reported_as_unexpected(tmp_path: Path, sql: str,
                                                             message: str) -> None:
    out = _damaged_store(tmp_path, sql)
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "the store is damaged" in result.output
    assert "unexpected" not in result.output


def test_damaged_artifacts_binary_study_json_or_infinite_values_still_give_a_report(
        tmp_path: Path, caplog) -> None:
    out = _damaged_store(tmp_path / "a", "UPDATE artifacts SET json='garbage{'")
    with caplog.at_level(logging.WARNING, logger="learnforget.store"):
        result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "is not JSON (the store is damaged): left out" in caplog.text
    assert (out / "report" / "index.html").is_file()
    out = _damaged_store(tmp_path / "b", study_json=bytes(range(256)))
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    out = _damaged_store(tmp_path / "c", "UPDATE measurements SET value=9e999 WHERE rowid IN "
                         "(SELECT rowid FROM measurements WHERE run_id != 'base-x' LIMIT 3)")
    result = CliRunner().invoke(app, ["report", str(out)])  # an infinite value, as text reads
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("head", [b"", b"GGUF"])
def test_a_garbage_gguf_base_is_named_as_a_file_not_as_a_hub_id(tmp_path: Path,
                                                                  head: bytes) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(head + bytes(range(256)) * 8)
    result = CliRunner().invoke(app, ["eval", "--model", str(gguf), "--tasks", "source_bpb",
                                      "--limit", "2"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"could not load the GGUF file {gguf}" in text and "hub" not in text


@pytest.mark.parametrize("address", ["ray://127.0.0.1:9", "127.0.0.1:9", "ray://nohost"])
def test_an_unreachable_ray_address_is_found_before_any_work(tmp_path: Path, address: str
                                                             ) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    result = CliRunner().invoke(app, ["run", str(_micro_study(tmp_path)), "--out", str(out),
                                      "--executor", "ray", "--ray-address", address])
    assert result.exit_code == 2, result.output
    assert time.monotonic() - started < 20
    assert "--ray-address" in result.output or "no Ray cluster reachable" in result.output
    assert not (out / "results.sqlite").exists()  # the base model was not measured


def test_eval_with_no_tasks_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "--model", "builtin:micro", "--tasks", ""])
    assert result.exit_code == 2, result.output
    assert "--tasks is empty" in result.output


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_study_path_that_is_not_a_file_is_named_as_such(tmp_path: Path, special: str) -> None:
    path = Path(special)
    if special == "fifo":
        path = tmp_path / "study.yaml"
        os.mkfifo(path)
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 2, result.output
    assert "is not a regular file" in result.output and "does not exist" not in result.output


def test_a_text_field_that_is_null_everywhere_is_named(tmp_path: Path) -> None:
    data = tmp_path / "docs.jsonl"
    data.write_text('{"text": null}\n' * 3)
    with pytest.raises(UserError) as error:
        list(load_documents(str(data)))
    assert "'text' is null in every record read (3)" in str(error.value)


@pytest.mark.parametrize("condition", ["read-only", "full"])
def test_report_on_a_read_only_or_full_out_says_so_not_that_the_store_is_damaged(
        tmp_path: Path, monkeypatch, condition: str) -> None:
    # the file-system conditions themselves need privileges to create (a read-only mount, a
    # full disk), so the two probes the check reads are set here; the store is a real one
    out = _damaged_store(tmp_path)
    if condition == "read-only":
        monkeypatch.setattr("learnforget.preflight.read_only_mount", lambda folder: True)
    else:
        usage = shutil.disk_usage(out)
        monkeypatch.setattr("learnforget.outdir.shutil.disk_usage",
                            lambda path: usage._replace(free=1024))
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "its store is fine" in text and "damaged" not in text and "unreadable" not in text
    assert ("is read-only" in text) if condition == "read-only" else ("is full" in text)
