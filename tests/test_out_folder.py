"""OUT is self-contained: run folders say what they hold (run.json), and a LoRA checkpoint
loads with plain PEFT from OUT/base after the user's cache has moved away."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForCausalLM

from learnforget.builtin import builtin_folder
from learnforget.measure.base_measurement import base_run_id, measure_base
from learnforget.outbase import SOURCE_FILE, keep_base, point_adapter_at_base
from learnforget.plan import expand
from learnforget.runfiles import RUN_FILE, RunFilesStore, read_run_file
from learnforget.runner import execute_run
from learnforget.store import Store
from learnforget.study import BaseModelSpec, parse_study

torch.set_num_threads(1)


def _study(name: str = "out-test"):
    return parse_study({
        "name": name,
        "base": "builtin:micro",
        "target": {"domain": "code", "regime": "cpt"},
        "methods": [{"kind": "full", "lr": [1e-3], "train_embeddings": False},
                    {"kind": "lora", "lr": [5e-3], "r": [4], "targets": ["attention"]}],
        "training": {"batch_size": 4, "seq_len": 32},
        "budgets": {"steps": [1, 2]},
        "evaluation": {"learning": ["code_bpb"], "forgetting": [], "limit": 2,
                       "spectrum": False},
    })


@pytest.fixture(scope="module")
def study_out(tmp_path_factory) -> dict:
    """A micro study (one full, one LoRA run) trained into OUT with its own cache."""
    root = tmp_path_factory.mktemp("out-folder")
    cache = root / "cache"
    micro = builtin_folder("micro", log=lambda m: None)  # pretrained once in the usual cache
    shutil.copytree(micro, cache / "base" / micro.name)  # a cache of this test's own …
    for shared in ("data", "prepared"):  # … sharing the prepared corpora
        (micro.parents[1] / shared).mkdir(exist_ok=True)
        (cache / shared).symlink_to(micro.parents[1] / shared)
    patch = pytest.MonkeyPatch()
    patch.setenv("LEARNFORGET_CACHE", str(cache))
    try:
        study = _study()
        out = root / "OUT"
        measure_base(study, out, log=lambda m: None)
        statuses = {r.run_id: execute_run(study, r, out, log=lambda m: None)
                    for r in expand(study)}
    finally:
        patch.undo()
    return {"study": study, "out": out, "cache": cache, "statuses": statuses, "root": root}


def test_run_json_describes_each_run_folder(study_out: dict) -> None:
    out = study_out["out"]
    for run in expand(study_out["study"]):
        record = read_run_file(out / "runs" / run.run_id)
        assert record["run_id"] == run.run_id and record["study"] == "out-test"
        assert record["status"] == "finished" == study_out["statuses"][run.run_id]
        assert record["label"] == run.label and record["seed"] == 0
        assert record["lr"] == run.method.lr and record["method"]["kind"] == run.method.kind
        if run.method.kind == "lora":
            assert record["method"]["r"] == 4 and record["method"]["targets"] == "attention"
        else:
            assert record["method"]["train_embeddings"] is False and "r" not in record["method"]
        steps = [c["step"] for c in record["checkpoints"]]
        assert steps == [1, 2]
        store = Store(out / "results.sqlite")
        assert [c["tokens"] for c in record["checkpoints"]] == [
            c["tokens"] for c in store.checkpoints(run.run_id)]
        store.close()
        for checkpoint in record["checkpoints"]:
            assert checkpoint["tokens"] > 0
            assert checkpoint["folder"] == f"runs/{run.run_id}/checkpoint-{checkpoint['step']}"
            assert (out / checkpoint["folder"]).is_dir()
        assert record["base"] == {"model": "builtin:micro", "folder": "base"}


def test_run_json_follows_the_status(study_out: dict, tmp_path: Path) -> None:
    run = expand(study_out["study"])[0]
    store = Store(tmp_path / "results.sqlite")
    store.ensure_run(run.run_id, "s", run.method.kind, run.label, run.model_dump(mode="json"))
    files = RunFilesStore(store, run, "s", tmp_path)
    folder = tmp_path / "runs" / run.run_id
    assert read_run_file(folder)["status"] == "pending"
    files.set_status(run.run_id, "running")
    assert read_run_file(folder)["status"] == "running"
    files.record_checkpoint(run.run_id, 5, 640, str(folder / "checkpoint-5"), [])
    assert read_run_file(folder)["checkpoints"] == [
        {"step": 5, "tokens": 640, "folder": f"runs/{run.run_id}/checkpoint-5"}]
    files.set_status(run.run_id, "failed", "Traceback (most recent call last):\n  ...\n"
                                           "ValueError: boom\n")
    record = read_run_file(folder)
    assert record["status"] == "failed" and record["error"] == "ValueError: boom"
    assert record["base"]["folder"] is None  # no OUT/base in this folder
    files.close()


def test_a_lora_checkpoint_loads_with_plain_peft_after_the_cache_moves(study_out: dict,
                                                                       monkeypatch) -> None:
    out = study_out["out"]
    lora = next(r for r in expand(study_out["study"]) if r.method.kind == "lora")
    adapter = out / "runs" / lora.run_id / "checkpoint-2"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == (out / "base").resolve()
    assert (out / "base" / "config.json").is_file() and (out / "base" / SOURCE_FILE).is_file()
    # move the cache (and OUT's folder of origin) away: only OUT/base remains
    moved = study_out["root"] / "cache-moved"
    shutil.move(study_out["cache"], moved)
    monkeypatch.setenv("LEARNFORGET_CACHE", str(study_out["root"] / "empty-cache"))
    try:
        model = AutoPeftModelForCausalLM.from_pretrained(str(adapter))
        logits = model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    finally:
        shutil.move(moved, study_out["cache"])
    assert logits.shape[:2] == (1, 4) and torch.isfinite(logits).all()
    assert not (study_out["root"] / "empty-cache" / "base").exists()


def test_keep_base_leaves_hub_ids_and_reuses_the_saved_folder(study_out: dict,
                                                               tmp_path: Path) -> None:
    out = study_out["out"]
    before = (out / "base" / "model.safetensors").stat().st_mtime_ns
    assert keep_base(study_out["study"].base, out) == out / "base"
    assert (out / "base" / "model.safetensors").stat().st_mtime_ns == before
    # another base in the same OUT is not written over
    other = BaseModelSpec(model=str(out / "base"))
    assert keep_base(other, out, log=lambda m: None) is None
    # a full-finetuning checkpoint is a whole model: nothing to point
    point_adapter_at_base(tmp_path, out / "base")
    assert not (tmp_path / "adapter_config.json").exists()
    assert RUN_FILE == "run.json"


def test_every_checkpoint_stores_the_per_item_values_behind_its_scores(study_out: dict) -> None:
    from learnforget.measure.uncertainty import BITS, BYTES, ITEMS_KIND_PREFIX, ratio_stderr

    store = Store(study_out["out"] / "results.sqlite")
    items = {(r["run_id"], r["step"], r["kind"]): r["data"]
             for r in store.artifacts_with_prefix(ITEMS_KIND_PREFIX)}
    scores = {(m["run_id"], m["step"], m["metric"]): m["value"]
              for m in store.measurements() if m["task"] == "code_bpb"}
    store.close()
    runs = [r.run_id for r in expand(study_out["study"])]
    measured = {(run_id, step) for run_id, step, _ in scores}
    base = base_run_id(study_out["study"])
    assert measured == {(run_id, step) for run_id in runs for step in (1, 2)} | {(base, 0)}
    for run_id, step in measured:
        values = items[(run_id, step, "items:code_bpb")]
        assert len(values[BITS]) == len(values[BYTES]) == scores[(run_id, step, "n")] == 2
        # the stored score and its standard error are those of the stored items
        assert sum(values[BITS]) / sum(values[BYTES]) == pytest.approx(
            scores[(run_id, step, "bpb")], rel=1e-9)
        assert ratio_stderr(values[BITS], values[BYTES]) == pytest.approx(
            scores[(run_id, step, "bpb_stderr")], rel=1e-9)
