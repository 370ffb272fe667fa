"""The built-in code target domain: real Python from the running interpreter's standard library.

Origin: the ``.py`` files under ``sysconfig.get_paths()["stdlib"]`` (Python Software Foundation
License; the same files every Python installation carries). Filtering, in this order:

1. ``site-packages``/``dist-packages`` are not walked (third-party code, not the stdlib).
2. Tests: any file under a folder named ``test``, ``tests`` or ``idle_test``, or named
   ``test_*.py``.
3. Unreadable: larger than ``MAX_FILE_BYTES``, not UTF-8, or not parseable by this interpreter.
4. Generated tables (the charmap codecs ``encodings/cp*.py``, ``mac_*.py``, ``iso8859_*.py``,
   ``koi8_*.py`` ..., ``html/entities.py``, ``_sysconfigdata_*.py``): detected by content, see
   ``is_generated_table``. They are near-copies of each other and would inflate measured learning.
5. The rest is split by file: held out iff a SHA-256 hash of the relative path falls in an 8%
   bucket. Held-out files that mostly repeat training lines are then dropped, see
   ``_near_duplicates``.

Scanning, filtering and extracting the IFT pairs take several seconds, so the results are cached
in-process and on disk under ``cache_dir()/data/``, keyed by the Python version, the stdlib folder
and ``FILTER_VERSION``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import platform
import re
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from learnforget.data.types import Pair
from learnforget.paths import cache_dir

CodeSplit = Literal["train", "heldout"]

FILTER_VERSION = "1"  # bump whenever a rule below changes: it invalidates the disk cache
HELDOUT_PERMILLE = 80  # share of files held out, in thousandths
MAX_FILE_BYTES = 500_000
TEST_FOLDERS = frozenset({"test", "tests", "idle_test"})
SKIPPED_FOLDERS = frozenset({"site-packages", "dist-packages", "__pycache__"})
TABLE_LINE_SHARE = 0.6  # a file is a generated table if more of its code lines are literals...
MIN_TABLE_LINES = 40  # ...and it has this many such lines (tiny files like keyword.py stay)
NEAR_DUPLICATE_SHARE = 0.3  # drop a held-out file if more of its distinct lines occur in train
MIN_SHARED_LINE_CHARS = 20  # lines shorter than this (``return None``, ``else:``) do not count
MAX_BODY_LINES = 40  # IFT pairs: the longest function body kept after the docstring

_LITERAL = re.compile(
    r"""[rRbBuUfF]{0,2}(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")"""  # a one-line string
    r"|(?<![\w.])(?:0[xXoObB][0-9a-fA-F_]+|\d[\d_]*\.?\d*(?:[eE][+-]?\d+)?j?|\.\d+)"  # a number
)
_TABLE_REST = re.compile(r"[\s,:()\[\]{}+-]*(?:#.*)?")  # what a table line holds besides literals


@dataclass(frozen=True)
class CodeCorpus:
    """The filtered standard library: file texts by relative path, per split, and what was
    excluded, by reason (``tests``, ``unreadable``, ``generated``, ``near_duplicate``)."""

    train: dict[str, str]
    heldout: dict[str, str]
    excluded: dict[str, list[str]]


def stdlib_root() -> Path:
    """The running interpreter's standard library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def is_test_path(relative: str) -> bool:
    """Whether a stdlib file is part of a test suite (by folder or file name)."""
    *folders, name = Path(relative).parts
    return name.startswith("test_") or any(folder in TEST_FOLDERS for folder in folders)


def is_heldout_path(relative: str) -> bool:
    """Whether a file belongs to the held-out split (a stable hash of its relative path)."""
    digest = hashlib.sha256(relative.encode()).digest()
    return int.from_bytes(digest[:8], "big") % 1000 < HELDOUT_PERMILLE


def table_line_count(source: str) -> tuple[int, int]:
    """(table lines, code lines) of a Python source.

    Code lines are the lines that are neither blank nor only a comment. A table line holds one or
    more one-line literals (strings, numbers), punctuation ``,:()[]{}+-`` and at most a trailing
    comment, like ``0x00a0: 0x00a0,  # NO-BREAK SPACE``. Lines of multi-line strings (docstrings)
    are code lines: a well-documented module is not a table. A regular expression per line rather
    than ``tokenize``: the same verdict on every stdlib file, at a sixth of the time.
    """
    table = total = 0
    for line in source.split("\n"):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        total += 1
        rest, literals = _LITERAL.subn(" ", stripped)
        if literals and _TABLE_REST.fullmatch(rest):
            table += 1
    return table, total


def is_generated_table(source: str) -> bool:
    """Whether a file is a generated table: more than 60% of its code lines (and at least 40
    lines) hold nothing but literals and punctuation, like a codec's ``decoding_table``."""
    table, total = table_line_count(source)
    return table >= MIN_TABLE_LINES and table > TABLE_LINE_SHARE * total


def _shareable_lines(text: str) -> set[str]:
    """The distinct non-trivial lines of a file, stripped, for near-duplicate detection."""
    stripped = (line.strip() for line in text.splitlines())
    return {line for line in stripped if len(line) >= MIN_SHARED_LINE_CHARS}


def _near_duplicates(train: dict[str, str], heldout: dict[str, str]) -> list[str]:
    """Held-out files of which more than 30% of the distinct non-trivial lines occur in train.

    Exact line overlap rather than MinHash over shingles: the corpus is ~12 MB, so a set of every
    training line is cheap and exact, needs no extra dependency, and catches what matters here —
    boilerplate repeated across sibling modules (codec wrappers, lib2to3 fixers) — while a file
    that merely shares idioms (``raise TypeError(...)``) stays below the threshold.
    """
    train_lines: set[str] = set()
    for text in train.values():
        train_lines |= _shareable_lines(text)
    dropped = []
    for relative, text in heldout.items():
        lines = _shareable_lines(text)
        if lines and len(lines & train_lines) > NEAR_DUPLICATE_SHARE * len(lines):
            dropped.append(relative)
    return dropped


def _read_source(path: Path) -> str | None:
    """A file's text if it is at most ``MAX_FILE_BYTES``, UTF-8, and parses; else None."""
    if path.stat().st_size > MAX_FILE_BYTES:
        return None
    try:
        text = path.read_bytes().decode("utf-8")
        ast.parse(text)
    except (UnicodeDecodeError, SyntaxError, ValueError):
        return None
    return text


def scan_stdlib(root: Path) -> CodeCorpus:
    """Walk a standard library folder and apply every filtering rule (see the module doc)."""
    excluded: dict[str, list[str]] = {
        "tests": [],
        "unreadable": [],
        "generated": [],
        "near_duplicate": [],
    }
    kept: dict[str, str] = {}
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in SKIPPED_FOLDERS)
        for name in sorted(names):
            if not name.endswith(".py"):
                continue
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if is_test_path(relative):
                excluded["tests"].append(relative)
            elif (text := _read_source(path)) is None:
                excluded["unreadable"].append(relative)
            elif is_generated_table(text):
                excluded["generated"].append(relative)
            else:
                kept[relative] = text
    train = {rel: text for rel, text in kept.items() if not is_heldout_path(rel)}
    heldout = {rel: text for rel, text in kept.items() if is_heldout_path(rel)}
    excluded["near_duplicate"] = _near_duplicates(train, heldout)
    for relative in excluded["near_duplicate"]:
        del heldout[relative]
    return CodeCorpus(train=train, heldout=heldout, excluded=excluded)


def _disk_cache_path(root: Path, what: str) -> Path:
    """The cache file of ``what`` for this interpreter's stdlib and these filtering rules."""
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    name = f"stdlib-{platform.python_implementation()}-{platform.python_version()}-{where}"
    return cache_dir() / "data" / f"{name}-filter{FILTER_VERSION}-{what}.json"


def _load_or_build(cache_file: Path, build: Callable[[], Any]) -> Any:
    """A JSON value from ``cache_file``, or ``build()``'s, written there first."""
    if cache_file.is_file():
        try:
            return json.loads(cache_file.read_text(encoding="utf-8"))
        except ValueError:
            pass  # a damaged cache file is rebuilt below
    value = build()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(value), encoding="utf-8")
    os.replace(partial, cache_file)  # atomic: a concurrent reader never sees half a file
    return value


@lru_cache(maxsize=1)
def code_corpus() -> CodeCorpus:
    """The filtered standard library of the running interpreter (cached in-process and on disk)."""
    root = stdlib_root()
    fields = _load_or_build(_disk_cache_path(root, "files"), lambda: scan_stdlib(root).__dict__)
    return CodeCorpus(**fields)


def code_files(split: CodeSplit) -> dict[str, str]:
    """The kept files of one split: relative path -> text, in path order."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    return dict(getattr(code_corpus(), split))


def code_documents(split: CodeSplit) -> list[str]:
    """The texts of the kept standard-library files of one split."""
    return list(code_files(split).values())


def _dedent_lines(lines: list[str], indent: int) -> list[str]:
    """Remove ``indent`` leading spaces from each line that has them (others stay as they are:
    they are continuation lines of a string literal)."""
    prefix = " " * indent
    return [line[indent:] if line.startswith(prefix) else line for line in lines]


def function_pairs(source: str) -> list[Pair]:
    """HumanEval-like pairs from one Python source: for every function or method with a
    docstring and 1-40 lines after it, prompt = the ``def`` line(s) and the docstring moved to
    top level, response = the rest of the body, as indented in the prompt, ending with a newline.
    """
    # Lines as the parser counts them (str.splitlines would also break at form feeds).
    source = source.replace("\r\n", "\n").replace("\r", "\n")
    lines = source.split("\n")
    pairs = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or len(node.body) < 2:
            continue
        docstring, first = node.body[0], node.body[1]
        if ast.get_docstring(node) is None or docstring.lineno == node.lineno:
            continue
        if first.lineno == docstring.end_lineno:  # code on the docstring's line: no clean cut
            continue
        prompt = _dedent_lines(lines[node.lineno - 1 : docstring.end_lineno], node.col_offset)
        body = _dedent_lines(lines[docstring.end_lineno : node.end_lineno], node.col_offset)
        while body and not body[0].strip():
            body.pop(0)
        if not 1 <= len(body) <= MAX_BODY_LINES:
            continue
        pairs.append(Pair(prompt="\n".join(prompt) + "\n", response="\n".join(body) + "\n"))
    return pairs


def _build_pairs() -> dict[str, list[tuple[str, str]]]:
    """The IFT pairs of both splits as (prompt, response): the first occurrence of each prompt is
    kept, and held-out pairs whose prompt also occurs in train are dropped."""
    seen: set[str] = set()
    pairs: dict[str, list[tuple[str, str]]] = {}
    for split in ("train", "heldout"):  # train first: held out loses the shared prompts
        pairs[split] = []
        for text in code_files(split).values():
            for pair in function_pairs(text):
                if pair.prompt not in seen:
                    seen.add(pair.prompt)
                    pairs[split].append((pair.prompt, pair.response))
    return pairs


@lru_cache(maxsize=1)
def _code_pairs() -> dict[str, tuple[Pair, ...]]:
    """The IFT pairs of both splits (cached in-process and on disk)."""
    raw = _load_or_build(_disk_cache_path(stdlib_root(), "pairs"), _build_pairs)
    return {
        split: tuple(Pair(prompt, response) for prompt, response in raw[split]) for split in raw
    }


def code_ift_pairs(split: CodeSplit) -> list[Pair]:
    """Function-completion pairs (signature + docstring -> body) from one split's files."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    return list(_code_pairs()[split])


def code_excluded_files() -> dict[str, list[str]]:
    """The relative paths left out of the corpus, by reason."""
    return {reason: list(paths) for reason, paths in code_corpus().excluded.items()}


def code_filter_stats() -> dict[str, int]:
    """How many files each rule kept or excluded, and the characters per split."""
    corpus = code_corpus()
    stats = {f"files_{split}": len(getattr(corpus, split)) for split in ("train", "heldout")}
    stats |= {f"excluded_{reason}": len(paths) for reason, paths in corpus.excluded.items()}
    stats |= {
        f"chars_{split}": sum(map(len, getattr(corpus, split).values()))
        for split in ("train", "heldout")
    }
    return stats
