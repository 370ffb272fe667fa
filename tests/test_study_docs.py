"""docs/study.md documents every field of the study schema, with its default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from learnforget.study import Study

DOC = Path(__file__).resolve().parents[1] / "docs" / "study.md"
ROW = re.compile(r"^\|\s*`([a-z_]+)`\s*\|.*\|\s*([^|]+?)\s*\|\s*$")


def doc_tables(text: str) -> dict[str, dict[str, str]]:
    """{section: {field: default cell}} from the field tables under the ### / #### headings
    (section: the first code name in the heading, ``top`` for "Top level")."""
    tables: dict[str, dict[str, str]] = {}
    section = None
    for line in text.splitlines():
        if line.startswith("##"):
            named = re.search(r"`([a-z_]+)`", line)
            section = named.group(1) if named else ("top" if "Top level" in line else None)
        elif section and (row := ROW.match(line)):
            tables.setdefault(section, {})[row.group(1)] = row.group(2)
    return tables


def _ref(prop: dict) -> str | None:
    """The sub-model a property holds, if it holds one."""
    for option in [prop, *prop.get("anyOf", []), *prop.get("allOf", [])]:
        if "$ref" in option:
            return option["$ref"].split("/")[-1]
    return None


def schema_fields() -> list[tuple[str, str, bool, object, bool]]:
    """(section, field, required, default, is a sub-model) for every field of the schema."""
    schema = Study.model_json_schema()
    defs = schema["$defs"]
    out = []

    def walk(section: str, model: dict) -> None:
        required = set(model.get("required", []))
        for name, prop in model["properties"].items():
            ref = _ref(prop)
            union = prop.get("items", {}).get("oneOf") or prop.get("items", {}).get("anyOf")
            out.append((section, name, name in required, prop.get("default"),
                        ref is not None or bool(union)))
            if ref is not None:
                walk(name, defs[ref])
            for member in union or []:
                sub = defs[member["$ref"].split("/")[-1]]
                walk(sub["properties"]["kind"]["const"], sub)

    walk("top", schema)
    return out


def _documented(cell: str) -> object:
    """The default a table cell states: its first code span, or its first word."""
    if cell.startswith("`"):
        return yaml.safe_load(cell.split("`")[1])
    word = cell.split()[0].lower()
    return {"none": None, "required": "required"}.get(word, word)


def _same(documented: object, default: object) -> bool:
    if isinstance(default, float) and isinstance(documented, str | int | float):
        try:
            return float(documented) == default
        except ValueError:
            return False
    return documented == default


FIELDS = schema_fields()


def test_the_walk_reaches_every_section() -> None:
    sections = {f[0] for f in FIELDS}
    assert {"top", "base", "target", "full", "lora", "optimizer", "schedule", "training",
            "budgets", "evaluation"} <= sections
    assert ("evaluation", "diversity_prompts") in {(f[0], f[1]) for f in FIELDS}


@pytest.mark.parametrize(("section", "name", "required", "default", "nested"), FIELDS,
                         ids=[f"{f[0]}.{f[1]}" for f in FIELDS])
def test_every_field_is_documented_with_its_default(section, name, required, default,
                                                    nested) -> None:
    tables = doc_tables(DOC.read_text(encoding="utf-8"))
    assert name in tables.get(section, {}), (
        f"docs/study.md: add a row for `{name}` to the table of section `{section}`")
    cell = tables[section][name]
    if required:
        assert _documented(cell) == "required", f"{section}.{name} is required: {cell!r}"
    elif nested:
        assert cell == "the defaults below", f"{section}.{name}: {cell!r}"
    else:
        assert _same(_documented(cell), default), (
            f"{section}.{name}: docs say {cell!r}, the schema's default is {default!r}")


def test_every_field_has_a_description() -> None:
    schema = Study.model_json_schema()
    models = [schema, *(d for d in schema["$defs"].values() if "properties" in d)]
    missing = [f"{m['title']}.{name}" for m in models for name, prop in m["properties"].items()
               if not prop.get("description")]
    assert not missing


def test_a_wrong_default_in_the_docs_is_caught() -> None:
    text = re.sub(r"^\| `seq_len` \|.*$", "| `seq_len` | tokens per sequence | `1024` |",
                  DOC.read_text(encoding="utf-8"), flags=re.M)
    cell = doc_tables(text)["training"]["seq_len"]
    assert not _same(_documented(cell), 256)
