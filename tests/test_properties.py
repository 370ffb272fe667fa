"""Property-based tests: study files (valid, with mutated fields, garbage bytes) and CLI argument
sets, run in-process, never end in a traceback or an unexpected error, and every error line
names a field or a path.

The default run stops after a few dozen examples per property (about half a minute). A longer
search, e.g. before a release:

    LEARNFORGET_PROPERTY_EXAMPLES=2000 OMP_NUM_THREADS=1 \\
        .venv/bin/python -m pytest tests/test_properties.py -p no:cacheprovider
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from learnforget.cli import app
from learnforget.study import Study

EXAMPLES = int(os.environ.get("LEARNFORGET_PROPERTY_EXAMPLES", "25"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 25,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ROOT = Path(tempfile.mkdtemp(prefix="learnforget-properties-"))


def _schema_fields() -> set[str]:
    """Every field name of the study schema, at any depth."""
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(Study.model_json_schema())
    return names


FIELDS = _schema_fields()
FIELD_LINE = re.compile(r"^  [\w.-]+: ")  # a validation detail: "  methods.0.lr: ..."


def _new_path(suffix: str) -> Path:
    return Path(tempfile.mkstemp(suffix=suffix, dir=ROOT)[1])


def check(args: list[str]) -> None:
    """Run the CLI on ``args``: no traceback, no unexpected error, and each error line (and
    each detail line under it) names a study field, an option or one of the arguments."""
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args, type(result.exception).__name__, result.exception)
    output = result.output
    assert "Traceback" not in output, (args, output)
    assert "error: unexpected " not in output, (args, output)
    named = [a for a in args if a and not a.startswith("-")]
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if not line.startswith("error:"):
            continue
        block = [line] + [d for d in lines[index + 1:] if d.startswith("  ")]
        for text in block:
            words = set(re.findall(r"[A-Za-z_]+", text))
            assert (words & FIELDS or "--" in text or any(a in text for a in named)
                    or FIELD_LINE.match(text)), (args, text, output)


# --- study files ---------------------------------------------------------------------------
LR = st.sampled_from([1e-4, 3e-4, 1e-3, 5e-3])
METHOD = st.one_of(
    st.fixed_dictionaries({"kind": st.just("full"), "lr": st.lists(LR, min_size=1, max_size=2,
                                                                  unique=True)}),
    st.fixed_dictionaries({"kind": st.just("lora"), "lr": LR,
                           "r": st.sampled_from([4, 8]),
                           "targets": st.sampled_from(["attention", "mlp", "all"])}),
)
STUDY = st.fixed_dictionaries({
    "name": st.sampled_from(["p", "prop-study"]),
    "base": st.just("builtin:micro"),
    "target": st.fixed_dictionaries({"domain": st.sampled_from(["code", "math"]),
                                     "regime": st.sampled_from(["cpt", "ift"])}),
    "methods": st.lists(METHOD, min_size=1, max_size=2, unique_by=lambda m: m["kind"]),
    "training": st.fixed_dictionaries({"batch_size": st.sampled_from([4, 8]),
                                       "seq_len": st.sampled_from([64, 128])}),
    "budgets": st.just({"steps": [4, 8]}),
    "evaluation": st.just({"limit": 5}),
})
def _nested(depth: int) -> list:
    """A list nested ``depth`` levels deep."""
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**6, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.integers(min_value=-3, max_value=10**4), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from(["builtin:nosuch", "cuda", "tpu", "custom", "lora", "owner/name", ".nan",
                     "/proc/x", "lion", "epochs", "", "/nonexistent/data.jsonl"]),
    # what found the second pass's failures: sizes that hang an enumeration (a batch of 10¹²,
    # 20,000 seeds), values torch refuses later (2⁷⁰, β = 1.5), deep nesting
    st.sampled_from([10**12, 2**70, -(2**70), 1.5, 1e308]),
    st.just(list(range(20_000))),
    st.just(_nested(200)),
)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys/indices) into a nested dict/list."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for position, value in enumerate(node):
            found += _paths(value, (*prefix, position))
    return found


def _mutate(study: dict, path: tuple, action: str, value: object) -> dict:
    """A copy of ``study`` with the field at ``path`` replaced, deleted, or given a sibling."""
    import copy

    study = copy.deepcopy(study)
    parent = study
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if action == "delete" and isinstance(parent, dict):
        del parent[key]
    elif action == "unknown" and isinstance(parent, dict):
        parent[f"{key}_typo"] = value
    else:
        parent[key] = value
    return study


@SETTINGS
@given(study=STUDY, data=st.data())
def test_mutated_study_files_never_trace_back(study: dict, data) -> None:
    path = data.draw(st.sampled_from(_paths(study)), label="field")
    action = data.draw(st.sampled_from(["replace", "delete", "unknown"]), label="action")
    value = data.draw(JUNK, label="value")
    file = _new_path(".yaml")
    file.write_text(yaml.safe_dump(_mutate(study, path, action, value)))
    check(["plan", str(file)])


@SETTINGS
@given(study=STUDY)
def test_valid_study_files_plan(study: dict) -> None:
    file = _new_path(".yaml")
    file.write_text(yaml.safe_dump(study))
    result = CliRunner().invoke(app, ["plan", str(file)])
    assert result.exit_code == 0, result.output


@SETTINGS
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
       command=st.sampled_from(["plan", "run"]))
def test_garbage_study_files_never_trace_back(content: bytes, command: str) -> None:
    file = _new_path(".yaml")
    file.write_bytes(content)
    check([command, str(file), *(["--out", str(ROOT / "never")] if command == "run" else [])])
    assert not (ROOT / "never").exists()


# --- argument sets -------------------------------------------------------------------------
def _existing_file() -> str:
    file = _new_path(".txt")
    file.write_text("not a folder")
    return str(file)


def _corrupt_out() -> str:
    folder = Path(tempfile.mkdtemp(dir=ROOT))
    (folder / "results.sqlite").write_bytes(b"\x00not sqlite" * 50)
    return str(folder)


PATHS = st.one_of(
    st.sampled_from(["/nonexistent/study.yaml", "/proc/self", "/", ".", "/dev/null"]),
    st.builds(_existing_file), st.builds(_corrupt_out), st.text(min_size=1, max_size=8).filter(
        lambda t: t.isprintable() and t.strip() == t and not t.startswith("-")),
)
BAD_MODELS = st.sampled_from(["builtin:nosuch", "nosuch/model", "/nonexistent/model",
                              "missing.gguf", "a/b/c", "."])
DEVICES = st.sampled_from(["auto", "cpu", "cuda", "cuda:7", "tpu", "device_map=auto", ""])
STUDY_FILE = str(Path(__file__).resolve().parents[1] / "examples" / "micro.yaml")
ARGUMENTS = st.one_of(
    st.tuples(st.just("plan"), PATHS),
    st.tuples(st.just("report"), PATHS),
    st.tuples(st.just("run"), st.just(STUDY_FILE), st.just("--out"),
              st.sampled_from(["/proc/out", "/sys/out"]) | st.builds(_existing_file)),
    st.tuples(st.just("score-code"), PATHS, st.just("--k"),
              st.text(max_size=6).filter(lambda t: not t.startswith("-"))),
    st.tuples(st.just("eval"), st.just("-m"), BAD_MODELS, st.just("--tasks"),
              st.sampled_from(["source_bpb", "nosuch", "", "hellaswag,x"]), st.just("--device"),
              DEVICES),
    st.tuples(st.just("spectrum"), st.just("--base"), BAD_MODELS, st.just("--tuned"),
              BAD_MODELS, st.just("--device"), DEVICES),
)


@SETTINGS
@given(args=ARGUMENTS)
def test_argument_sets_never_trace_back(args: tuple) -> None:
    check([str(a) for a in args])
