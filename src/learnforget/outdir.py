"""The output folder of a study: one writer at a time (a lock), one study per folder, and a
results store checked before anything is rewritten from it.

``learnforget run`` holds ``OUT/.learnforget.lock`` (a ``filelock`` lock, released by the
operating system when the process ends, however it ends) for as long as it writes OUT, and
writes who holds it into ``OUT/.learnforget.lock.json`` so a second ``run`` can name the
process. ``OUT/study.json`` records the study the folder belongs to.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from learnforget.errors import UserError

LOCK_NAME = ".learnforget.lock"
HOLDER_NAME = ".learnforget.lock.json"
STUDY_NAME = "study.json"
# What makes a study another study: its runs could not be compared with the folder's.
IDENTITY_FIELDS = ("name", "base", "target")


def _holder(out: Path) -> str:
    """Who holds OUT's lock, as the holder file describes it."""
    try:
        info = json.loads((out / HOLDER_NAME).read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"process {info['pid']} on {info['host']} (since {since}: {info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold OUT's lock while the body runs; a ``UserError`` naming the holder when another
    process has it. ``out`` must exist."""
    lock = FileLock(str(out / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(
            f"{out} is in use by {_holder(out)}: wait for it to finish or stop it (Ctrl-C), "
            "or give another --out") from None
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                  "command": " ".join(["learnforget", *sys.argv[1:]])}
        with contextlib.suppress(OSError):
            (out / HOLDER_NAME).write_text(json.dumps(holder))
        yield
    finally:
        with contextlib.suppress(OSError):
            (out / HOLDER_NAME).unlink()
        lock.release()


def _differences(old: object, new: object, prefix: str = "") -> Iterator[str]:
    """Dotted names of the fields that differ between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            name = f"{prefix}.{key}" if prefix else key
            yield from _differences(old.get(key), new.get(key), name)
    elif old != new:
        yield prefix


def _show(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_same_study(out: Path, study: dict, force: bool = False) -> list[str]:
    """Compare the study about to run with the one OUT belongs to (``OUT/study.json``).

    A different study (another name, base model or target) is a ``UserError`` naming the
    differing fields, unless ``force``. Other changes (more methods, budgets, tasks) extend the
    study and are allowed; their field names are returned so the caller can say so."""
    path = out / STUDY_NAME
    if force or not path.exists():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({exc}): pass --force-new-study to replace it "
                        "with this study") from None
    if not isinstance(old, dict) or not isinstance(old.get("name"), str):
        raise UserError(f"{path} is not a study record (it holds {type(old).__name__} "
                        f"{_show(old)[:60]}): pass --force-new-study to replace it with this "
                        "study, or give another --out")
    changed = list(_differences(old, study))
    different = [f for f in changed if f.split(".")[0] in IDENTITY_FIELDS]
    if different:
        details = "; ".join(f"{f}: {_show(_get(old, f))} here, {_show(_get(study, f))} in the "
                            "study file" for f in different)
        raise UserError(
            f"{out} holds another study ({details}): give another --out, or pass "
            "--force-new-study to add this study's runs to that folder's store and report")
    return changed


def _get(tree: object, dotted: str) -> object:
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


REPORT_SPACE = 20 * 2**20  # bytes free that writing a report needs at the least


def check_report_writable(out: Path) -> None:
    """A ``UserError`` when the report cannot be written into ``out``: a read-only folder or
    file system, or a full disk. Checked before the store is read, so that these are not taken
    for a damaged store (which reading them would suggest)."""
    from learnforget.preflight import read_only_mount

    if not os.access(out, os.W_OK | os.X_OK) or read_only_mount(out):
        raise UserError(f"{out} is read-only (the file system or the folder's permissions): "
                        "its store is fine, but the report cannot be written there; copy the "
                        "folder somewhere writable and run `learnforget report` on the copy")
    free = shutil.disk_usage(out).free
    if free < REPORT_SPACE:
        raise UserError(f"the disk holding {out} is full ({free / 2**20:.1f} MiB free): its "
                        "store is fine; free some space and run `learnforget report` again")


def check_store_for_report(out: Path) -> None:
    """A ``UserError`` unless ``OUT/results.sqlite`` can be read and holds measurements, so a
    good ``measurements.csv`` and report are never replaced by empty ones."""
    path = out / "results.sqlite"
    if not path.exists():
        raise UserError(f"{out} has no results.sqlite: give the folder `learnforget run` wrote")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a results store: nothing was written")
    check_report_writable(out)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("damaged pages")
            count = db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path} is not a readable results store ({exc}); nothing was written "
                        "(the existing report and measurements.csv are kept): restore the file "
                        "or run the study again") from None
    if not count:
        raise UserError(f"{path} holds no measurements yet; nothing was written (the existing "
                        "report and measurements.csv are kept): run `learnforget run` first")
