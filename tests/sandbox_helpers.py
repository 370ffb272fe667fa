"""What the sandbox tests share: a private folder for their sandboxes, the check that nothing
is left running, and hostile programs that record every attack that did not raise."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from learnforget.measure.sandbox import (
    TEMP_PREFIX,
    ExecutionResult,
    run_program,
    sandbox_isolation,
)

ISOLATION = sandbox_isolation()
BOTH_SETUPS = pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "fallback"])
# The tests' sandboxes (and canary folders) live in a folder of their own, so that the
# leftover-process check never sees another process's sandboxes.
PRIVATE_TMP = tempfile.mkdtemp(prefix="learnforget-sandbox-tests-")
os.chmod(PRIVATE_TMP, 0o711)
atexit.register(shutil.rmtree, PRIVATE_TMP, ignore_errors=True)
SANDBOX_MARKER = f"TMPDIR={os.path.join(PRIVATE_TMP, TEMP_PREFIX)}".encode()


def use_private_temporary_folder(monkeypatch) -> None:
    """Sandboxes started from here on create their folders in PRIVATE_TMP."""
    monkeypatch.setattr(tempfile, "tempdir", PRIVATE_TMP)


def sandbox_processes() -> list[int]:
    """Live processes started by any sandbox run (they carry its TMPDIR in their environment)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if SANDBOX_MARKER in Path(entry.path, "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_contained(result: ExecutionResult) -> None:
    """Not passed, nothing left running, and the next sandbox can still start threads."""
    assert result.status != "passed", result
    assert sandbox_processes() == []
    follow_up = "import threading\nt = threading.Thread(target=print)\nt.start()\nt.join()\n"
    assert run_program(follow_up, timeout_s=10) == ExecutionResult("passed", "")
