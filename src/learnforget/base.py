"""Load a base model and its tokenizer: a built-in model, a hub id, a local folder or a GGUF file.

Everything becomes a ``transformers`` causal LM plus tokenizer, so the rest of the tool (PEFT,
training, scoring) never needs to know where a model came from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import socket
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from learnforget.builtin import builtin_folder
from learnforget.errors import UserError
from learnforget.paths import cache_dir
from learnforget.smollm import resolve_model_alias
from learnforget.study import DEVICE_PATTERN, BaseModelSpec

hf_logging.disable_progress_bar()  # our own progress display is the one that counts
hf_logging.set_verbosity_error()

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HUB_PROBE_TIMEOUT_S = 3.0  # how long to wait for the hub (or proxy) to accept a connection


@dataclass(frozen=True)
class ModelSource:
    """Where ``from_pretrained`` finds the model: a folder or hub id, plus loading options."""

    name_or_path: str
    revision: str | None = None
    gguf_file: str | None = None
    local_only: bool = False  # a hub id read from the local cache: the hub is out of reach

    def kwargs(self) -> dict:
        """Keyword arguments shared by the model's and the tokenizer's ``from_pretrained``."""
        out: dict = {"local_files_only": True} if self.local_only else {}
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
        return ModelSource(str(converted_gguf(path, log)))
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
    if hub_unreachable_reason() is not None:
        if not _in_hub_cache(model, spec.revision, spec.gguf_file or "config.json"):
            raise _offline_error(model, "model", "the local folder (or .gguf file)")
        return ModelSource(model, spec.revision, spec.gguf_file, local_only=True)
    return ModelSource(model, spec.revision, spec.gguf_file)


GGUF_DONE = "learnforget_gguf.json"  # written last: a folder without it is unfinished


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file's content (memoised per path, size and modification time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_cache_folder(path: Path) -> Path:
    """Where the model folder converted from the GGUF file ``path`` is cached: named by the
    file's name and the sha256 of its content."""
    stat = path.stat()
    digest = _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return cache_dir() / "gguf" / f"{path.stem}-{digest[:16]}"


def converted_gguf(path: Path, log: Callable[[str], None] = print) -> Path:
    """A ``save_pretrained`` folder (float32 weights, tokenizer) converted from the GGUF file
    ``path``, made once and cached (``gguf_cache_folder``). Reading a GGUF file parses its
    metadata in pure Python twice (tokenizer and model: about 20 s for SmolLM2-135M); the
    folder loads in about a second. Concurrent callers wait for one conversion."""
    import fcntl

    folder = gguf_cache_folder(path)
    if (folder / GGUF_DONE).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / GGUF_DONE).is_file():
            return folder
        log(f"converting {path.name} once into {folder} (later loads read that folder)")
        source = ModelSource(str(path.parent.resolve()), gguf_file=path.name)
        tokenizer = load_tokenizer(source)
        model = load_model(source, "float32", "cpu")
        partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        (partial / GGUF_DONE).write_text(json.dumps(
            {"gguf": str(path.resolve()), "sha256": folder.name.rsplit("-", 1)[-1]}, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return folder


def _hub_address() -> tuple[str, int]:
    """Host and port that a hub request connects to first: the HTTPS proxy when one is set,
    else the hub endpoint (``HF_ENDPOINT``, default huggingface.co)."""
    url = (os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
           or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    default_port = 443 if parts.scheme == "https" else 80
    return parts.hostname or "huggingface.co", parts.port or default_port


@functools.lru_cache(maxsize=8)
def _accepts_connections(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``timeout`` seconds (name lookup
    included: it runs in a thread, since ``getaddrinfo`` has no timeout of its own)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def hub_unreachable_reason() -> str | None:
    """None when the Hugging Face hub can be reached; otherwise why not, in words. Answers
    within a few seconds (one TCP connection attempt), instead of the minute of retries a
    download makes before failing."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    host, port = _hub_address()
    if not _accepts_connections(host, port, HUB_PROBE_TIMEOUT_S):
        return f"no connection to {host}:{port} within {HUB_PROBE_TIMEOUT_S:g} s"
    return None


def _in_hub_cache(repo_id: str, revision: str | None, filename: str) -> bool:
    """Whether ``filename`` of the hub repo is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except ValueError:  # not a valid repo id
        return False
    return isinstance(found, str)


def _offline_error(repo_id: str, what: str, local: str) -> UserError:
    return UserError(
        f"{what} {repo_id!r} is a hub id, but the Hugging Face hub is out of reach "
        f"({hub_unreachable_reason()}) and it is not in the local cache: connect to the "
        f"network, or download it once and give {local} instead")


def check_device(device: str, option: str = "device") -> None:
    """A ``UserError`` naming ``option`` unless ``device`` is a device this machine has."""
    if not DEVICE_PATTERN.match(device):
        raise UserError(f"{option} {device!r} is not a device: use auto, cpu, cuda, cuda:N, mps "
                        "or device_map=auto")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{option} {device!r}: this machine has no CUDA GPU that PyTorch "
                            f"can use; set {option} to cpu or auto")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= count:
            raise UserError(f"{option} {device!r}: this machine has {count} CUDA GPU(s), "
                            f"cuda:0 to cuda:{count - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{option} 'mps': this machine has no Apple GPU; set {option} to cpu "
                        "or auto")


def pick_device(device: str) -> str:
    """``auto`` → cuda when available, else cpu; anything else as given, once
    ``check_device`` has found it on this machine."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    return device


def _unreadable_weights(where: str, exc: BaseException) -> UserError | None:
    """A ``UserError`` for weights that cannot be read (truncated or corrupt files), or None
    when ``exc`` is not about that."""
    module = type(exc).__module__ or ""
    text = str(exc)
    corrupt = module.startswith("safetensors") or any(
        part in text for part in ("deserializing header", "incomplete metadata",
                                  "PytorchStreamReader", "unexpected EOF", "file too short"))
    if not corrupt and not isinstance(exc, EOFError):
        return None
    detail = text.splitlines()[0] if text else type(exc).__name__
    return UserError(f"the weights in {where} cannot be read ({detail}): the file is truncated "
                     "or corrupt; copy it again, or give an earlier checkpoint")


def _hub_error(source: ModelSource, exc: Exception) -> UserError:
    """A ``UserError`` for a model that did not load: a local file or folder is named as such
    (a GGUF file that is not one says so); only a hub id gets the hint about the hub."""
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if source.gguf_file:
        path = Path(source.name_or_path) / source.gguf_file
        return UserError(f"could not load the GGUF file {path} ({detail}): it is damaged or not "
                         "a GGUF model; copy it again or give another base")
    if Path(source.name_or_path).exists():
        return UserError(f"could not load the model folder {source.name_or_path} ({detail}): "
                         "give a folder written by save_pretrained (config.json, weights and "
                         "tokenizer files)")
    return UserError(
        f"could not load {source.name_or_path!r}"
        + (f" (revision {source.revision})" if source.revision else "")
        + f": {detail}\n"
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


def dense_gguf_config():
    """Load a GGUF file as a plain dense model: every weight dequantised to ``dtype`` and no
    quantizer left on the model. A model that keeps transformers' GGUF quantizer attached
    cannot be trained and saved like any other (``save_pretrained`` refuses it: "quantized
    with gguf and is not serializable")."""
    from transformers import GgufConfig

    return GgufConfig(dequantize=True)


def load_model(
    source: ModelSource,
    dtype: str = "float32",
    device: str = "auto",
    attention_dropout: float | None = None,
) -> PreTrainedModel:
    """The causal LM in ``dtype`` on ``device`` (``device_map=auto`` spreads a large model)."""
    kwargs = {**source.kwargs(), "dtype": DTYPES[dtype]}
    if source.gguf_file:
        kwargs["quantization_config"] = dense_gguf_config()
    if attention_dropout is not None:
        kwargs["attention_dropout"] = attention_dropout
    if device.startswith("device_map="):
        kwargs["device_map"] = device.split("=", 1)[1]
    quiet = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # GGUF dequantisation draws its own progress bar
    if "device_map" not in kwargs:
        device = pick_device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(source.name_or_path, **kwargs)
    except Exception as exc:  # safetensors, torch and the hub raise many unrelated types
        unreadable = _unreadable_weights(source.name_or_path, exc)
        if unreadable is not None:
            raise unreadable from None
        if isinstance(exc, (OSError, ValueError)):
            raise _hub_error(source, exc) from None
        raise
    finally:
        if quiet is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = quiet
    if "device_map" not in kwargs:
        model.to(device)
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
        loaded.model = attach_adapter(loaded.model, adapter, adapter_revision, spec.model)
    loaded.model.eval()
    return loaded


def load_weights(spec: BaseModelSpec, log: Callable[[str], None] = print) -> PreTrainedModel:
    """Only the model of ``spec``, without a tokenizer (enough for weight analysis), in eval
    mode."""
    model = load_model(resolve_source(spec, log), spec.dtype, spec.device)
    model.eval()
    return model


def attach_adapter(model: PreTrainedModel, adapter: str, revision: str | None = None,
                   base_name: str = "the base model"):
    """``model`` with the PEFT adapter ``adapter`` (a folder or hub id) on top; an adapter
    that cannot be read, or was made for another base, is a ``UserError`` saying so."""
    from peft import PeftModel

    local = Path(adapter).expanduser()
    if local.exists() and not (local / "adapter_config.json").is_file():
        raise UserError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json); give "
                        "a folder written by save_pretrained of a PEFT model")
    if not local.exists() and hub_unreachable_reason() is not None and not _in_hub_cache(
            adapter, revision, "adapter_config.json"):
        raise _offline_error(adapter, "adapter", "the local adapter folder")
    kwargs = {"revision": revision} if revision else {}
    try:
        return PeftModel.from_pretrained(model, adapter, **kwargs)
    except Exception as exc:  # peft, torch and safetensors raise many unrelated types
        unreadable = _unreadable_weights(adapter, exc)
        if unreadable is not None:
            raise unreadable from None
        text = str(exc)
        if "size mismatch" in text or "not found in the base model" in text:
            mismatch = next((line.strip() for line in text.splitlines()
                             if "size mismatch" in line), text.splitlines()[0])
            raise UserError(
                f"adapter {adapter!r} was made for another base model than {base_name!r} "
                f"({mismatch}); give the base it was trained on"
                + _adapter_base_hint(local)) from None
        if isinstance(exc, (OSError, ValueError)):
            raise UserError(f"could not load adapter {adapter!r}: "
                            f"{text.splitlines()[0] if text else type(exc).__name__}") from None
        raise


def _adapter_base_hint(folder: Path) -> str:
    """`` (its adapter_config.json names X)`` when a local adapter records its base."""
    try:
        name = json.loads((folder / "adapter_config.json").read_text()).get(
            "base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return ""
    return f" (its adapter_config.json names {name!r})" if name else ""
