"""Run generated Python code in a sandbox: never in this process, with OS-level limits.

Each program runs in its own subprocess tree (Linux only)::

    this process ── runner (python -I -S, new session, new network and PID namespaces)
                      └─ init (PID 1 of the new PID namespace, waits for the program)
                           └─ program (uid ``nobody`` when we are root; rlimits; prelude)

The runner is the trusted code in ``_RUNNER`` below. It applies the limits itself instead of
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


# The trusted runner, executed with ``python -I -S -c`` in the sandbox's subprocess. It talks
# back on a pipe (``marker_fd``) with one line per event:
#   isolation net=<0|1> pid=<0|1>     namespaces granted (runner)
#   started uid=<uid>                 privileges dropped, about to run the program (program)
#   outcome <status> <detail>         how the program's code ended (program)
#   wait <exit|signal> <n> <cpu_s>    how the program process ended (its parent)
_RUNNER = r'''
import ctypes, os, resource, signal, sys

# Plain ``name=value`` arguments: importing json (and with it re) would double the start-up time.
CFG = {k: None if v == "-" else int(v) for k, v in (a.split("=") for a in sys.argv[1:])}
MARK = CFG["marker_fd"]
LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36

def say(*words):
    line = " ".join(str(w) for w in words).replace("\n", " ")[:1000] + "\n"
    try:
        os.write(MARK, line.encode("utf-8", "replace"))
    except OSError:
        pass

def unshare():
    if not CFG["namespaces"]:
        return False, False
    user = 0 if os.geteuid() == 0 else CLONE_NEWUSER
    for flags in (user | CLONE_NEWNET | CLONE_NEWPID, user | CLONE_NEWNET):
        if LIBC.unshare(flags) == 0:
            return True, bool(flags & CLONE_NEWPID)
    return False, False

def limit(kind, soft, hard=None):
    """Set a limit, never above the hard limit the caller already has."""
    ceiling = resource.getrlimit(kind)[1]
    cap = (lambda v: v) if ceiling == resource.RLIM_INFINITY else (lambda v: min(v, ceiling))
    resource.setrlimit(kind, (cap(soft), cap(soft if hard is None else hard)))

def guard(cwd, block_network, block_host):
    """Defence in depth inside the program; the real guarantees are the OS-level ones."""
    import socket
    unix = socket.AF_UNIX
    blocked = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
               "subprocess.Popen", "os.kill", "os.killpg", "ctypes.dlopen", "ctypes.dlsym",
               "ctypes.call_function", "os.chroot", "pty.spawn", "sys.remote_exec"}
    path_args = {"os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.truncate": (0,),
                 "os.chmod": (0,), "os.chown": (0,), "shutil.rmtree": (0,), "os.link": (0, 1),
                 "os.symlink": (1,), "os.mkdir": (0,), "os.utime": (0,), "shutil.move": (0, 1)}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    realpath = os.path.realpath

    def inside(path):
        if isinstance(path, int):
            return True
        try:
            full = realpath(os.path.join(cwd, os.fsdecode(path)))
        except (TypeError, ValueError):
            return False
        return full == cwd or full.startswith(cwd + "/") or full == "/dev/null"

    def hook(event, args):
        if event.startswith("socket."):  # every socket call but those on Unix sockets
            family = args[1] if event == "socket.__new__" else getattr(args[0], "family", None)
            if block_network and event != "socket.socketpair" and family != unix:
                raise PermissionError("network access is blocked in the sandbox")
            return
        if not block_host:
            return
        if event in blocked:
            raise PermissionError(f"{event} is blocked in the sandbox")
        if event == "open":
            mode, flags = args[1], args[2]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if writes and not inside(args[0]):
                raise PermissionError("writing outside the sandbox folder is blocked")
        elif event in path_args:
            for index in path_args[event]:
                if not inside(args[index]):
                    raise PermissionError(f"{event} outside the sandbox folder is blocked")

    sys.addaudithook(hook)  # unlike a patched os module, an audit hook cannot be removed

def relocate(path, moved):
    for old, new in moved.items():
        if path == old or path.startswith(old + "/"):
            return new + path[len(old):]
    return path

def print_traceback(exc, frames=True):
    """The program's traceback without the runner's own frame."""
    try:
        import traceback
        tb = exc.__traceback__.tb_next if frames else None
        traceback.print_exception(type(exc), exc, tb)
    except BaseException:
        pass

def run_program_child(source, net_isolated):
    try:
        limit(resource.RLIMIT_CORE, 0)
        limit(resource.RLIMIT_AS, CFG["memory_bytes"])
        limit(resource.RLIMIT_FSIZE, CFG["file_size_bytes"])
        limit(resource.RLIMIT_NPROC, CFG["max_processes"])
        limit(resource.RLIMIT_CPU, CFG["cpu_s"], CFG["cpu_s"] + 1)
        # The stdlib may sit under a folder only the caller can enter (e.g. a root-only home):
        # keep it importable after the drop through descriptors opened beforehand.
        dirs = [p for p in sys.path if os.path.isdir(p)]
        fds = {p: os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in dirs}
        if CFG["uid"] is not None:
            os.setgroups([])
            os.setresgid(CFG["gid"], CFG["gid"], CFG["gid"])
            os.setresuid(CFG["uid"], CFG["uid"], CFG["uid"])
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        moved = {p: f"/proc/self/fd/{fd}" for p, fd in fds.items()
                 if not os.access(p, os.R_OK | os.X_OK)}
        sys.path[:] = [moved.get(p, p) for p in dirs]
        for module in list(sys.modules.values()):
            search = getattr(module, "__path__", None)
            if isinstance(search, list):
                search[:] = [relocate(entry, moved) for entry in search]
        sys.path_importer_cache.clear()
        cwd = os.path.realpath(os.getcwd())
        say("started", "uid=%d" % os.getuid())
    except BaseException as exc:
        say("outcome error sandbox setup failed:", repr(exc))
        os._exit(1)
    sys.argv = ["program.py"]
    sys.dont_write_bytecode = True
    if CFG["guard"] or not net_isolated:
        guard(cwd, block_network=True, block_host=CFG["guard"])
    code = 1
    try:
        compiled = compile(source, "program.py", "exec")
    except (SyntaxError, ValueError) as exc:
        print_traceback(exc, frames=False)
        say("outcome error", type(exc).__name__ + ":", exc)
    else:
        try:
            exec(compiled, {"__name__": "__main__", "__builtins__": __builtins__})
        except MemoryError:
            say("outcome error MemoryError")
        except SystemExit as exc:
            say("outcome failed the program exited before its end (SystemExit: %r)" % (exc.code,))
        except BaseException as exc:
            print_traceback(exc)
            say("outcome failed", type(exc).__name__ + ":", exc)
        else:
            say("outcome passed")
            code = 0
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(code)

def descendants(root):
    """Processes below ``root`` in the process tree (read from /proc)."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as handle:
                    ppid = int(handle.read().rpartition(b")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found

def kill_descendants():
    """Kill and reap everything below this process; as a child subreaper it inherits the
    orphans, so once it has no children left there are no descendants left."""
    me = os.getpid()
    while True:
        for pid in descendants(me):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass
        except ChildProcessError:
            return

def on_terminate(action):
    def handler(signum, frame):
        try:
            action()
        finally:
            os._exit(1)
    signal.signal(signal.SIGTERM, handler)

def supervise(source, net_isolated, clean_up):
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        run_program_child(source, net_isolated)
    _, status, usage = os.wait4(child, 0)
    if clean_up:
        kill_descendants()
    cpu = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        say("wait signal", os.WTERMSIG(status), "%.3f" % cpu)
    else:
        say("wait exit", os.WEXITSTATUS(status), "%.3f" % cpu)
    os._exit(0)

def main():
    with open("program.py", encoding="utf-8") as handle:
        source = handle.read()
    net, pid = unshare()
    say("isolation", "net=%d" % net, "pid=%d" % pid)
    if not pid:
        LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1)
        on_terminate(kill_descendants)
        supervise(source, net, clean_up=True)
    init = os.fork()
    if init == 0:
        # PID 1 of the new namespace: when it exits the kernel kills everything left in it.
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        supervise(source, net, clean_up=False)

    def stop_init():
        os.kill(init, signal.SIGKILL)
        os.waitpid(init, 0)

    on_terminate(stop_init)
    _, status = os.waitpid(init, 0)
    os._exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 1)

main()
'''


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
    return SandboxIsolation(network=network, processes=processes, user=user)


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
                  "uid": uid, "gid": gid, "guard": guard, "namespaces": namespaces}
        env = {"PATH": "/usr/bin:/bin", "LANG": os.environ.get("LANG", "C.UTF-8"),
               "HOME": workdir, "TMPDIR": workdir}
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _RUNNER,
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
