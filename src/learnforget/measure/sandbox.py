"""Run generated Python code in a sandbox: never in this process, with OS-level limits.

Each program runs in its own subprocess tree (Linux only)::

    this process ── runner (python -I -S, new session, new network and PID namespaces)
                      └─ init (PID 1 of the new PID namespace, waits for the program)
                           └─ program (uid ``nobody`` when root; rlimits; Landlock; seccomp)

The runner is the trusted script ``sandbox_child.py``. It applies the limits itself instead of
through ``subprocess``'s ``preexec_fn``, which Python documents as unsafe in the presence of
threads (``run_programs`` starts sandboxes from a thread pool). What is isolated, the fallbacks
where the kernel refuses namespaces, and what is not guaranteed: ``docs/sandbox.md``.

Status mapping: exit 0 after the last line ran -> ``passed``; an exception (``AssertionError``
included), ``sys.exit`` or any other nonzero exit -> ``failed``; the wall-clock or CPU limit ->
``timed_out``; ``SyntaxError``, ``MemoryError``, death by a signal or a sandbox that could not
start -> ``error``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from learnforget.errors import UserError

Status = Literal["passed", "failed", "timed_out", "error"]

TEMP_PREFIX = "learnforget-sandbox-"
_DETAIL_CHARS = 600
_MARKER_CAP = 64 * 1024
_STOP_GRACE_S = 2.0
_OPEN_FILES = 256  # RLIMIT_NOFILE of the program


@dataclass(frozen=True)
class ExecutionResult:
    """How one program ended: ``status`` and a short reason or the tail of its stderr."""

    status: Status
    detail: str


@dataclass(frozen=True)
class SandboxIsolation:
    """Which isolation the kernel granted, as measured by running an empty program."""

    network: str
    processes: str
    user: str
    landlock_abi: int = 0  # Landlock confining the program (0: none): 1+ files, 4+ TCP, 6+ signals
    syscall_filter: bool = False  # a seccomp filter denies sockets, tracing, namespaces, mounts

    @property
    def network_namespace(self) -> bool:
        """True when the program has its own network namespace (no interfaces up)."""
        return self.network.startswith("namespace")

    @property
    def pid_namespace(self) -> bool:
        """True when the program runs in its own PID namespace."""
        return self.processes.startswith("PID namespace")

    @property
    def unprivileged_user(self) -> bool:
        """True when the program runs as ``nobody`` instead of the calling user."""
        return self.user.startswith("nobody")


# The trusted runner, run as a script (``python -I -S``) in the sandbox's subprocess; what it
# reports on its pipe is described in its docstring.
_CHILD = Path(__file__).with_name("sandbox_child.py")


@dataclass
class _Run:
    """Everything one sandboxed run reported, before it is mapped to a status."""

    timed_out: bool
    runner_returncode: int
    lines: list[str]
    stderr_tail: str
    cpu_limit_s: int


def run_program(
    source: str,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    *,
    file_size_mb: int = 10,
    max_processes: int = 64,
    guard: bool = True,
    namespaces: bool = True,
) -> ExecutionResult:
    """Run ``source`` as a Python program in the sandbox and say how it ended.

    ``timeout_s`` is wall-clock time (the CPU limit is its ceiling + 1 s); ``memory_mb`` caps the
    address space; ``file_size_mb`` caps each file written; ``max_processes`` caps processes and
    threads (RLIMIT_NPROC, counted per user). ``guard`` adds the in-process prelude that blocks
    destructive calls; the OS-level isolation applies either way. ``namespaces=False`` skips the
    network and PID namespaces, to exercise the fallback that machines without them get.
    """
    return _classify(_execute(source, timeout_s, memory_mb, file_size_mb, max_processes, guard,
                              namespaces))


def run_programs(sources: list[str], workers: int = 2, **limits) -> list[ExecutionResult]:
    """Run each of ``sources`` with ``run_program(source, **limits)``, ``workers`` at a time,
    and return the results in the same order. Threads only wait on the sandbox subprocesses."""
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda source: run_program(source, **limits), sources))


@functools.lru_cache(maxsize=1)
def sandbox_isolation() -> SandboxIsolation:
    """Measure once per process which isolation this machine grants (runs an empty program)."""
    run = _execute("pass\n", 30.0, 1024, 10, 64, False, True)
    words = dict(w.split("=", 1) for line in run.lines for w in line.split()[1:] if "=" in w)
    if words.get("net") == "1":
        network = "namespace (no interfaces up)"
    else:
        network = "audit hook in the program (best effort)"
    if words.get("pid") == "1":
        processes = "PID namespace (all killed when the run ends)"
    else:
        processes = "new session; leftovers killed by process group and environment marker"
    uid = words.get("uid")
    if uid is None:
        user = f"unknown (the sandbox did not start: {_classify(run).detail})"
    elif os.geteuid() == 0 and uid != "0":
        user = f"nobody (uid {uid})"
    else:
        user = "the calling user" + (" in a user namespace" if words.get("net") == "1" else "")
    return SandboxIsolation(network=network, processes=processes, user=user,
                            landlock_abi=int(words.get("landlock", "0")),
                            syscall_filter=words.get("seccomp") == "1")


def _nobody_ids() -> tuple[int, int]:
    """uid and gid of ``nobody`` (65534 where the user database has no such entry)."""
    import pwd  # Unix only, like the rest of the sandbox

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


def _tasks_of_current_user() -> int:
    """Processes and threads of this uid now: RLIMIT_NPROC counts them all for non-root."""
    uid, total = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            total += int(fields.get("Threads", "1"))
    return total


def _execute(
    source: str, timeout_s: float, memory_mb: int, file_size_mb: int, max_processes: int,
    guard: bool, namespaces: bool,
) -> _Run:
    if sys.platform != "linux":
        raise UserError("running generated code needs Linux (namespaces, rlimits, /proc)")
    if timeout_s <= 0 or memory_mb <= 0 or file_size_mb <= 0 or max_processes <= 0:
        raise UserError("sandbox limits must be positive: timeout_s, memory_mb, file_size_mb, "
                        "max_processes")
    root = os.geteuid() == 0
    uid, gid = _nobody_ids() if root else (None, None)
    nproc = max_processes if root else _tasks_of_current_user() + max_processes
    cpu_s = math.ceil(timeout_s) + 1
    workdir = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    read_end, write_end = os.pipe()
    try:
        Path(workdir, "program.py").write_text(source, encoding="utf-8")
        os.chmod(Path(workdir, "program.py"), 0o644)
        if root:
            os.chown(workdir, uid, gid)
        config = {"marker_fd": write_end, "cpu_s": cpu_s, "memory_bytes": memory_mb << 20,
                  "file_size_bytes": file_size_mb << 20, "max_processes": nproc,
                  "open_files": _OPEN_FILES,
                  "uid": uid, "gid": gid, "guard": guard, "namespaces": namespaces}
        env = {"PATH": "/usr/bin:/bin", "LANG": os.environ.get("LANG", "C.UTF-8"),
               "HOME": workdir, "TMPDIR": workdir}
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_CHILD),
                 *(f"{name}={'-' if value is None else int(value)}"
                   for name, value in config.items())],
                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=stderr, pass_fds=(write_end,), start_new_session=True,
            )
            os.close(write_end)
            write_end = -1
            try:
                timed_out, marker = _wait(proc, read_end, time.monotonic() + timeout_s)
                if timed_out:
                    # The runner kills and reaps the program's tree itself, so no zombies are
                    # left for an init that may never reap them (e.g. in a container).
                    proc.send_signal(signal.SIGTERM)
                    marker += _wait(proc, read_end, time.monotonic() + _STOP_GRACE_S)[1]
            finally:
                _kill_tree(proc, workdir)
            lines = (marker + _drain(read_end)).decode("utf-8", "replace").splitlines()
            return _Run(timed_out, proc.returncode, lines, _tail(stderr), cpu_s)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
        _remove_tree(workdir)


def _wait(proc: subprocess.Popen, read_end: int, deadline: float) -> tuple[bool, bytes]:
    """Collect the runner's messages until it exits (left unreaped, so its process group id
    cannot be reused before we kill the group) or the deadline passes."""
    marker = bytearray()
    eof = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True, bytes(marker)
        if eof:
            time.sleep(min(remaining, 0.002))
        elif select.select([read_end], [], [], min(remaining, 0.01))[0]:
            chunk = os.read(read_end, 65536)
            eof = not chunk
            if len(marker) < _MARKER_CAP:
                marker += chunk
        exited = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if exited is not None:
            return False, bytes(marker)


def _kill_tree(proc: subprocess.Popen, workdir: str) -> None:
    """Kill the runner's process group, then every process still carrying this run's
    environment marker (a program may have left the group with setsid), then reap the runner."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    marker = f"TMPDIR={workdir}\0".encode()
    for _ in range(500):
        alive = _processes_with(marker)
        if not alive:
            break
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.002)
    proc.wait()


def _processes_with(marker: bytes) -> list[int]:
    """Live processes whose initial environment contains ``marker`` (zombies have none)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as handle:
                    if marker in handle.read():
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def _drain(read_end: int) -> bytes:
    """Whatever is left in the pipe once every writer is gone (never blocks)."""
    os.set_blocking(read_end, False)
    data = bytearray()
    while len(data) < _MARKER_CAP:
        try:
            chunk = os.read(read_end, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _tail(stderr) -> str:
    stderr.seek(0, os.SEEK_END)
    size = stderr.tell()
    stderr.seek(max(0, size - 4 * _DETAIL_CHARS))
    text = stderr.read().decode("utf-8", "replace").strip()
    return text[-_DETAIL_CHARS:]


def _remove_tree(path: str) -> None:
    """Remove the run's folder even where the program made parts of it read-only."""
    for folder, subfolders, _ in os.walk(path):
        for name in subfolders:
            subfolder = os.path.join(folder, name)
            if not os.path.islink(subfolder):  # never change anything outside the folder
                with contextlib.suppress(OSError):
                    os.chmod(subfolder, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last(lines: list[str], keyword: str) -> list[str] | None:
    """Words of the last line starting with ``keyword`` (the runner's lines come last)."""
    for line in reversed(lines):
        words = line.split(" ")
        if words[0] == keyword:
            return words[1:]
    return None


def _classify(run: _Run) -> ExecutionResult:
    """Map what the sandbox reported to a status (see the module docstring)."""
    def detail(reason: str) -> str:
        reason = reason[: _DETAIL_CHARS // 2]
        room = _DETAIL_CHARS - len(reason)
        return f"{reason}\n{run.stderr_tail[-room:]}" if run.stderr_tail else reason

    if run.timed_out:
        return ExecutionResult("timed_out", detail("wall-clock limit reached"))
    wait = _last(run.lines, "wait")
    outcome = _last(run.lines, "outcome")
    if run.runner_returncode < 0:
        name = _signal_name(-run.runner_returncode)
        return ExecutionResult("error", detail(f"the sandbox runner was killed by {name}"))
    if run.runner_returncode != 0 or wait is None:
        reason = " ".join(outcome) if outcome else "the sandbox runner failed"
        return ExecutionResult("error", detail(reason))
    how, number, cpu = wait[0], int(wait[1]), float(wait[2])
    if how == "signal":
        if number == signal.SIGXCPU or cpu >= run.cpu_limit_s:
            return ExecutionResult("timed_out", detail(f"CPU limit reached ({cpu:.1f} s)"))
        return ExecutionResult("error", detail(f"killed by {_signal_name(number)}"))
    if _last(run.lines, "started") is None:
        return ExecutionResult("error", detail(" ".join(outcome or ["the sandbox did not start"])))
    if outcome is None:
        reason = f"exited with status {number} before the end of the program"
        return ExecutionResult("failed", detail(reason))
    status, reason = outcome[0], " ".join(outcome[1:])
    if status == "passed" and number == 0:
        return ExecutionResult("passed", "")
    if status == "error":
        return ExecutionResult("error", detail(reason))
    return ExecutionResult("failed", detail(reason or f"exited with status {number}"))
