"""Run generated Python code in a sandbox: never in this process, with OS-level limits.

Each program runs in its own subprocess tree (Linux only)::

    this process ── runner (python -I -S, new session, new network, PID and mount namespaces,
                      │     a size-capped tmpfs over the program's folder)
                      └─ init (PID 1 of the new PID namespace, waits for the program)
                           ├─ checker (with a ``Check`` only: runs the test, never the program)
                           └─ program (uid ``nobody`` when root; rlimits; Landlock; seccomp)

The runner is the trusted script ``sandbox_child.py`` (with ``sandbox_wire.py`` and
``sandbox_check.py``, which it loads from its folder). It applies the limits itself instead of
through ``subprocess``'s ``preexec_fn``, which Python documents as unsafe in the presence of
threads (``run_programs`` starts sandboxes from a thread pool). What is isolated, the fallbacks
where the kernel refuses namespaces, and what is not guaranteed: ``docs/sandbox.md``.

Status mapping: without a check, exit 0 after the last line ran -> ``passed``; with a check,
the checker's verdict that ``check(candidate)`` returned -> ``passed``. An exception
(``AssertionError`` included), ``sys.exit`` or any other nonzero exit -> ``failed``; the
wall-clock or CPU limit -> ``timed_out``; ``SyntaxError``, ``MemoryError``, death by a signal,
the total write limit or a sandbox that could not start -> ``error``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import math
import os
import secrets
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
from learnforget.measure import sandbox_wire as _wire  # how the check reaches the checker

Status = Literal["passed", "failed", "timed_out", "error"]

TEMP_PREFIX = "learnforget-sandbox-"
_DETAIL_CHARS = 600
_MARKER_CAP = 64 * 1024
_STOP_GRACE_S = 2.0
_OPEN_FILES = 256  # RLIMIT_NOFILE of the program
_FOLDER_FILES = 10_000  # files and folders the program may have in its folder
_POLL_S = 0.02  # how often the tool measures the folder (at least; longer for big folders)


@dataclass(frozen=True)
class ExecutionResult:
    """How one program ended: ``status`` and a short reason or the tail of its stderr."""

    status: Status
    detail: str


@dataclass(frozen=True)
class Check:
    """A test that decides a program from outside it (docs/sandbox.md, "Checks").

    ``test`` defines ``check(candidate)``, which calls ``candidate`` (and ``entry_point``) in
    place of the program's function ``entry_point``; ``helpers`` is trusted code the test may
    use (e.g. a HumanEval prompt's helper functions), run before ``test``. Both run in a
    checker process that never runs the program's code: each call sends its arguments to the
    program process and returns a plain copy of what the function returned.
    """

    test: str
    entry_point: str
    helpers: str = ""


@dataclass(frozen=True)
class SandboxIsolation:
    """Which isolation the kernel granted, as measured by running an empty program."""

    network: str
    processes: str
    user: str
    landlock_abi: int = 0  # Landlock confining the program (0: none): 1+ files, 4+ TCP, 6+ signals
    syscall_filter: bool = False  # a seccomp filter denies sockets, tracing, namespaces, mounts
    folder_tmpfs: bool = False  # the folder is a size-capped tmpfs (else the tool polls its size)

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


@dataclass(frozen=True)
class _Limits:
    """The limits of one run (see ``run_program``)."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    file_size_mb: int = 10
    total_write_mb: int = 64
    max_processes: int = 64
    guard: bool = True
    namespaces: bool = True


@dataclass
class _Run:
    """Everything one sandboxed run reported, before it is mapped to a status."""

    stopped: str  # "" (ended by itself), "deadline", or why its folder was over its cap
    runner_returncode: int
    lines: list[str]
    stderr_tail: str
    cpu_limit_s: int
    token: str | None  # the checker's token, None without a check


def run_program(
    source: str,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    *,
    check: Check | None = None,
    file_size_mb: int = 10,
    total_write_mb: int = 64,
    max_processes: int = 64,
    guard: bool = True,
    namespaces: bool = True,
) -> ExecutionResult:
    """Run ``source`` as a Python program in the sandbox and say how it ended.

    Without ``check`` it passes by running to its last line. With ``check`` it passes when
    ``check.test`` passes against it, the test running in a process of its own (see ``Check``).
    ``timeout_s`` is wall-clock time (the CPU limit is its ceiling + 1 s); ``memory_mb`` caps the
    address space; ``file_size_mb`` caps each file written, ``total_write_mb`` everything in the
    program's folder; ``max_processes`` caps processes and threads (RLIMIT_NPROC, counted per
    user). ``guard`` adds the in-process prelude that blocks destructive calls; the OS-level
    isolation applies either way. ``namespaces=False`` skips the network, PID and mount
    namespaces, to exercise the fallback that machines without them get.
    """
    limits = _Limits(timeout_s, memory_mb, file_size_mb, total_write_mb, max_processes, guard,
                     namespaces)
    return _classify(_execute(source, check, limits))


def run_programs(sources: list[str], workers: int = 2, checks: list[Check] | None = None,
                 **limits) -> list[ExecutionResult]:
    """Run each of ``sources`` with ``run_program(source, check=checks[i], **limits)``,
    ``workers`` at a time, and return the results in the same order. Threads only wait on the
    sandbox subprocesses."""
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    if checks is not None and len(checks) != len(sources):
        raise UserError(f"{len(checks)} checks for {len(sources)} programs")
    pairs = zip(sources, checks if checks is not None else [None] * len(sources), strict=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pair: run_program(pair[0], check=pair[1], **limits), pairs))


@functools.lru_cache(maxsize=1)
def sandbox_isolation() -> SandboxIsolation:
    """Measure once per process which isolation this machine grants (runs an empty program)."""
    run = _execute("pass\n", None, _Limits(timeout_s=30.0, guard=False))
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
                            syscall_filter=words.get("seccomp") == "1",
                            folder_tmpfs=words.get("tmpfs") == "1")


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


def _execute(source: str, check: Check | None, limits: _Limits) -> _Run:
    if sys.platform != "linux":
        raise UserError("running generated code needs Linux (namespaces, rlimits, /proc)")
    if min(limits.timeout_s, limits.memory_mb, limits.file_size_mb, limits.total_write_mb,
           limits.max_processes) <= 0:
        raise UserError("sandbox limits must be positive: timeout_s, memory_mb, file_size_mb, "
                        "total_write_mb, max_processes")
    root = os.geteuid() == 0
    uid, gid = _nobody_ids() if root else (None, None)
    nproc = limits.max_processes if root else _tasks_of_current_user() + limits.max_processes
    cpu_s = math.ceil(limits.timeout_s) + 1
    token = secrets.token_hex(16) if check is not None else None
    check_fd = _check_pipe(check, token) if check is not None else None
    workdir = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    read_end, write_end = os.pipe()
    try:
        Path(workdir, "program.py").write_text(source, encoding="utf-8")
        os.chmod(Path(workdir, "program.py"), 0o644)
        if root:
            os.chown(workdir, uid, gid)
        config = {"marker_fd": write_end, "check_fd": check_fd, "cpu_s": cpu_s,
                  "memory_bytes": limits.memory_mb << 20,
                  "file_size_bytes": limits.file_size_mb << 20,
                  "folder_bytes": limits.total_write_mb << 20, "folder_files": _FOLDER_FILES,
                  "max_processes": nproc, "open_files": _OPEN_FILES, "uid": uid, "gid": gid,
                  "guard": limits.guard, "namespaces": limits.namespaces}
        env = {"PATH": "/usr/bin:/bin", "LANG": os.environ.get("LANG", "C.UTF-8"),
               "HOME": workdir, "TMPDIR": workdir}
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_CHILD),
                 *(f"{name}={'-' if value is None else int(value)}"
                   for name, value in config.items())],
                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=stderr, pass_fds=tuple(fd for fd in (write_end, check_fd) if fd is not None),
                start_new_session=True,
            )
            os.close(write_end)
            write_end = -1
            if check_fd is not None:
                os.close(check_fd)
                check_fd = None
            try:
                cap = _FolderCap(workdir, limits.total_write_mb << 20)
                stopped, marker = _wait(proc, read_end, time.monotonic() + limits.timeout_s, cap)
                if stopped:
                    # The runner kills and reaps the program's tree itself, so no zombies are
                    # left for an init that may never reap them (e.g. in a container).
                    proc.send_signal(signal.SIGTERM)
                    marker += _wait(proc, read_end, time.monotonic() + _STOP_GRACE_S)[1]
            finally:
                _kill_tree(proc, workdir)
            lines = (marker + _drain(read_end)).decode("utf-8", "replace").splitlines()
            return _Run(stopped, proc.returncode, lines, _tail(stderr), cpu_s, token)
    finally:
        os.close(read_end)
        for fd in (write_end, check_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        _remove_tree(workdir)


def _check_pipe(check: Check, token: str) -> int:
    """A pipe that holds the check (and the token the checker signs its verdict with), for the
    checker alone to read: its read end. Nothing of it is ever written to the program's folder
    or passes through the memory of a process the program descends from."""
    data = _wire.encode((token, check.entry_point, check.helpers, check.test))
    read_end, write_end = os.pipe()
    try:
        if len(data) > 60_000:  # more than a pipe holds by default: make room, or refuse
            try:
                fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, len(data))
            except OSError as exc:
                raise UserError(f"the check is too large ({len(data)} bytes): {exc}") from None
        view = memoryview(data)
        while view:
            view = view[os.write(write_end, view):]
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end


class _FolderCap:
    """The tool's own watch on the program's folder: what it holds, walked from outside (the
    fallback for machines without the tmpfs; where the tmpfs is mounted it sees nothing)."""

    def __init__(self, folder: str, limit_bytes: int) -> None:
        self.folder, self.limit_bytes = folder, limit_bytes
        self.next_poll, self.interval = 0.0, _POLL_S

    def over(self) -> str:
        """Why the folder is over its cap now (``""`` if it is not, or it is not time to look);
        space is what the files occupy on disk, each hard-linked file once."""
        now = time.monotonic()
        if now < self.next_poll:
            return ""
        used, entries = _folder_usage(self.folder, _FOLDER_FILES)
        spent = time.monotonic() - now
        self.interval = max(_POLL_S, 2 * spent)  # a huge folder is not walked without a pause
        self.next_poll = now + spent + self.interval
        if entries > _FOLDER_FILES:
            return f"more than {_FOLDER_FILES} files in its folder"
        if used > self.limit_bytes:
            return (f"{used / 2 ** 20:.1f} MB written into its folder, over its "
                    f"{self.limit_bytes >> 20} MB")
        return ""


def _folder_usage(folder: str, max_entries: int) -> tuple[int, int]:
    """Bytes allocated under ``folder`` (each inode once) and the number of entries, counting
    no further than ``max_entries`` + 1. A folder the program made unreadable is made readable
    again first (the tool owns it or is root)."""
    seen: set[tuple[int, int]] = set()
    used, entries, todo = 0, 0, [folder]
    while todo and entries <= max_entries:
        path = todo.pop()
        try:
            listing = list(os.scandir(path))
        except PermissionError:
            with contextlib.suppress(OSError):
                os.chmod(path, 0o700)
            try:
                listing = list(os.scandir(path))
            except OSError:
                continue
        except OSError:
            continue
        for entry in listing:
            entries += 1
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                used += info.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                todo.append(entry.path)
    return used, entries


def _wait(proc: subprocess.Popen, read_end: int, deadline: float,
          cap: _FolderCap | None = None) -> tuple[str, bytes]:
    """Collect the runner's messages until it exits (left unreaped, so its process group id
    cannot be reused before we kill the group), the deadline passes (``"deadline"``) or the
    folder goes over its cap (the reason)."""
    marker = bytearray()
    eof = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "deadline", bytes(marker)
        over = cap.over() if cap is not None else ""
        if over:
            return over, bytes(marker)
        if eof:
            time.sleep(min(remaining, 0.002))
        elif select.select([read_end], [], [], min(remaining, 0.01))[0]:
            chunk = os.read(read_end, 65536)
            eof = not chunk
            if len(marker) < _MARKER_CAP:
                marker += chunk
        exited = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if exited is not None:
            return "", bytes(marker)


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

    if run.stopped == "deadline":
        return ExecutionResult("timed_out", detail("wall-clock limit reached"))
    if run.stopped:
        return ExecutionResult("error", detail(f"total write limit reached: {run.stopped}"))
    wait = _last(run.lines, "wait")
    outcome = _last(run.lines, "outcome")
    if run.runner_returncode < 0:
        name = _signal_name(-run.runner_returncode)
        return ExecutionResult("error", detail(f"the sandbox runner was killed by {name}"))
    if run.runner_returncode != 0 or wait is None:
        reason = " ".join(outcome) if outcome else "the sandbox runner failed"
        return ExecutionResult("error", detail(reason))
    if _last(run.lines, "full") is not None:
        return ExecutionResult("error", detail("total write limit reached: its folder is full"))
    if run.token is not None:
        return _classify_check(run, wait, detail)
    how, number, cpu = wait[0], int(wait[1]), float(wait[2])
    if how == "signal":
        return _killed(run, number, cpu, detail)
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


def _killed(run: _Run, number: int, cpu: float, detail, who: str = "") -> ExecutionResult:
    """A process that died of signal ``number`` after ``cpu`` seconds of CPU time."""
    if number == signal.SIGXCPU or cpu >= run.cpu_limit_s:
        return ExecutionResult("timed_out", detail(f"{who}CPU limit reached ({cpu:.1f} s)"))
    return ExecutionResult("error", detail(f"{who}killed by {_signal_name(number)}"))


def _classify_check(run: _Run, wait: list[str], detail) -> ExecutionResult:
    """A run with a check: only the checker's verdict, signed with this run's token, can pass
    it; the program process's end explains a check that lost it."""
    if _last(run.lines, "started") is None:
        outcome = _last(run.lines, "outcome")
        return ExecutionResult("error", detail(" ".join(outcome or ["the sandbox did not start"])))
    verdict = next((words[2:] for words in reversed([line.split(" ") for line in run.lines])
                    if words[:2] == ["outcome", run.token] and len(words) > 2), None)
    if verdict is not None and verdict[0] == "passed":
        return ExecutionResult("passed", "")
    if verdict is None:
        checked = _last(run.lines, "check")
        if checked is not None and checked[0] == "signal":
            return _killed(run, int(checked[1]), float(checked[2]), detail, "the check: ")
        return ExecutionResult("error", detail("the check ended without a verdict"))
    status, reason = verdict[0], " ".join(verdict[1:])
    if status == "lost":
        how, number, cpu = wait[0], int(wait[1]), float(wait[2])
        if how == "signal":
            return _killed(run, number, cpu, detail)
        return ExecutionResult("failed", detail(
            f"the program exited (status {number}) before the check ended"))
    if status == "error":
        return ExecutionResult("error", detail(reason))
    return ExecutionResult("failed", detail(reason))
