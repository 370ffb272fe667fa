"""A ``kind: peft`` method's configuration: validated by PEFT's own config class, expanded into
the grid's points.

A point is the mapping of one PEFT configuration: ``peft_type`` (PEFT's name, e.g. ``VERA``)
and every field whose value differs from that config class's default, so that the same method
written in a study (``config:``) or read from an ``adapter_config.json`` (``config_file:``) is
the same point, and so the same run. A list given for a field sweeps it (one point per value),
except in fields whose PEFT type is itself a list (``target_modules``, ``layers_to_transform``,
…), which sweep a list of lists; ``target_modules`` also takes the study's module groups
``attention | mlp | all`` (a list of groups sweeps them). Fields a run fills in itself
(AdaLoRA's ``total_step``: the run's step count) and the metadata PEFT writes into a saved
config (``base_model_name_or_path``, ``peft_version``, …) are not part of a point.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

from learnforget.errors import UserError

_RANK_FIELDS = ("init_r", "r", "num_virtual_tokens")

TARGET_GROUPS = ("attention", "mlp", "all")
"""The study's module groups, accepted in ``target_modules`` (``methods.TARGET_MODULES``)."""

METADATA_FIELDS = frozenset({
    "peft_type", "task_type", "auto_mapping", "peft_version", "base_model_name_or_path",
    "revision", "inference_mode"})
"""Fields of a PEFT config that say where it was saved, not what the method is."""

RUN_FILLED_FIELDS = {"ADALORA": {"total_step": "the run's number of optimizer steps"}}
"""Per PEFT type, the fields each run sets itself, with what they are set to."""

_VALIDATION_STAND_INS = {"ADALORA": {"total_step": 1_000_000}}
"""Values of run-filled fields used only to validate a point before any run exists."""


def config_class(peft_type: object) -> tuple[str, type]:
    """(PEFT's name of the type, its config class) for a ``peft_type`` given in any case; an
    unknown type is a ``UserError`` with PEFT's message and the list of known types."""
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING, PeftType

    known = ", ".join(sorted(str(t.value) for t in PEFT_TYPE_TO_CONFIG_MAPPING))
    try:
        kind = PeftType(str(peft_type).upper())
        return str(kind.value), PEFT_TYPE_TO_CONFIG_MAPPING[kind]
    except (ValueError, KeyError) as exc:
        raise UserError(f"peft_type: {exc}; PEFT's types are {known}") from None


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _takes_lists(field: dataclasses.Field) -> bool:
    """Whether a PEFT field's own value may be a list (its type names ``list``)."""
    return "list" in str(field.type).lower()


def _sweep_values(name: str, value: Any, field: dataclasses.Field) -> list[Any]:
    """The values a point takes for one field: a list sweeps, except in a list-typed field,
    where a list is one value and a list of lists (or of the study's module groups) sweeps."""
    if not isinstance(value, list) or not value:
        return [value]
    if name in ("target_modules", "feedforward_modules") and all(
            isinstance(v, str) and v in TARGET_GROUPS for v in value):
        return list(value)
    if _takes_lists(field):
        return list(value) if all(isinstance(v, list) for v in value) else [value]
    return list(value)


def check_point(point: dict[str, Any]) -> None:
    """Validate one point with PEFT's config class (PEFT's message plus what to do)."""
    peft_type, cls = config_class(point["peft_type"])
    fields = _fields(cls)
    values = {k: v for k, v in point.items() if k != "peft_type"}
    for name in RUN_FILLED_FIELDS.get(peft_type, {}):
        values.setdefault(name, _VALIDATION_STAND_INS[peft_type][name])
    if "task_type" in fields:
        values.setdefault("task_type", "CAUSAL_LM")
    try:
        cls(**values)
    except (TypeError, ValueError) as exc:
        message = " ".join(str(exc).split())
        if isinstance(exc, TypeError) and "unexpected keyword" in message:
            valid = ", ".join(sorted(set(fields) - METADATA_FIELDS))
            raise UserError(f"{message}; {peft_type}'s fields are {valid}") from None
        raise UserError(f"{peft_type}: {message}") from None


def grid_points(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every point of a ``kind: peft`` configuration, validated: the cartesian product of its
    swept fields, each point holding ``peft_type`` and its non-default fields."""
    if "peft_type" not in config:
        raise UserError("config needs 'peft_type' (e.g. VERA, IA3, LOHA, LOKR, OFT, BOFT, "
                        "ADALORA, PROMPT_TUNING)")
    peft_type, cls = config_class(config["peft_type"])
    fields = _fields(cls)
    for name in RUN_FILLED_FIELDS.get(peft_type, {}):
        if name in config and config[name] is not None:
            raise UserError(f"{peft_type}'s {name} is set by each run "
                            f"({RUN_FILLED_FIELDS[peft_type][name]}): remove it")
    given = {k: v for k, v in config.items()
             if k not in METADATA_FIELDS and k not in RUN_FILLED_FIELDS.get(peft_type, {})}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        valid = ", ".join(sorted(set(fields) - METADATA_FIELDS))
        raise UserError(f"{cls.__name__}.__init__() got an unexpected keyword argument "
                        f"'{unknown[0]}'; {peft_type}'s fields are {valid}")
    size = size_field(fields)
    if size is not None and size not in given and _default(fields[size]) is not None:
        given[size] = _default(fields[size])
    names = list(given)
    axes = [_sweep_values(name, given[name], fields[name]) for name in names]
    points = []
    for values in itertools.product(*axes):
        point: dict[str, Any] = {"peft_type": peft_type}
        for name, value in zip(names, values, strict=True):
            if value != _default(fields[name]) or name == size:
                point[name] = value
        check_point(point)
        if point not in points:
            points.append(point)
    return points


def size_field(fields: dict[str, dataclasses.Field]) -> str | None:
    """The field that sizes a method (AdaLoRA's ``init_r``, else ``r``, else prompt tuning's
    ``num_virtual_tokens``): always part of a point, so that labels name it."""
    return next((name for name in _RANK_FIELDS if name in fields), None)


def grid_count(config: dict[str, Any]) -> int:
    """How many points a configuration sweeps (without validating them)."""
    try:
        _, cls = config_class(config.get("peft_type"))
    except UserError:
        return 1
    fields = _fields(cls)
    count = 1
    for name, value in config.items():
        if name in fields and name not in METADATA_FIELDS:
            count *= len(_sweep_values(name, value, fields[name]))
    return count


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of an ``adapter_config.json`` (a file, or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "adapter_config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"config_file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UserError(f"config_file {path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"config_file {path} is not a JSON object")
    return data


DISPLAY_NAMES = {
    "ADALORA": "AdaLoRA", "BOFT": "BOFT", "C3A": "C3A", "FOURIERFT": "FourierFT", "HRA": "HRA",
    "IA3": "IA³", "LN_TUNING": "LayerNorm tuning", "LOHA": "LoHa", "LOKR": "LoKr",
    "LORA": "PEFT LoRA", "MISS": "MiSS", "OFT": "OFT", "PREFIX_TUNING": "prefix tuning",
    "PROMPT_TUNING": "prompt tuning", "P_TUNING": "p-tuning", "RANDLORA": "RandLoRA",
    "SHIRA": "SHiRA", "VBLORA": "VB-LoRA", "VERA": "VeRA"}
"""How a PEFT type is written in the report (PEFT's own name where this has none)."""



def _shown(value: Any) -> str:
    if isinstance(value, list | tuple | set):
        return "+".join(_shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _ordered(point: dict[str, Any]) -> list[tuple[str, Any]]:
    """The point's fields but ``peft_type``: its size field first, then target_modules, then
    the rest by name."""
    rank = [(k, point[k]) for k in ("r", "init_r", "num_virtual_tokens") if k in point]
    rest = sorted((k, v) for k, v in point.items()
                  if k not in (*_RANK_FIELDS, "peft_type", "target_modules"))
    targets = [("target_modules", point["target_modules"])] if "target_modules" in point else []
    return rank[:1] + targets + rank[1:] + rest


def peft_label(point: dict[str, Any], weight_decay: float = 0.0) -> str:
    """A short label holding every setting of a PEFT point, e.g. ``peft-vera-r256-all``,
    ``peft-boft-all-boft_block_size4``, ``peft-prompttuning-num_virtual_tokens20``."""
    parts = ["peft", str(point.get("peft_type", "?")).lower().replace("_", "")]
    for key, value in _ordered(point):
        if key == "r":
            parts.append(f"r{_shown(value)}")
        elif key == "target_modules":
            parts.append(_shown(value))
        else:
            parts.append(f"{key}{_shown(value)}")
    if weight_decay:
        parts.append(f"wd{weight_decay:g}")
    return "-".join(parts)


def peft_name_parts(point: dict[str, Any]) -> tuple[str, list[str]]:
    """(name, extras) of a PEFT point's readable name, e.g. ``("VeRA r=256", ["all"])``."""
    peft_type = str(point.get("peft_type", "?"))
    name = DISPLAY_NAMES.get(peft_type, peft_type)
    extras = []
    for key, value in _ordered(point):
        if key in ("r", "init_r"):
            name += f" {key}={_shown(value)}"
        elif key == "target_modules":
            extras.append(_shown(value))
        else:
            extras.append(f"{key}={_shown(value)}")
    return name, extras


PROMPT_LEARNING_TYPES = frozenset({
    "PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING", "ADAPTION_PROMPT",
    "CPT", "CARTRIDGE"})
"""PEFT types that add virtual tokens or prefixes instead of changing weights: no ΔW."""
