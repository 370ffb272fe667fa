"""The study's base model inside its output folder, so that OUT holds everything a LoRA
checkpoint needs.

A LoRA checkpoint is only an adapter: PEFT loads it on top of the model its
``adapter_config.json`` names (``base_model_name_or_path``). Left alone, that is wherever the
base was loaded from — for ``builtin:`` bases a folder in the user's cache, which moves or is
cleared. So ``keep_base`` saves the base into ``OUT/base/`` once per study (the model folder as
it is: config, weights, tokenizer), and ``point_adapter_at_base`` makes each adapter name that
folder by its absolute path (``from_pretrained`` reads a relative path against the working
directory, not against the adapter). Bases from the hub keep their hub id, which loads from
anywhere; local bases larger than ``COPY_LIMIT_BYTES`` are not copied and keep their path.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from learnforget.study import BaseModelSpec

BASE_DIR = "base"
SOURCE_FILE = "learnforget_base.json"
COPY_LIMIT_BYTES = 2 * 1024**3  # local bases up to 2 GiB are copied into OUT


def _size(files: list[Path]) -> int:
    return sum(f.stat().st_size for f in files)


def kept_base(out: Path) -> Path | None:
    """``OUT/base`` when the study's base was saved there, else None."""
    folder = out / BASE_DIR
    return folder if (folder / SOURCE_FILE).is_file() else None


def keep_base(spec: BaseModelSpec, out: Path, log: Callable[[str], None] = print) -> Path | None:
    """Save the study's base into ``OUT/base`` (once); returns that folder, or None when the
    base stays where it is (a hub id, a local model over ``COPY_LIMIT_BYTES``, or an OUT that
    already holds another base)."""
    from learnforget.base import resolve_source

    record = spec.model_dump(mode="json")
    folder = out / BASE_DIR
    if kept_base(out) is not None:
        if json.loads((folder / SOURCE_FILE).read_text()).get("base") == record:
            return folder
        log(f"{folder} holds another study's base: this study's adapters keep naming their "
            "base where it was loaded from (give each study its own output folder)")
        return None
    source = resolve_source(spec, log)
    local = Path(source.name_or_path)
    if not local.is_dir():
        return None  # a hub id: portable as it is
    partial = folder.with_name(BASE_DIR + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if source.gguf_file:
        gguf = local / source.gguf_file
        if gguf.stat().st_size > COPY_LIMIT_BYTES:
            log(f"the base {gguf} is not copied into {out} (over 2 GiB): adapters name it there")
            return None
        _save_loaded(spec, partial, log)
    else:
        files = [f for f in local.iterdir() if f.is_file() and not f.name.startswith(".")]
        if _size(files) > COPY_LIMIT_BYTES:
            log(f"the base {local} is not copied into {out} (over 2 GiB): adapters name it there")
            return None
        partial.mkdir(parents=True)
        for file in files:
            shutil.copy2(file, partial / file.name)
    (partial / SOURCE_FILE).write_text(json.dumps({"base": record}, indent=2))
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished copy (no SOURCE_FILE)
    partial.rename(folder)
    return folder


def _save_loaded(spec: BaseModelSpec, folder: Path, log: Callable[[str], None]) -> None:
    """Load the base (a GGUF file: dequantised by transformers) and save it as a model folder."""
    from learnforget.base import load_base

    loaded = load_base(spec.model_copy(update={"device": "cpu"}), log=log)
    loaded.model.save_pretrained(folder, safe_serialization=True)
    loaded.tokenizer.save_pretrained(folder)


def point_adapter_at_base(adapter: Path, base: Path) -> None:
    """Make the adapter in folder ``adapter`` name ``base`` (absolute) as its base model. A
    damaged config is left as it is: resuming reports it (``train.check_checkpoint_configs``)
    and the run writes the folder again."""
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        return  # not an adapter (a full-finetuning checkpoint is a whole model)
    try:
        config = json.loads(config_file.read_text())
    except ValueError:
        return
    if not isinstance(config, dict):
        return
    config["base_model_name_or_path"] = str(base.resolve())
    config["revision"] = None
    partial = config_file.with_suffix(".json.partial")
    partial.write_text(json.dumps(config, indent=2, sort_keys=True))
    partial.replace(config_file)
