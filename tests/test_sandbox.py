"""The sandbox for generated code: status mapping, limits, and hostile programs contained.

Hostile programs run with ``guard=False`` so that the OS-level isolation is what stops them, in
both the namespace setup and the fallback without namespaces (``namespaces=False``); separate
tests check the in-process prelude (``guard=True``) on its own.
"""


from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from sandbox_helpers import (
    BOTH_SETUPS,
    ISOLATION,
    assert_contained,
    sandbox_processes,
)

from learnforget.errors import UserError
from learnforget.measure import sandbox
from learnforget.measure.sandbox import (
    TEMP_PREFIX,
    ExecutionResult,
    run_program,
    run_programs,
)

pytestmark = [pytest.mark.skipif(not os.path.isdir("/proc"), reason="the sandbox needs Linux"),
              pytest.mark.usefixtures("private_sandbox_folder")]


def test_the_status_follows_how_the_program_ended():
    cases = {
        "assert 1 + 1 == 2\n": "passed",
        "def f():\n    assert 1 + 1 == 3, 'wrong sum'\nf()\n": "failed",
        "raise ValueError('bad value')\n": "failed",
        "import sys\nsys.exit(0)\nassert False\n": "failed",
        "import os\nos._exit(0)\n": "failed",
        "import os\nos._exit(3)\n": "failed",
        "def f(:\n    pass\n": "error",
        "x = 'a' * (4 * 1024 ** 3)\n": "error",
        "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n": "error",
    }
    results = run_programs(list(cases), workers=2, timeout_s=10, guard=False)
    assert [r.status for r in results] == list(cases.values())
    assert "wrong sum" in results[1].detail
    assert "program.py" in results[1].detail  # the traceback names the program's own file
    assert "ValueError: bad value" in results[2].detail
    assert "SyntaxError" in results[6].detail
    assert "MemoryError" in results[7].detail
    assert "SIGSEGV" in results[8].detail


def test_programs_run_in_a_stripped_throwaway_folder():
    probe = (
        "import os, sys\n"
        "cwd = os.getcwd()\n"
        "assert os.environ['HOME'] == os.environ['TMPDIR'] == cwd, dict(os.environ)\n"
        "allowed = {'PATH', 'LANG', 'HOME', 'TMPDIR', 'LC_CTYPE'}\n"  # LC_CTYPE: PEP 538
        "assert set(os.environ) <= allowed, dict(os.environ)\n"
        "assert os.environ['PATH'] == '/usr/bin:/bin'\n"
        "assert sys.stdin.read() == ''\n"
        "assert sys.flags.isolated and sys.flags.no_site\n"
        "open('scratch.txt', 'w').write('x')\n"
        "os.remove('scratch.txt')\n"
        "raise AssertionError('cwd=' + cwd)\n"
    )
    result = run_program(probe, timeout_s=10)
    assert result.status == "failed", result
    workdir = result.detail.split("cwd=")[1].split()[0]
    assert Path(workdir).name.startswith(TEMP_PREFIX)
    assert not Path(workdir).exists()


def test_the_machine_grants_the_isolation_we_document():
    assert ISOLATION.network and ISOLATION.processes and ISOLATION.user
    if os.geteuid() == 0:
        assert ISOLATION.unprivileged_user, ISOLATION
        uid = run_program("import os\nassert os.getuid() == 0\n", timeout_s=10)
        assert uid.status == "failed"


def test_run_programs_keeps_the_order_of_its_inputs():
    sources = [f"assert {i} % 2 == 0\n" for i in range(6)]
    statuses = [r.status for r in run_programs(sources, workers=3, timeout_s=10)]
    assert statuses == ["passed", "failed"] * 3


def test_bad_limits_are_user_errors():
    with pytest.raises(UserError, match="positive"):
        run_program("pass\n", timeout_s=0)
    with pytest.raises(UserError, match="workers"):
        run_programs(["pass\n"], workers=0)


def test_an_endless_loop_times_out():
    start = time.monotonic()
    result = run_program("while True:\n    pass\n", timeout_s=1.0, guard=False)
    assert result.status == "timed_out"
    assert time.monotonic() - start < 4
    assert_contained(result)


def test_allocating_ten_gigabytes_fails():
    result = run_program("block = bytearray(10 * 1024 ** 3)\n", timeout_s=10, guard=False)
    assert result.status == "error" and "MemoryError" in result.detail
    assert_contained(result)


def test_files_are_capped_in_size():
    source = "open('big.bin', 'wb').write(b'x' * (20 * 1024 * 1024))\n"
    result = run_program(source, timeout_s=10, guard=False, file_size_mb=10)
    assert result.status == "failed" and "File too large" in result.detail


@BOTH_SETUPS
@pytest.mark.parametrize("files", ["few-large", "many-empty"])
def test_the_total_written_into_the_folder_is_capped(namespaces, files, monkeypatch):
    monkeypatch.setattr(sandbox, "_FOLDER_FILES", 1000)  # creating files is slow on a busy disk
    if files == "few-large":  # 4 MB per file, under the 10 MB per file: 1.5 GB in all if allowed
        write = ("    with open(f'part{i}.bin', 'wb') as handle:\n"
                 "        handle.write(b'x' * (4 << 20))\n")
        parts, fits = 400, "for i in range(5):\n"
    else:  # empty files take no space, but each takes an inode (and a walk of the folder)
        write = "    open(f'part{i}', 'w').close()\n"
        parts, fits = 5000, "for i in range(500):\n"
    start = time.monotonic()
    result = run_program(f"for i in range({parts}):\n" + write, timeout_s=30, guard=False,
                         namespaces=namespaces, total_write_mb=32)
    assert time.monotonic() - start < 6
    assert result.status == "error" and "total write limit reached" in result.detail, result
    assert_contained(result)
    under = run_program(fits + write, timeout_s=30, namespaces=namespaces, total_write_mb=32)
    assert under == ExecutionResult("passed", ""), under


def test_the_folder_is_a_capped_tmpfs_where_the_kernel_allows():
    if os.geteuid() != 0 or not ISOLATION.pid_namespace:
        pytest.skip("the tmpfs needs root and namespaces; the tool polls the folder instead")
    assert ISOLATION.folder_tmpfs, ISOLATION
    probe = ("import os\n"
             "assert sorted(os.listdir('.')) == ['program.py'], os.listdir('.')\n"
             "usage = os.statvfs('.')\n"
             "assert usage.f_blocks * usage.f_frsize == 48 << 20, usage\n"
             "assert usage.f_files == 10_000, usage\n")
    result = run_program(probe, timeout_s=10, guard=False, total_write_mb=48)
    assert result == ExecutionResult("passed", ""), result


@BOTH_SETUPS
def test_a_fork_bomb_is_contained(namespaces):
    bomb = ("import os\n"
            "for _ in range(3):\n"
            "    if os.fork() == 0:\n"
            "        os.setsid()\n"  # leave the process group: killing the group is not enough
            "        break\n"
            "while True:\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError:\n"
            "        pass\n")
    start = time.monotonic()
    result = run_program(bomb, timeout_s=2.0, guard=False, namespaces=namespaces)
    assert result.status == "timed_out"
    assert time.monotonic() - start < 8
    assert_contained(result)


@BOTH_SETUPS
def test_host_files_cannot_be_deleted_or_overwritten(namespaces):
    if not ISOLATION.unprivileged_user:
        pytest.skip("programs run as the calling user here: only the prelude guards files "
                    "(see test_the_prelude_blocks_writes_outside_the_sandbox_folder)")
    folder = Path(tempfile.mkdtemp())  # world-readable, writable only by us
    folder.chmod(0o755)
    canary = folder / "canary.txt"
    canary.write_text("still here")
    canary.chmod(0o644)
    attempt = (f"path = {str(canary)!r}\n"
               "import os, shutil\n"
               "for attack in (lambda: os.remove(path), lambda: open(path, 'w'),\n"
               "               lambda: shutil.rmtree(os.path.dirname(path))):\n"
               "    try:\n"
               "        attack()\n"
               "    except PermissionError:\n"
               "        pass\n"
               "os.remove(path)\n")
    try:
        result = run_program(attempt, timeout_s=10, guard=False, namespaces=namespaces)
        assert result.status == "failed" and "Permission denied" in result.detail
        assert canary.read_text() == "still here"
    finally:
        canary.unlink()
        folder.rmdir()


@BOTH_SETUPS
def test_the_program_cannot_reach_a_server_on_the_host(namespaces):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        source = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        result = run_program(source, timeout_s=10, guard=False, namespaces=namespaces)
        server.settimeout(0.1)
        with pytest.raises(TimeoutError):
            server.accept()
    assert result.status == "failed"
    assert_contained(result)


@BOTH_SETUPS
def test_a_server_in_the_program_is_unreachable_from_the_host(namespaces):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = ("import socket, time\n"
              f"server = socket.create_server(('127.0.0.1', {port}))\n"
              "time.sleep(5)\n")
    reached = []

    def connect_during_the_run() -> None:
        time.sleep(0.8)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            reached.append(True)
        except OSError:
            reached.append(False)

    visitor = threading.Thread(target=connect_during_the_run)
    visitor.start()
    result = run_program(source, timeout_s=2.0, guard=False, namespaces=namespaces)
    visitor.join()
    assert reached == [False]
    assert result.status != "passed"
    if not ISOLATION.network_namespace or not namespaces:
        assert result.status == "failed" and "network access is blocked" in result.detail


@BOTH_SETUPS
def test_killing_the_parent_does_not_reach_this_process(namespaces):
    source = "import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(1)\n"
    result = run_program(source, timeout_s=10, guard=False, namespaces=namespaces)
    if ISOLATION.unprivileged_user:  # the parent runs as root: the kill is refused
        assert result.status == "failed" and "Operation not permitted" in result.detail, result
    else:  # ignored by a namespace's init, or it ends the runner (not us): never a timeout
        assert result.status in ("passed", "error"), result
    assert sandbox_processes() == []


@BOTH_SETUPS
def test_killing_the_process_group_only_ends_the_program(namespaces):
    source = "import os, signal, time\nos.killpg(0, signal.SIGKILL)\ntime.sleep(1)\n"
    result = run_program(source, timeout_s=10, guard=False, namespaces=namespaces)
    assert result.status == "error" and "SIGKILL" in result.detail, result
    assert_contained(result)


def test_killing_every_process_stays_inside_the_pid_namespace():
    if not ISOLATION.pid_namespace:
        pytest.skip("no PID namespace here: kill(-1) would reach the calling user's processes")
    source = "import os, signal, time\nos.kill(-1, signal.SIGKILL)\ntime.sleep(0.5)\n"
    result = run_program(source, timeout_s=10, guard=False)
    assert result.status == "failed", result
    assert_contained(result)


def test_the_prelude_blocks_writes_outside_the_sandbox_folder():
    folder = Path(tempfile.mkdtemp())
    folder.chmod(0o777)  # the OS would let anyone delete here: only the prelude stands in the way
    canary = folder / "canary.txt"
    canary.write_text("still here")
    canary.chmod(0o666)
    try:
        for attack in (f"import os\nos.remove({str(canary)!r})\n",
                       f"open({str(canary)!r}, 'w').write('gone')\n",
                       f"import shutil\nshutil.rmtree({str(folder)!r})\n"):
            result = run_program(attack, timeout_s=10, guard=True)
            assert result.status == "failed" and "blocked" in result.detail, result
        assert canary.read_text() == "still here"
    finally:
        canary.unlink()
        folder.rmdir()


def test_the_prelude_blocks_processes_signals_and_sockets():
    attacks = ["import subprocess\nsubprocess.run(['true'])\n",
               "import os\nos.fork()\n",
               "import os\nos.system('true')\n",
               "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n",
               "import socket\nsocket.socket()\n"]
    results = run_programs(attacks, workers=2, timeout_s=10, guard=True)
    for result in results:
        assert result.status == "failed" and "blocked" in result.detail, result
