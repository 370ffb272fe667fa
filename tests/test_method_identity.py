"""A method is its whole setting: runs that differ in any setting (α, dropout, weight decay, …)
get different labels, and the analysis compares them apart, also in stores written before labels
held those settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from learnforget.analysis.best_lr import lr_table
from learnforget.analysis.claim_data import is_paper_lora
from learnforget.analysis.frame import load_frame
from learnforget.plan import RunConfig, expand
from learnforget.store import Measurement, Store
from learnforget.study import parse_study

# LoRA r=8 on all modules as the paper trains it, and three variants each changing one setting
VARIANTS = [{"kind": "lora", "r": [8], "lr": [1e-2]},
            {"kind": "lora", "r": [8], "lr": [1e-2], "dropout": 0.1},
            {"kind": "lora", "r": [8], "lr": [1e-2], "weight_decay": 0.1},
            {"kind": "lora", "r": [8], "lr": [1e-2], "alpha": 8}]
VARIANT_LABELS = ["lora-r8-all", "lora-r8-all-drop0.1", "lora-r8-all-wd0.1", "lora-r8-all-a8"]
POINTS = [(0.05, 0.01), (0.12, 0.02)]  # (learn, forget) at each of STEPS
STEPS = (4, 8)
TOKENS_PER_STEP = 1024

# every kind of default-setting label, with the run id it had before labels held α, dropout and
# LoRA weight decay (ids are hashes of the config, never of the label)
DEFAULTS_STUDY = {
    "name": "defaults", "base": "builtin:micro", "target": {"domain": "code", "regime": "cpt"},
    "methods": [
        {"kind": "full", "lr": [1e-3], "weight_decay": [0.0, 0.1], "attention_dropout": [0.0, 0.1]},
        {"kind": "full", "lr": [1e-3], "train_embeddings": False, "optimizer": ["adamw", "lion"]},
        {"kind": "lora", "lr": [1e-3], "r": [8, 64], "targets": ["attention", "mlp", "all"],
         "optimizer": ["adamw", "lion"]},
        {"kind": "lora", "lr": [1e-3], "r": [16], "use_rslora": True},
        {"kind": "lora", "lr": [1e-3], "r": [16], "use_dora": True},
        {"kind": "lora", "lr": [1e-3], "r": [16], "init": "pissa"},
        {"kind": "lora", "lr": [1e-3], "r": [4], "alpha": 8},  # α given as 2r: the default
    ],
    "budgets": {"steps": [4, 8]},
}
DEFAULT_RUNS = [
    ("full", "7d988b0622ef"), ("full-drop0.1", "c5e54d391a64"), ("full-wd0.1", "ccbe62013c5b"),
    ("full-wd0.1-drop0.1", "c6a605b6d02a"), ("full-frozen-emb", "699983d30eaf"),
    ("full-frozen-emb-lion", "42a3109bc1bd"), ("lora-r8-attention", "139635866f08"),
    ("lora-r8-attention-lion", "ce9ae25d85d7"), ("lora-r8-mlp", "bf0ae305a526"),
    ("lora-r8-mlp-lion", "b0de6388ff6a"), ("lora-r8-all", "b82b3595a789"),
    ("lora-r8-all-lion", "d3bf6cc42869"), ("lora-r64-attention", "f9c1d0edfd10"),
    ("lora-r64-attention-lion", "2352ac60078f"), ("lora-r64-mlp", "a8497c5c4b8e"),
    ("lora-r64-mlp-lion", "cb5d44f4422d"), ("lora-r64-all", "af8aee6e062d"),
    ("lora-r64-all-lion", "f10cbf4ee33f"), ("lora-r16-all-rs", "1126b84c83b7"),
    ("lora-r16-all-dora", "dcf5387a7870"), ("lora-r16-all-pissa", "0914e9d0e93d"),
    ("lora-r4-all", "175685c14043"),
]


def _variants_study(name: str = "identity"):
    """The study of ``VARIANTS`` (one seed, code CPT, two checkpoints)."""
    return parse_study({
        "name": name, "base": "builtin:micro", "target": {"domain": "code", "regime": "cpt"},
        "methods": VARIANTS, "budgets": {"steps": list(STEPS)},
        "evaluation": {"learning": ["code_bpb"], "forgetting": ["source_bpb"]}})


def test_default_labels_and_run_ids_are_unchanged() -> None:
    runs = expand(parse_study(DEFAULTS_STUDY))
    assert [(run.label, run.run_id) for run in runs] == DEFAULT_RUNS


def test_every_setting_that_differs_is_in_the_label() -> None:
    runs = expand(_variants_study())
    assert [run.label for run in runs] == VARIANT_LABELS
    both = parse_study({**DEFAULTS_STUDY, "methods": [
        {"kind": "lora", "lr": [1e-3], "r": [16], "alpha": 4, "dropout": 0.05,
         "weight_decay": 0.01, "use_dora": True, "optimizer": ["lion"]}]})
    assert [run.label for run in expand(both)] == ["lora-r16-all-dora-a4-drop0.05-wd0.01-lion"]


def test_variants_are_methods_of_their_own(tmp_path: Path) -> None:
    _write_store(tmp_path, lambda run: run.label)
    frame = load_frame(tmp_path)
    methods = frame.methods
    assert sorted(methods.index) == sorted(VARIANT_LABELS)
    assert methods["name"].is_unique
    assert frame.runs.groupby("label")["seed"].nunique().to_dict() == dict.fromkeys(
        VARIANT_LABELS, 1)
    assert frame.runs.groupby("label").size().to_dict() == dict.fromkeys(VARIANT_LABELS, 1)
    assert methods.at["lora-r8-all-drop0.1", "dropout"] == 0.1
    assert methods.at["lora-r8-all-wd0.1", "weight_decay"] == 0.1
    assert methods.at["lora-r8-all-a8", "alpha"] == 8.0
    assert methods.at["lora-r8-all", "alpha"] == 16.0


def test_only_the_plain_variant_is_the_papers_lora(tmp_path: Path) -> None:
    _write_store(tmp_path, lambda run: run.label)
    frame = load_frame(tmp_path)
    methods = frame.methods
    assert [label for label in methods.index if is_paper_lora(methods.loc[label])] == [
        "lora-r8-all"]


def _write_store(out: Path, label_of: Callable[[RunConfig], str]) -> list[str]:
    """OUT with study.json and a real store holding the base model and the runs of
    ``VARIANTS``, each recorded under ``label_of(run)`` with two checkpoints (code bits per byte
    3 − learn, source bits per byte 2 + forget) and a training loss; the runs' ids."""
    study = _variants_study()
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(study.model_dump_json())
    store = Store(out / "results.sqlite")
    store.ensure_run("base-x", study.name, "base", "base", {"base": {}})
    store.record_checkpoint("base-x", 0, 0, None,
                            [(0, 0, Measurement("code_bpb", "bpb", 3.0)),
                             (0, 0, Measurement("source_bpb", "bpb", 2.0))])
    store.set_status("base-x", "finished")
    ids = []
    for run in expand(study):
        store.ensure_run(run.run_id, study.name, run.method.kind, label_of(run),
                         run.model_dump(mode="json"))
        for step, (learn, forget) in zip(STEPS, POINTS, strict=True):
            tokens = step * TOKENS_PER_STEP
            rows = [Measurement("code_bpb", "bpb", 3.0 - learn),
                    Measurement("source_bpb", "bpb", 2.0 + forget),
                    Measurement("train", "loss", 4.0 - learn)]
            store.record_checkpoint(run.run_id, step, tokens, None,
                                    [(step, tokens, m) for m in rows])
        store.set_status(run.run_id, "finished")
        ids.append(run.run_id)
    store.close()
    return ids


def test_a_merged_label_of_an_old_store_is_split(tmp_path: Path) -> None:
    ids = _write_store(tmp_path, lambda run: "lora-r8-all")  # the label all four once got
    frame = load_frame(tmp_path)
    expected = dict(zip(ids, VARIANT_LABELS, strict=True))
    assert dict(zip(frame.runs["run_id"], frame.runs["label"], strict=True)) == expected
    for table in (frame.checkpoints, frame.train):
        assert len(table) == 2 * len(ids)
        assert {row.run_id: row.label for row in table.itertuples()} == expected
    assert sorted(frame.methods.index) == sorted(VARIANT_LABELS)
    assert sorted(frame.labels) == sorted(VARIANT_LABELS)
    lrs = lr_table(frame).set_index("label")
    assert lrs["runs"].to_dict() == dict.fromkeys(VARIANT_LABELS, 1)


def test_a_label_whose_config_is_no_method_setting_is_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "results.sqlite")
    store.ensure_run("old", "s", "lora", "lora-r8-all",
                     {"method": {"kind": "lora", "lr": "not a number", "r": 8}, "seed": 0})
    store.ensure_run("base-x", "s", "base", "base", {"base": {}})
    store.close()
    frame = load_frame(tmp_path)
    assert frame.runs["label"].tolist() == ["lora-r8-all"]
