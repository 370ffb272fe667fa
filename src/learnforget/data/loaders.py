"""The paper's training datasets by name, any Hugging Face hub dataset, and the user's own files.

A ``source`` is one of:

- a name in ``NAMED_DATASETS`` (the four datasets of the paper, with their field names),
- a Hugging Face hub id (``owner/name``), read with ``datasets.load_dataset(..., streaming=True)``
  so that nothing larger than what is consumed is downloaded,
- a local ``.jsonl`` / ``.json`` / ``.parquet`` file (``.jsonl.gz`` and ``.json.gz`` too), or a
  folder of them, read with ``datasets.load_dataset("json" | "parquet", data_files=...)``.

``local_path=`` reads local files with a named dataset's field mapping: pre-downloaded copies of
the paper's data go through exactly the path the hub name takes.

Schemas: CPT documents are one text field per record (``text`` unless the named dataset says
otherwise or ``text_field=`` is given). IFT pairs are ``prompt`` + ``response``, or
``messages`` (a list of ``{role, content}``; see ``pair_from_messages``).
"""

from __future__ import annotations

import gzip
import itertools
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from learnforget.data.types import Pair
from learnforget.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Regime = Literal["cpt", "ift"]
LOG = logging.getLogger(__name__)
FIELD_SCAN_RECORDS = 1000
"""Records read without the expected field(s) before the field is taken to be wrong."""


@dataclass(frozen=True)
class NamedDataset:
    """One of the paper's training datasets: where it lives on the hub and which fields hold the
    text (``text_field`` for CPT; ``prompt_field``/``response_field`` for IFT)."""

    hub_id: str
    regime: Regime
    data_dir: str | None = None
    text_field: str | None = None
    prompt_field: str | None = None
    response_field: str | None = None
    note: str = ""

    def schema(self) -> str:
        """The fields a local copy of this dataset must have, in words."""
        if self.regime == "cpt":
            return f"one record per document with a {self.text_field!r} field"
        return f"one record per example with {self.prompt_field!r} and {self.response_field!r}"


NAMED_DATASETS: dict[str, NamedDataset] = {
    "starcoder-python": NamedDataset(
        hub_id="bigcode/starcoderdata",
        regime="cpt",
        data_dir="python",
        text_field="content",
        note="gated: accept its terms on the hub page and log in with `hf auth login`",
    ),
    "open-web-math": NamedDataset(
        hub_id="open-web-math/open-web-math", regime="cpt", text_field="text"
    ),
    "magicoder-evol-instruct-110k": NamedDataset(
        hub_id="ise-uiuc/Magicoder-Evol-Instruct-110K",
        regime="ift",
        prompt_field="instruction",
        response_field="response",
    ),
    "metamathqa": NamedDataset(
        hub_id="meta-math/MetaMathQA", regime="ift", prompt_field="query", response_field="response"
    ),
}

LOCAL_FORMATS = {  # file suffix -> datasets builder
    ".jsonl": "json",
    ".json": "json",
    ".jsonl.gz": "json",
    ".json.gz": "json",
    ".parquet": "parquet",
}
ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


# ---------------------------------------------------------------------------- opening a source
@dataclass(frozen=True)
class _Opened:
    """Records of a source, plus what to say about it in messages."""

    records: Iterator[dict]
    label: str  # "metamathqa (meta-math/MetaMathQA)" or the local path
    named: NamedDataset | None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((suffix for suffix in LOCAL_FORMATS if name.endswith(suffix)), path.suffix.lower())


def _looks_like_path(source: str) -> bool:
    """A source that names a file (by its suffix) or starts like a path is never a hub id."""
    return source.startswith((".", "/", "~", "\\")) or _suffix(Path(source)) in {
        *LOCAL_FORMATS,
        ".csv",
        ".txt",
        ".tsv",
        ".arrow",
    }


def _local_files(path: Path) -> tuple[str, list[str]]:
    """The builder name and the data files of a local file or folder."""
    supported = ", ".join(LOCAL_FORMATS)
    if not path.exists():
        raise UserError(f"Data file or folder not found: {path}. Fix: check the path.")
    if path.is_file():
        suffix = _suffix(path)
        if suffix not in LOCAL_FORMATS:
            raise UserError(
                f"Unsupported data file type {suffix or '(no extension)'!r}: {path}. "
                f"Fix: convert it to one of {supported}."
            )
        files = [path]
    else:
        files = sorted(
            file
            for file in path.rglob("*")
            if file.is_file() and _suffix(file) in LOCAL_FORMATS and not file.name.startswith(".")
        )
        if not files:
            raise UserError(f"No data files ({supported}) in the folder {path}.")
    builders = {LOCAL_FORMATS[_suffix(file)] for file in files}
    if len(builders) > 1:
        raise UserError(
            f"{path} mixes JSON and parquet files. Fix: keep one format per data folder."
        )
    if all(file.stat().st_size == 0 for file in files):
        raise UserError(f"No records in {path}: the data files are empty.")
    return builders.pop(), [str(file) for file in files]


def _read_guarded(records: Iterable[dict], label: str, is_local: bool) -> Iterator[dict]:
    """Records of ``records``, with read failures (network drops, malformed lines) turned
    into a ``UserError`` naming the source. Only the reading is guarded, nothing else."""
    iterator = iter(records)
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # network and parser errors vary by backend
            if is_local:
                raise UserError(
                    f"Could not read {label}: {type(error).__name__}: {error}. Fix: make every "
                    "line one JSON object (JSON Lines), the file one JSON array, or a valid "
                    "parquet file."
                ) from error
            raise UserError(
                f"Reading {label} from the Hugging Face hub failed: {type(error).__name__}: "
                f"{error}. Fix: check the connection, or download the data beforehand and point "
                "`data:` at local files."
            ) from error
        yield record


def _hub_error(named: NamedDataset | None, hub_id: str, label: str, error: Exception) -> UserError:
    from datasets.exceptions import DatasetNotFoundError

    schema = named.schema() if named else "the schema in docs/datasets.md"
    local_hint = (
        f"download it beforehand and point `data:` at the local .jsonl/.json/.parquet files "
        f"({schema})"
    )
    if isinstance(error, DatasetNotFoundError):
        extra = f" It is {named.note}." if named and named.note else ""
        return UserError(
            f"Dataset {label} was not found on the Hugging Face hub, or needs a login: "
            f"{error}.{extra} Fix: check the name, log in with `hf auth login` for gated "
            f"datasets, or {local_hint}."
        )
    if isinstance(error, OSError):  # ConnectionError, offline mode, HTTP errors
        maybe_path = (
            "" if named else f" (if {hub_id!r} is meant to be a local path, it does not exist)"
        )
        return UserError(
            f"Could not reach the Hugging Face hub to load {label}{maybe_path}: {error}. "
            "Fix: connect to the internet (and unset HF_HUB_OFFLINE), or "
            f"{local_hint}."
        )
    return UserError(f"Could not load {label} from the Hugging Face hub: {error}.")


def _open(source: str, split: str, local_path: str | Path | None, regime: Regime) -> _Opened:
    """Resolve ``source`` (named dataset, hub id, local file/folder) to a stream of records."""
    named = NAMED_DATASETS.get(source)
    if local_path is not None and named is None:
        raise UserError(
            f"local_path= applies a named dataset's fields to local files; {source!r} is not one "
            f"of {sorted(NAMED_DATASETS)}. Fix: pass the local path as the source."
        )
    if named and named.regime != regime:
        kinds = {"cpt": "continued-pretraining (CPT) documents", "ift": "instruction (IFT) pairs"}
        loader = "load_pairs" if named.regime == "ift" else "load_documents"
        raise UserError(
            f"{source!r} holds {kinds[named.regime]}, but {kinds[regime]} were asked for. "
            f"Fix: use it where {kinds[named.regime]} are expected ({loader})."
        )
    if local_path is not None:
        return _open_local(Path(local_path).expanduser(), named, f"{source} from {local_path}")
    if named is None and (Path(source).exists() or _looks_like_path(source)):
        return _open_local(Path(source).expanduser(), None, source)
    return _open_hub(source, split, named)


MAX_NESTING = 100  # levels of [ and { a JSON record may nest; deeper ones crash the parser
_JSON_TOKENS = re.compile(rb'[\\"\[\]{}]')


def check_nesting(file: str | Path, max_depth: int = MAX_NESTING) -> None:
    """A ``UserError`` naming the line of the first JSON value in ``file`` (``.json``,
    ``.jsonl``, gzipped or not) that nests deeper than ``max_depth`` arrays and objects. The
    Arrow JSON reader behind ``datasets`` recurses without a limit and crashes the process
    (a segmentation fault, no message) on a record 20,000 levels deep, so depth is counted
    here first, by a scan of the brackets outside strings (written by hand: no JSON library
    reports the depth without first recursing into it). In JSON Lines a line with at most
    ``max_depth`` opening brackets cannot nest deeper and is skipped at C speed."""
    opener = gzip.open if str(file).endswith(".gz") else open
    lines = ".jsonl" in Path(file).name
    depth, in_string = 0, False
    with opener(file, "rb") as stream:
        for number, line in enumerate(stream, start=1):
            if lines:
                if line.count(b"[") + line.count(b"{") <= max_depth:
                    continue
                depth, in_string = 0, False  # one record per line
            depth, in_string = _scan_depth(line, depth, in_string, max_depth, number, file)


def _scan_depth(line: bytes, depth: int, in_string: bool, max_depth: int, number: int,
                file: str | Path) -> tuple[int, bool]:
    """``check_nesting``'s scan of one line: the depth and string state after it."""
    escaped = False
    for match in _JSON_TOKENS.finditer(line):
        char = match.group()
        if escaped:
            escaped = False
        elif in_string:
            if char == b"\\":
                escaped = True
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise UserError(
                    f"Line {number} of {file} nests deeper than {max_depth} levels of arrays "
                    "and objects. Fix: flatten that record (a text field holds a string) or "
                    "remove the line.")
        elif char in (b"]", b"}"):
            depth -= 1
    return depth, in_string


def _open_local(path: Path, named: NamedDataset | None, label: str) -> _Opened:
    import datasets

    builder, files = _local_files(path)
    if builder == "json":
        for file in files:
            check_nesting(file)
    try:  # local files have a single split: ``split`` names hub splits only
        dataset = datasets.load_dataset(builder, data_files=files, split="train", streaming=True)
    except Exception as error:  # the builders raise many unrelated types
        raise UserError(f"Could not read {label}: {type(error).__name__}: {error}.") from error
    return _Opened(_read_guarded(dataset, label, True), label, named)


def _open_hub(source: str, split: str, named: NamedDataset | None) -> _Opened:
    import datasets

    hub_id = named.hub_id if named else source
    label = f"{source} ({hub_id})" if named else hub_id
    kwargs = {"data_dir": named.data_dir} if named and named.data_dir else {}
    try:
        dataset = datasets.load_dataset(hub_id, split=split, streaming=True, **kwargs)
    except (OSError, ValueError) as error:  # includes ConnectionError and DatasetNotFoundError
        raise _hub_error(named, hub_id, label, error) from error
    return _Opened(_read_guarded(dataset, label, False), label, named)


def _missing_fields(label: str, found: Sequence[str], expected: str, fix: str) -> UserError:
    return UserError(
        f"{label}: the records have the fields {sorted(found)}, expected {expected}. Fix: {fix}."
    )


# ---------------------------------------------------------------------------- CPT documents
def load_documents(
    source: str,
    split: str = "train",
    limit_docs: int | None = None,
    text_field: str | None = None,
    *,
    local_path: str | Path | None = None,
) -> Iterator[str]:
    """Documents for continued pretraining, lazily, as an iterator of strings.

    ``source``: a named CPT dataset, a hub id, or a local file/folder; ``local_path`` reads
    local files with a named dataset's field. ``text_field`` defaults to the named dataset's
    field (``content`` for starcoder-python), else ``text``. Empty documents are skipped;
    ``limit_docs`` caps how many are yielded. The source is opened and its first record checked
    here, so a missing file, an unreachable hub, a missing field or no data at all raise a
    ``UserError`` at the call, not in the middle of training.
    """
    opened = _open(source, split, local_path, "cpt")
    field = text_field or (opened.named.text_field if opened.named else None) or "text"
    documents = _documents(opened, field)
    first = next(documents, None)
    if first is None:
        raise UserError(f"No documents in {opened.label}: every {field!r} value is empty.")
    stream = itertools.chain([first], documents)
    return stream if limit_docs is None else itertools.islice(stream, max(limit_docs, 0))


def _documents(opened: _Opened, field: str) -> Iterator[str]:
    """The texts of the records; records without ``field`` (or with it null) are skipped and
    counted: a warning gives their number, and an error is raised when no record has it."""
    missing, read, first_fields = 0, 0, None
    try:
        for number, record in enumerate(opened.records):
            read = number + 1
            if record.get(field) is None:  # columnar readers fill a missing field with None
                missing += 1
                first_fields = list(record) if first_fields is None else first_fields
                if missing == read and read >= FIELD_SCAN_RECORDS:
                    break
                continue
            text = record[field]
            if not isinstance(text, str):
                raise UserError(
                    f"{opened.label}, record {number}: {field!r} is {type(text).__name__}, not "
                    "text."
                )
            if text.strip():
                yield text
        if missing and missing == read:
            if field in (first_fields or []):  # present, but null in every record read
                raise UserError(
                    f"{opened.label}: {field!r} is null in every record read ({read}). Fix: "
                    f"give each record its text in {field!r}, or set target.text_field to the "
                    "field that holds it.")
            fix = ("rename the field in the data, or set target.text_field to the field with "
                   "the text")
            raise _missing_fields(opened.label, first_fields or [], repr(field), fix)
    finally:
        _warn_skipped(opened.label, missing, read, repr(field))


def _warn_skipped(label: str, missing: int, read: int, fields: str) -> None:
    """Say how many records were skipped for lacking the field(s) (none: say nothing)."""
    if 0 < missing < read:
        LOG.warning("warning: %s: %d of %d records read have no %s field and were skipped",
                    label, missing, read, fields)


# ---------------------------------------------------------------------------- IFT pairs
def render_messages_plain(messages: Sequence[dict]) -> str:
    """A chat prompt without a chat template: one ``"Role: content"`` line per message
    (``User``, ``Assistant``, ``System``), then ``"Assistant:"`` for the reply to follow."""
    lines = [
        f"{ROLE_NAMES.get(m['role'], str(m['role']).capitalize())}: {m['content']}"
        for m in messages
    ]
    return "\n".join([*lines, "Assistant:"])


def pair_from_messages(
    messages: Sequence[dict], tokenizer: PreTrainedTokenizerBase | None = None
) -> Pair | None:
    """The pair of a chat: the last assistant message is the response, every message before it
    the prompt (earlier assistant turns included; messages after it are dropped).

    With a tokenizer that has a chat template, the prompt is
    ``tokenizer.apply_chat_template(prompt_messages, add_generation_prompt=True)`` (as text) and
    the response is the message content as is. Otherwise the prompt is
    ``render_messages_plain`` and the response gets a leading space (``"Assistant: reply"``).
    Returns ``None`` for an empty reply. Raises ``ValueError`` on malformed messages.
    """
    if not isinstance(messages, (list, tuple)) or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in messages
    ):
        raise ValueError("'messages' must be a list of {'role': ..., 'content': ...} objects")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise ValueError("the messages hold no 'assistant' message to learn from")
    if any(m["content"] is not None and not isinstance(m["content"], str) for m in messages):
        raise ValueError("every message 'content' must be text")
    turns = [{"role": m["role"], "content": m["content"] or ""} for m in messages[: last + 1]]
    response = turns[-1]["content"]
    if not response.strip():
        return None
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(
            turns[:-1], tokenize=False, add_generation_prompt=True
        )
        return Pair(prompt=prompt, response=response)
    return Pair(prompt=render_messages_plain(turns[:-1]), response=" " + response)


def load_pairs(
    source: str,
    split: str = "train",
    limit: int | None = None,
    *,
    local_path: str | Path | None = None,
    prompt_field: str | None = None,
    response_field: str | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> list[Pair]:
    """Prompt/response pairs for instruction finetuning (loss on the response only).

    ``source``: a named IFT dataset, a hub id, or a local file/folder; ``local_path`` reads local
    files with a named dataset's fields. Fields, in order of precedence: ``prompt_field`` /
    ``response_field``; the named dataset's (``query``/``response`` for metamathqa); ``prompt``
    + ``response``; ``messages`` (rendered by ``pair_from_messages`` with ``tokenizer``).
    Prompts and responses are used verbatim; records with an empty response are skipped;
    ``limit`` caps the number of pairs (the stream stops there, so a hub dataset is read only
    that far).
    """
    opened = _open(source, split, local_path, "ift")
    named = opened.named
    fields = (
        prompt_field or (named.prompt_field if named else None),
        response_field or (named.response_field if named else None),
    )
    pairs = _pairs(opened, fields, tokenizer)
    result = list(pairs if limit is None else itertools.islice(pairs, max(limit, 0)))
    if not result and (limit is None or limit > 0):
        raise UserError(f"No prompt/response pairs in {opened.label}: every response is empty.")
    return result


def _pairs(
    opened: _Opened,
    fields: tuple[str | None, str | None],
    tokenizer: PreTrainedTokenizerBase | None,
) -> Iterator[Pair]:
    prompt_field, response_field, use_messages = "", "", False
    missing, read = 0, 0
    try:
        for number, record in enumerate(opened.records):
            read = number + 1
            if number == 0:
                prompt_field, response_field, use_messages = _pair_schema(
                    opened.label, record, fields)
            wanted = "messages" if use_messages else response_field
            if record.get(wanted) is None:  # columnar readers fill a missing field with None
                missing += 1
                continue
            pair = _pair_of(opened.label, number, record, prompt_field, response_field,
                            use_messages, tokenizer)
            if pair is not None:
                yield pair
    finally:
        _warn_skipped(opened.label, missing, read,
                      "'messages'" if use_messages else repr(response_field))


def _pair_of(label: str, number: int, record: dict, prompt_field: str, response_field: str,
             use_messages: bool, tokenizer: PreTrainedTokenizerBase | None) -> Pair | None:
    """The pair of one record (None for an empty response)."""
    if use_messages:
        try:
            return pair_from_messages(record.get("messages") or [], tokenizer)
        except ValueError as error:
            raise UserError(f"{label}, record {number}: {error}.") from error
    prompt, response = record.get(prompt_field), record.get(response_field)
    if not isinstance(prompt, (str, type(None))) or not isinstance(response, (str, type(None))):
        raise UserError(
            f"{label}, record {number}: {prompt_field!r} and {response_field!r} must be text."
        )
    return Pair(prompt or "", response) if response and response.strip() else None


def _pair_schema(
    label: str, record: dict, fields: tuple[str | None, str | None]
) -> tuple[str, str, bool]:
    """(prompt field, response field, whether to read ``messages``) from the first record."""
    prompt_field, response_field = fields
    if prompt_field or response_field:
        wanted = (prompt_field or "prompt", response_field or "response")
        if all(field in record for field in wanted):
            return wanted[0], wanted[1], False
        fix = "rename the fields in the data, or set the prompt and response field names"
        raise _missing_fields(label, list(record), f"{wanted[0]!r} and {wanted[1]!r}", fix)
    if "prompt" in record and "response" in record:
        return "prompt", "response", False
    if "messages" in record:
        return "", "", True
    fix = "rename the fields in the data, or set the prompt and response field names"
    raise _missing_fields(label, list(record), "'prompt' and 'response', or 'messages'", fix)
