"""The sandbox's runner: the trusted program that starts and watches one sandboxed program.

``learnforget.measure.sandbox`` runs this file as a script, ``python -I -S sandbox_child.py
name=value ...``, in the run's folder (isolated mode, no ``site``: only the standard library is
importable, so this module must never import learnforget or a third-party package). Before
anything else it loads its two sibling modules by their paths in this file's folder:
``sandbox_wire.py`` (the wire format) and ``sandbox_check.py`` (both ends of a check). Imported
as part of learnforget, it imports them through the package and does nothing but define
functions; ``main`` runs only as a script.

The process tree it builds::

    runner (this script: namespaces, a size-capped tmpfs over the folder)
      └─ init (PID 1 of the new PID namespace; waits for the program)
           ├─ checker (only with a check: runs the test, never the program's code)
           └─ program (rlimits, uid nobody when run as root, prelude; ``exec`` of program.py)

With a check (``check_fd``), the program process runs program.py and then answers calls: the
checker sends it the arguments of each call the test makes, and it sends back what the function
returned, both in the wire format, which only plain data can be rebuilt from (see
``sandbox_check.py``). The test reaches the checker through ``check_fd`` alone; the program
process never holds it.

It talks back on a pipe (``marker_fd``) with one line per event:

- ``isolation net=<0|1> pid=<0|1> tmpfs=<0|1>``: namespaces and tmpfs granted (runner)
- ``started uid=<uid> landlock=<abi> seccomp=<0|1>``: confined, about to run the program
  (program; with a check it then closes the pipe, before any of its code runs)
- ``outcome <status> <detail>``: how the program's code ended (program, without a check)
- ``outcome <token> <status> <detail>``: the verdict of the check (checker; ``token`` is a secret
  of the tool that only the checker reads)
- ``check <exit|signal> <n> <cpu_s>``: how the checker ended (its parent)
- ``wait <exit|signal|killed> <n> <cpu_s>``: how the program process ended (its parent;
  ``killed`` when the check was over and its parent stopped it)
- ``full``: the program's tmpfs folder was full when the run ended (its parent)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
from types import ModuleType


def load_sibling(name: str) -> ModuleType:
    """Load ``<name>.py`` of this file's folder as the module ``name``, registered in
    ``sys.modules`` before it runs (so that a sibling loaded later imports it by that name).
    The folder is learnforget's own source, as trusted as this file; under ``-I`` it is not on
    ``sys.path``."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if __package__:  # imported as part of learnforget; the wire format stays importable from here
    from learnforget.measure import sandbox_check, sandbox_wire
    from learnforget.measure.sandbox_wire import WIRE_DEPTH, WireError, decode, encode  # noqa: F401
else:  # the runner's script: loaded now, before any fork, so every process starts with them
    sandbox_wire = load_sibling("sandbox_wire")
    sandbox_check = load_sibling("sandbox_check")  # imports sandbox_wire from sys.modules

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 1 << 14, 1 << 18

# Set by ``main``: the configuration from the command line and the C library.
CFG: dict[str, int | bool | None] = {}
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


def private_folder(source: str) -> bool:
    """Where the runner is root and may have a mount namespace: mount a tmpfs of
    ``folder_bytes`` and ``folder_files`` inodes over the run's folder, seen by this process
    tree only, holding a copy of program.py. The kernel then caps all the program writes
    there, deleted-but-open files included. False where it could not (the tool polls the
    folder instead)."""
    if not CFG["namespaces"] or CFG["uid"] is None or LIBC.unshare(CLONE_NEWNS) != 0:
        return False
    LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_char_p]
    # private first: nothing mounted here may propagate back to the host's mount table
    if LIBC.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False
    folder = os.getcwd()
    options = (f"size={CFG['folder_bytes']},nr_inodes={CFG['folder_files']},mode=0700,"
               f"uid={CFG['uid']},gid={CFG['gid']}")
    if LIBC.mount(b"tmpfs", os.fsencode(folder), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  options.encode()) != 0:
        return False
    os.chdir(folder)  # onto the tmpfs: the old working directory is the folder beneath it
    with open("program.py", "w", encoding="utf-8") as handle:  # the folder looks the same
        handle.write(source)
    return True


def report_full_folder() -> None:
    """Say ``full`` when the program's tmpfs has no room or no inodes left."""
    if CFG.get("tmpfs"):
        with contextlib.suppress(OSError):
            usage = os.statvfs(".")
            if usage.f_bfree == 0 or usage.f_ffree == 0:
                say("full")


def limit(kind: int, soft: int, hard: int | None = None) -> None:
    """Set a limit, never above the hard limit the caller already has."""
    ceiling = resource.getrlimit(kind)[1]
    hard = soft if hard is None else hard
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    resource.setrlimit(kind, (soft, hard))


def set_limits() -> None:
    """The program's rlimits (the checker gets the same)."""
    limit(resource.RLIMIT_CORE, 0)
    limit(resource.RLIMIT_AS, CFG["memory_bytes"])
    limit(resource.RLIMIT_FSIZE, CFG["file_size_bytes"])
    limit(resource.RLIMIT_NPROC, CFG["max_processes"])
    limit(resource.RLIMIT_CPU, CFG["cpu_s"], CFG["cpu_s"] + 1)
    limit(resource.RLIMIT_NOFILE, CFG["open_files"])


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


# Landlock (Linux 5.13+, no privileges needed) confines the program's file system access; ABI 4
# adds TCP, ABI 6 scopes signals and abstract Unix sockets to the program's own processes.
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION, LANDLOCK_RULE_PATH_BENEATH = 1, 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
LANDLOCK_MAX_ABI = 6
# What the program may read besides its folder and the interpreter's sys.path folders.
READ_ROOTS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc")
READ_DEVICES = ("/dev/zero", "/dev/urandom", "/dev/random")
PR_SET_SECCOMP, SECCOMP_MODE_FILTER, PR_SET_NO_NEW_PRIVS = 22, 2, 38


class RulesetAttr(ctypes.Structure):
    """``struct landlock_ruleset_attr``."""

    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class PathBeneath(ctypes.Structure):
    """``struct landlock_path_beneath_attr`` (packed)."""

    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def syscall(number: int, *args: object) -> int:
    """A raw system call; -1 on failure."""
    LIBC.syscall.restype = ctypes.c_long
    return LIBC.syscall(ctypes.c_long(number), *args)


def landlock_ruleset(workdir: str, read_dirs: list[str]) -> tuple[int, int]:
    """Build the program's Landlock ruleset: everything but executing in ``workdir`` (none
    where it is empty: the checker's ruleset), reading in ``read_dirs`` and the system
    folders, ``/dev/null``; no TCP; signals and abstract sockets scoped. Built before
    privileges are dropped (folders may be root-only). Returns the ruleset's descriptor and the
    ABI used, or (-1, 0) where the kernel has no Landlock."""
    abi = min(syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                      ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION)), LANDLOCK_MAX_ABI)
    if abi < 1:
        return -1, 0
    fs = (1 << 13) - 1 | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0)
    fs |= FS_IOCTL_DEV if abi >= 5 else 0
    attr = RulesetAttr(fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                      ctypes.c_uint32(0))
    if ruleset < 0:
        return -1, 0

    def allow(path: str, rights: int) -> None:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if not os.path.isdir(path):
                rights &= FILE_RIGHTS
            rule = PathBeneath(rights & fs, fd)
            syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH,
                    ctypes.byref(rule), ctypes.c_uint32(0))
        finally:
            os.close(fd)

    if workdir:
        allow(workdir, fs & ~FS_EXECUTE)
    for path in (*READ_ROOTS, *read_dirs):
        allow(path, FS_READ_FILE | FS_READ_DIR)
    allow("/dev/null", FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE)
    for path in READ_DEVICES:
        allow(path, FS_READ_FILE)
    return ruleset, abi


class SockFilter(ctypes.Structure):
    """``struct sock_filter``: one classic BPF instruction."""

    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    """``struct sock_fprog``."""

    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


# x86_64 system calls a program never needs and that widen what it can reach: tracing and
# reading other processes, namespaces and mounts, kernel keys, BPF, perf, io_uring (whose
# operations seccomp cannot see), modules, kexec, reboot, swap, handles, accounting, quotas.
DENIED_X86_64 = (101, 310, 311, 312, 438, 272, 308, 165, 166, 155, 161, 428, 429, 430, 431, 432,
                 433, 442, 248, 249, 250, 321, 298, 323, 425, 426, 427, 175, 176, 313, 246, 320,
                 169, 167, 168, 304, 163, 179, 103)
X86_64_SOCKET, X86_64_KILL, X86_64_CLONE, X86_64_CLONE3 = 41, 62, 56, 435
AUDIT_ARCH_X86_64 = 0xC000003E
NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
RET_ALLOW, RET_EPERM, RET_ENOSYS = 0x7FFF0000, 0x00050001, 0x00050026
LD_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06


def seccomp_program() -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k): the denied calls fail with EPERM, ``socket`` always
    (``socketpair`` stays), ``kill(-1, ...)``, ``clone`` with namespace flags; ``clone3``
    (whose flags it cannot read) answers ENOSYS so that the C library falls back to ``clone``;
    any other architecture's calls (x32, i386) fail."""
    nr, arg0 = 0, 16
    insns = [(LD_ABS, 0, 0, 4), (JEQ, 1, 0, AUDIT_ARCH_X86_64), (RET, 0, 0, RET_ENOSYS),
             (LD_ABS, 0, 0, nr), (JGE, 0, 1, 0x40000000), (RET, 0, 0, RET_EPERM)]
    for number in (*DENIED_X86_64, X86_64_SOCKET):
        insns += [(JEQ, 0, 1, number), (RET, 0, 0, RET_EPERM)]
    insns += [(JEQ, 0, 1, X86_64_CLONE3), (RET, 0, 0, RET_ENOSYS)]
    insns += [(JEQ, 0, 4, X86_64_KILL), (LD_ABS, 0, 0, arg0), (JEQ, 0, 1, 0xFFFFFFFF),
              (RET, 0, 0, RET_EPERM), (LD_ABS, 0, 0, nr)]
    insns += [(JEQ, 0, 3, X86_64_CLONE), (LD_ABS, 0, 0, arg0), (JSET, 0, 1, NAMESPACE_FLAGS),
              (RET, 0, 0, RET_EPERM), (RET, 0, 0, RET_ALLOW)]
    return insns


def confine(ruleset: int) -> tuple[int, bool]:
    """Make privileges impossible to regain (no setuid), then apply the Landlock ruleset and
    the seccomp filter to this process and all it starts: (Landlock applied, seccomp applied)."""
    ulong = ctypes.c_ulong
    if LIBC.prctl(PR_SET_NO_NEW_PRIVS, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:
        return False, False
    landlocked = ruleset >= 0 and syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset,
                                          ctypes.c_uint32(0)) == 0
    if ruleset >= 0:
        os.close(ruleset)
    if os.uname().machine != "x86_64":
        return landlocked, False
    insns = seccomp_program()
    array = (SockFilter * len(insns))(*(SockFilter(*insn) for insn in insns))
    program = SockFprog(len(insns), array)
    filtered = LIBC.prctl(PR_SET_SECCOMP, ulong(SECCOMP_MODE_FILTER), ctypes.byref(program),
                          ulong(0), ulong(0)) == 0
    return landlocked, filtered


def confine_checker() -> None:
    """The checker's confinement: the program's rlimits, Landlock (reads only) and seccomp; it
    stays the tool's user and dies with its parent."""
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    set_limits()
    dirs = [p for p in sys.path if os.path.isdir(p)]
    confine(landlock_ruleset("", dirs)[0])  # reads only; stays the tool's user


def relocate(path: str, moved: dict[str, str]) -> str:
    """``path`` with a folder of ``moved`` replaced by its descriptor path."""
    for old, new in moved.items():
        if path == old or path.startswith(old + "/"):
            return new + path[len(old):]
    return path


def run_program_child(source: str, net_isolated: bool,
                      channel: sandbox_wire.Channel | None = None) -> None:
    """In the program process: set the limits, drop privileges, run ``source``; without a check
    report how it ended, with one (``channel``) answer the checker's calls. Never returns."""
    try:
        set_limits()
        # The stdlib may sit under a folder only the caller can enter (e.g. a root-only home):
        # keep it importable after the drop through descriptors opened beforehand.
        dirs = [p for p in sys.path if os.path.isdir(p)]
        fds = {p: os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in dirs}
        ruleset, abi = landlock_ruleset(os.path.realpath(os.getcwd()), dirs)
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
        landlocked, filtered = confine(ruleset)
        say("started", f"uid={os.getuid()}", f"landlock={abi if landlocked else 0}",
            f"seccomp={filtered:d}")
        if channel is not None:
            os.close(CFG["marker_fd"])  # the verdict is the checker's: the program cannot speak
    except BaseException as exc:
        say("outcome error sandbox setup failed:", repr(exc))
        os._exit(1)
    sys.argv = ["program.py"]
    sys.dont_write_bytecode = True
    if CFG["guard"] or not net_isolated:
        guard(cwd, block_network=True, block_host=bool(CFG["guard"]))
    if channel is None:
        code = run_to_the_end(source)
    else:
        code = sandbox_check.run_and_answer(source, channel)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(code)


def run_to_the_end(source: str) -> int:
    """Run ``source`` and report how it ended: ``outcome passed`` once its last line ran."""
    try:
        # dont_inherit: this module's ``from __future__`` imports must not reach the program
        compiled = compile(source, "program.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        sandbox_check.print_traceback(exc, frames=False)
        say("outcome error", type(exc).__name__ + ":", exc)
        return 1
    try:
        exec(compiled, {"__name__": "__main__", "__builtins__": __builtins__})
    except MemoryError:
        say("outcome error MemoryError")
    except SystemExit as exc:
        say(f"outcome failed the program exited before its end (SystemExit: {exc.code!r})")
    except BaseException as exc:
        sandbox_check.print_traceback(exc)
        say("outcome failed", type(exc).__name__ + ":", exc)
    else:
        say("outcome passed")
        return 0
    return 1


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


def report(keyword: str, status: int, usage: resource.struct_rusage) -> None:
    """Say how a child ended: ``<keyword> <exit|signal> <n> <cpu_s>``."""
    cpu = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        say(keyword, "signal", os.WTERMSIG(status), f"{cpu:.3f}")
    else:
        say(keyword, "exit", os.WEXITSTATUS(status), f"{cpu:.3f}")


def supervise(source: str, net_isolated: bool, clean_up: bool) -> None:
    """Fork the program process, wait for it and report how it ended; never returns."""
    if CFG["check_fd"] is not None:
        supervise_check(source, net_isolated, clean_up)
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        run_program_child(source, net_isolated)
    _, status, usage = os.wait4(child, 0)
    if clean_up:
        kill_descendants()
    report("wait", status, usage)
    report_full_folder()
    os._exit(0)


def supervise_check(source: str, net_isolated: bool, clean_up: bool) -> None:
    """Fork the checker and let it read the check; only then fork the program process. Wait
    for the checker, then for the program (stopped if the check is over while it still
    runs), and report how both ended; never returns."""
    calls_r, calls_w = os.pipe()
    results_r, results_w = os.pipe()
    sync_r, sync_w = os.pipe()
    checker = os.fork()
    if checker == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd in (calls_r, results_w, sync_r):
            os.close(fd)
        sandbox_check.run_checker(sandbox_wire.Channel(results_r, calls_w), CFG["check_fd"], sync_w,
                                  confine_checker, say)
    for fd in (CFG["check_fd"], calls_w, results_r, sync_w):
        os.close(fd)
    os.read(sync_r, 1)  # the checker has read the check: the pipe that held it is empty now
    os.close(sync_r)
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        run_program_child(source, net_isolated, sandbox_wire.Channel(calls_r, results_w))
    os.close(calls_r)
    os.close(results_w)
    ended: dict[int, tuple[int, resource.struct_rusage]] = {}
    while checker not in ended:
        pid, status, usage = os.wait4(-1, 0)
        ended[pid] = (status, usage)
    killed = False
    if child not in ended:
        lost = os.waitstatus_to_exitcode(ended[checker][0]) == sandbox_check.LOST_EXIT
        if not lost:  # the verdict is in: whatever the program still does no longer counts
            os.kill(child, signal.SIGKILL)
            killed = True
        _, status, usage = os.wait4(child, 0)
        ended[child] = (status, usage)
    if clean_up:
        kill_descendants()
    report("check", *ended[checker])
    if killed:
        say("wait killed", int(signal.SIGKILL), "0")
    else:
        report("wait", *ended[child])
    report_full_folder()
    os._exit(0)


def main(argv: list[str]) -> None:
    """Run ``program.py`` of the current folder under the configuration in ``argv``."""
    global LIBC
    CFG.update(parse_config(argv))
    LIBC = ctypes.CDLL(None, use_errno=True)
    with open("program.py", encoding="utf-8") as handle:
        source = handle.read()
    net, pid = unshare()
    CFG["tmpfs"] = tmpfs = private_folder(source)
    say("isolation", f"net={net:d}", f"pid={pid:d}", f"tmpfs={tmpfs:d}")
    if not pid:
        LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1)
        on_terminate(kill_descendants)
        supervise(source, net, clean_up=True)
    init = os.fork()
    if init == 0:
        # PID 1 of the new namespace: when it exits the kernel kills everything left in it.
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        supervise(source, net, clean_up=False)
    if CFG["check_fd"] is not None:
        os.close(CFG["check_fd"])

    def stop_init() -> None:
        os.kill(init, signal.SIGKILL)
        os.waitpid(init, 0)

    on_terminate(stop_init)
    _, status = os.waitpid(init, 0)
    os._exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
