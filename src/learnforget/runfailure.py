"""A run that failed: its traceback in ``OUT/runs/RUN_ID/error.txt`` and in the store, and one
line saying why (a full disk said as such)."""

from __future__ import annotations

import errno
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path

from learnforget.plan import RunConfig
from learnforget.store import Store

ERROR_FILE = "error.txt"


def first_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def record_failure(store: Store, out: Path, run: RunConfig, exc: Exception,
                   log: Callable[[str], None]) -> None:
    """Mark the run ``failed`` with its traceback, and write the whole traceback to
    ``OUT/runs/RUN_ID/error.txt``; on a full disk either write may fail, which is said, not
    raised (the executor marks the run failed if the store still says ``running``)."""
    error = "".join(traceback.format_exception(exc))
    where = out / "runs" / run.run_id / ERROR_FILE
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(error)
    except OSError:
        where = None
    try:
        store.set_status(run.run_id, "failed", error[-4000:])
    except Exception as store_exc:  # the failure is reported either way
        try:  # the store's row may be written and only run.json beside it not
            recorded = store.run_status(run.run_id) == "failed"
        except Exception:
            recorded = False
        log(f"the failure of run {run.run_id} is recorded in the store, but its run.json could "
            f"not be updated: {first_line(store_exc)}" if recorded else
            f"could not record the failure of run {run.run_id} in the store: "
            f"{first_line(store_exc)}")
    log(f"run {run.run_id} ({run.label}, lr {run.method.lr:g}) failed: "
        f"{disk_full_reason(exc, out) or first_line(exc)}"
        + (f" (full error: {where})" if where else ""))


def disk_full_reason(exc: BaseException, out: Path) -> str | None:
    """"the disk holding OUT is full: …" when ``exc`` comes from a full disk — an ``OSError``
    ENOSPC, or torch's serializer, which says only "unexpected pos N vs M" when a write comes
    up short; None otherwise."""
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    if not full and "unexpected pos" in str(exc):
        try:
            full = shutil.disk_usage(out).free < 64 * 2**20
        except OSError:
            full = False
    return f"the disk holding {out} is full ({first_line(exc)})" if full else None
