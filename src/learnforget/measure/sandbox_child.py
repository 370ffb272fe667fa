"""The sandbox's runner: the trusted program that starts and watches one sandboxed program.

``learnforget.measure.sandbox`` runs this file as a script, ``python -I -S sandbox_child.py
name=value ...``, in the run's folder (isolated mode, no ``site``: only the standard library is
importable, so this module must never import learnforget or a third-party package). Importing it
does nothing; ``main`` runs only as a script.

The process tree it builds::

    runner (this script: namespaces)
      └─ init (PID 1 of the new PID namespace; waits for the program)
           └─ program (rlimits, uid nobody when run as root, prelude; ``exec`` of program.py)

It talks back on a pipe (``marker_fd``) with one line per event:

- ``isolation net=<0|1> pid=<0|1>``: namespaces granted (runner)
- ``started uid=<uid>``: privileges dropped, about to run the program (program)
- ``outcome <status> <detail>``: how the program's code ended (program)
- ``wait <exit|signal> <n> <cpu_s>``: how the program process ended (its parent)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys

CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36

# Set by ``main``: the configuration from the command line and the C library.
CFG: dict[str, int | None] = {}
LIBC: ctypes.CDLL | None = None


def parse_config(argv: list[str]) -> dict[str, int | None]:
    """Plain ``name=value`` arguments (``-`` for None): importing json (and with it re) would
    double the start-up time."""
    config: dict[str, int | None] = {}
    for argument in argv:
        name, value = argument.split("=", 1)
        config[name] = None if value == "-" else int(value)
    return config


def say(*words: object) -> None:
    """Write one line to the tool's pipe (never fails)."""
    line = " ".join(str(w) for w in words).replace("\n", " ")[:1000] + "\n"
    with contextlib.suppress(OSError):
        os.write(CFG["marker_fd"], line.encode("utf-8", "replace"))


def unshare() -> tuple[bool, bool]:
    """Enter new network and PID namespaces where the kernel allows: (network, pid) granted."""
    if not CFG["namespaces"]:
        return False, False
    user = 0 if os.geteuid() == 0 else CLONE_NEWUSER
    for flags in (user | CLONE_NEWNET | CLONE_NEWPID, user | CLONE_NEWNET):
        if LIBC.unshare(flags) == 0:
            return True, bool(flags & CLONE_NEWPID)
    return False, False


def limit(kind: int, soft: int, hard: int | None = None) -> None:
    """Set a limit, never above the hard limit the caller already has."""
    ceiling = resource.getrlimit(kind)[1]
    hard = soft if hard is None else hard
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    resource.setrlimit(kind, (soft, hard))


def guard(cwd: str, block_network: bool, block_host: bool) -> None:
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

    def inside(path: object) -> bool:
        if isinstance(path, int):
            return True
        try:
            full = realpath(os.path.join(cwd, os.fsdecode(path)))
        except (TypeError, ValueError):
            return False
        return full == cwd or full.startswith(cwd + "/") or full == "/dev/null"

    def hook(event: str, args: tuple) -> None:
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


def relocate(path: str, moved: dict[str, str]) -> str:
    """``path`` with a folder of ``moved`` replaced by its descriptor path."""
    for old, new in moved.items():
        if path == old or path.startswith(old + "/"):
            return new + path[len(old):]
    return path


def print_traceback(exc: BaseException, frames: bool = True) -> None:
    """The program's traceback without the runner's own frame."""
    try:
        import traceback

        tb = exc.__traceback__.tb_next if frames and exc.__traceback__ else None
        traceback.print_exception(type(exc), exc, tb)
    except BaseException:
        pass


def run_program_child(source: str, net_isolated: bool) -> None:
    """In the program process: set the limits, drop privileges, run ``source``, report, exit."""
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
        say("started", f"uid={os.getuid()}")
    except BaseException as exc:
        say("outcome error sandbox setup failed:", repr(exc))
        os._exit(1)
    sys.argv = ["program.py"]
    sys.dont_write_bytecode = True
    if CFG["guard"] or not net_isolated:
        guard(cwd, block_network=True, block_host=bool(CFG["guard"]))
    code = 1
    try:
        # dont_inherit: this module's ``from __future__`` imports must not reach the program
        compiled = compile(source, "program.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        print_traceback(exc, frames=False)
        say("outcome error", type(exc).__name__ + ":", exc)
    else:
        try:
            exec(compiled, {"__name__": "__main__", "__builtins__": __builtins__})
        except MemoryError:
            say("outcome error MemoryError")
        except SystemExit as exc:
            say(f"outcome failed the program exited before its end (SystemExit: {exc.code!r})")
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


def descendants(root: int) -> list[int]:
    """Processes below ``root`` in the process tree (read from /proc)."""
    children: dict[int, list[int]] = {}
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


def kill_descendants() -> None:
    """Kill and reap everything below this process; as a child subreaper it inherits the
    orphans, so once it has no children left there are no descendants left."""
    me = os.getpid()
    while True:
        for pid in descendants(me):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass
        except ChildProcessError:
            return


def on_terminate(action) -> None:
    """On SIGTERM (the tool's deadline): run ``action``, then exit."""
    def handler(signum, frame) -> None:
        try:
            action()
        finally:
            os._exit(1)
    signal.signal(signal.SIGTERM, handler)


def supervise(source: str, net_isolated: bool, clean_up: bool) -> None:
    """Fork the program process, wait for it and report how it ended; never returns."""
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        run_program_child(source, net_isolated)
    _, status, usage = os.wait4(child, 0)
    if clean_up:
        kill_descendants()
    cpu = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        say("wait signal", os.WTERMSIG(status), f"{cpu:.3f}")
    else:
        say("wait exit", os.WEXITSTATUS(status), f"{cpu:.3f}")
    os._exit(0)


def main(argv: list[str]) -> None:
    """Run ``program.py`` of the current folder under the configuration in ``argv``."""
    global LIBC
    CFG.update(parse_config(argv))
    LIBC = ctypes.CDLL(None, use_errno=True)
    with open("program.py", encoding="utf-8") as handle:
        source = handle.read()
    net, pid = unshare()
    say("isolation", f"net={net:d}", f"pid={pid:d}")
    if not pid:
        LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1)
        on_terminate(kill_descendants)
        supervise(source, net, clean_up=True)
    init = os.fork()
    if init == 0:
        # PID 1 of the new namespace: when it exits the kernel kills everything left in it.
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        supervise(source, net, clean_up=False)

    def stop_init() -> None:
        os.kill(init, signal.SIGKILL)
        os.waitpid(init, 0)

    on_terminate(stop_init)
    _, status = os.waitpid(init, 0)
    os._exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
