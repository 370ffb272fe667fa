"""Load a base model and its tokenizer: a built-in model, a hub id, a local folder or a GGUF file.

Everything becomes a ``transformers`` causal LM plus tokenizer, so the rest of the tool (PEFT,
training, scoring) never needs to know where a model came from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from learnforget.builtin import builtin_folder
from learnforget.errors import UserError
from learnforget.smollm import resolve_model_alias
from learnforget.study import BaseModelSpec

hf_logging.disable_progress_bar()  # our own progress display is the one that counts
hf_logging.set_verbosity_error()

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSource:
    """Where ``from_pretrained`` finds the model: a folder or hub id, plus loading options."""

    name_or_path: str
    revision: str | None = None
    gguf_file: str | None = None

    def kwargs(self) -> dict:
        """Keyword arguments shared by the model's and the tokenizer's ``from_pretrained``."""
        out: dict = {}
        if self.revision:
            out["revision"] = self.revision
        if self.gguf_file:
            out["gguf_file"] = self.gguf_file
        return out


def resolve_source(spec: BaseModelSpec, log: Callable[[str], None] = print) -> ModelSource:
    """Turn ``builtin:NAME``, a folder, a ``.gguf`` path or a hub id into a ``ModelSource``."""
    model = resolve_model_alias(spec.model)
    if model.startswith("builtin:"):
        return ModelSource(str(builtin_folder(model.split(":", 1)[1], log)))
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file {path} does not exist")
        return ModelSource(str(path.parent.resolve()), gguf_file=path.name)
    if path.exists():
        if not (path / "config.json").exists() and not spec.gguf_file:
            raise UserError(
                f"{path} is not a Hugging Face model folder (no config.json); give a folder "
                "written by save_pretrained, a .gguf file, a hub id or builtin:tiny"
            )
        return ModelSource(str(path.resolve()), spec.revision, spec.gguf_file)
    if model.count("/") != 1 or model.startswith(("/", ".", "~")):
        raise UserError(
            f"base model {model!r} is neither builtin:tiny/builtin:micro, "
            "smollm2-135m-instruct-gguf, an existing folder or .gguf file, nor a hub id of the "
            "form owner/name"
        )
    return ModelSource(model, spec.revision, spec.gguf_file)


def pick_device(device: str) -> str:
    """``auto`` → cuda when available, else cpu; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _hub_error(source: ModelSource, exc: Exception) -> UserError:
    return UserError(
        f"could not load {source.name_or_path!r}"
        + (f" (revision {source.revision})" if source.revision else "")
        + f": {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n"
        "If it is a hub id, the hub may be unreachable: connect, or download it once and give "
        "the local folder (or .gguf file) instead."
    )


def load_tokenizer(source: ModelSource):
    """The tokenizer, with a pad token (EOS when the model has none)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.name_or_path, **source.kwargs())
    except (OSError, ValueError) as exc:
        raise _hub_error(source, exc) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    source: ModelSource,
    dtype: str = "float32",
    device: str = "auto",
    attention_dropout: float | None = None,
) -> PreTrainedModel:
    """The causal LM in ``dtype`` on ``device`` (``device_map=auto`` spreads a large model)."""
    kwargs = {**source.kwargs(), "dtype": DTYPES[dtype]}
    if attention_dropout is not None:
        kwargs["attention_dropout"] = attention_dropout
    if device.startswith("device_map="):
        kwargs["device_map"] = device.split("=", 1)[1]
    quiet = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # GGUF dequantisation draws its own progress bar
    try:
        model = AutoModelForCausalLM.from_pretrained(source.name_or_path, **kwargs)
    except (OSError, ValueError) as exc:
        raise _hub_error(source, exc) from None
    finally:
        if quiet is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = quiet
    if "device_map" not in kwargs:
        model.to(pick_device(device))
    return model


@dataclass
class LoadedBase:
    """A base model, its tokenizer and where it came from."""

    model: PreTrainedModel
    tokenizer: object
    source: ModelSource


def load_base(
    spec: BaseModelSpec,
    attention_dropout: float | None = None,
    log: Callable[[str], None] = print,
) -> LoadedBase:
    """Resolve, then load model and tokenizer for a study's ``base`` section."""
    source = resolve_source(spec, log)
    tokenizer = load_tokenizer(source)
    model = load_model(source, spec.dtype, spec.device, attention_dropout)
    return LoadedBase(model, tokenizer, source)


def load_for_eval(spec: BaseModelSpec, adapter: str | None = None,
                  log: Callable[[str], None] = print,
                  adapter_revision: str | None = None) -> LoadedBase:
    """A base model, optionally with a PEFT adapter (folder or hub id, at a hub branch/tag
    ``adapter_revision``) on top, ready to score."""
    loaded = load_base(spec, log=log)
    if adapter:
        from peft import PeftModel

        kwargs = {"revision": adapter_revision} if adapter_revision else {}
        try:
            loaded.model = PeftModel.from_pretrained(loaded.model, adapter, **kwargs)
        except (OSError, ValueError) as exc:
            raise UserError(f"could not load adapter {adapter!r}: {exc}") from None
    loaded.model.eval()
    return loaded
