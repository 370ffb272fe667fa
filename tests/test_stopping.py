"""Stopping a study: Ctrl-C and SIGTERM stop every worker at once and the rerun resumes; SIGUSR1
prints every process's stacks; killing the main process leaves no worker behind; a failed run (a
full disk) ends `run` with a summary and a non-zero exit; one writer per output folder, one study
per folder; a corrupt checkpoint at resume falls back; `report` never replaces a good report with
an empty one."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import micro_study, stored_numbers
from typer.testing import CliRunner

from learnforget.checkpoint_files import STATE_FILE
from learnforget.cli import app
from learnforget.executors.lifeline import SERVER_STARTER, starting_server
from learnforget.executors.local import WORKER_NAME
from learnforget.measure.base_measurement import measure_base
from learnforget.outdir import check_same_study
from learnforget.pipeline import StudyOutcome, failed_runs, failure_summary
from learnforget.plan import expand
from learnforget.runfailure import ERROR_FILE
from learnforget.runner import execute_run
from learnforget.store import Store
from learnforget.study import parse_study

STUDY = micro_study(
    name="stopping", budgets={"steps": [8, 16, 24]}, workers=2,
    evaluation={"learning": ["code_bpb"], "forgetting": ["source_bpb"], "limit": 4,
                "spectrum": False})


# --- helpers ------------------------------------------------------------------------------------

def ctrl_c_heard() -> None:
    """In a test's child process: Ctrl-C's default disposition, as under a terminal, even when
    the tests themselves were started with it ignored (a shell's background job without job
    control ignores SIGINT, and its children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(study_file: Path, out: Path, *extra: str, **popen) -> subprocess.Popen:
    """``learnforget run`` in its own session (so that its process group is its own)."""
    log = open(out.with_suffix(".log"), "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "learnforget", "run", str(study_file), "--out", str(out), *extra],
        stdout=log, stderr=log, start_new_session=True, preexec_fn=ctrl_c_heard,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, **popen)


def log_of(out: Path) -> str:
    return out.with_suffix(".log").read_text(errors="replace")


def group(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def statuses(out: Path) -> dict[str, str]:
    """{label: status} of the study's runs (empty while the store does not exist)."""
    db = out / "results.sqlite"
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return dict(conn.execute(
                "SELECT label, status FROM runs WHERE label != 'base'").fetchall())
    except sqlite3.OperationalError:
        return {}


def workers_of(pid: int) -> list[int]:
    """The worker processes of a ``learnforget run`` (named ``WORKER_NAME`` once started)."""
    found = []
    for member in group(pid):
        try:
            name = Path(f"/proc/{member}/comm").read_text().strip()
        except OSError:
            continue
        if name == WORKER_NAME:
            found.append(member)
    return found


def assert_same_numbers(out: Path, reference: dict[tuple, float]) -> None:
    got = stored_numbers(out)
    assert got.keys() == reference.keys()
    for key, value in reference.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def exit_status(process: subprocess.Popen, out: Path, timeout: float) -> int:
    """The exit status of ``process`` within ``timeout`` s; past it, the test fails with where
    every process of its group is (the stacks SIGUSR1 prints into the log, their states)."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        members = group(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGUSR1)
        time.sleep(2)
        states = {pid: Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
                  for pid in members if Path(f"/proc/{pid}").exists()}
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"pid {process.pid} still running after {timeout} s; its group's states "
                    f"{states}; the log's end:\n{log_of(out)[-6000:]}")


def finish(study_file: Path, out: Path, timeout: float = 300) -> None:
    """Run the study to the end; it must succeed."""
    process = start(study_file, out)
    assert exit_status(process, out, timeout) == 0, log_of(out)[-3000:]


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("study") / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[tuple, float]:
    """The numbers of the study run without interruption, in this process."""
    out = tmp_path_factory.mktemp("reference")
    study = parse_study(STUDY)
    measure_base(study, out, log=lambda m: None)
    for run in expand(study):
        assert execute_run(study, run, out, log=lambda m: None) == "finished"
    return stored_numbers(out)


# --- Ctrl-C, SIGTERM, SIGKILL -------------------------------------------------------------------
def start_training(study_file: Path, out: Path) -> subprocess.Popen:
    """``learnforget run`` started and waited for until a run trains in a worker process."""
    process = start(study_file, out)
    assert wait_for(lambda: "running" in statuses(out).values() or process.poll() is not None,
                    240)
    assert process.poll() is None, log_of(out)[-3000:]
    assert workers_of(process.pid)
    return process


def test_ctrl_c_stops_every_worker_at_once_and_the_rerun_resumes(
        study_file: Path, reference: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = start_training(study_file, out)
    sent = time.time()
    os.kill(process.pid, signal.SIGINT)  # the main process only: it stops the workers
    assert exit_status(process, out, 10) == 130, log_of(out)[-3000:]
    assert time.time() - sent < 5
    assert wait_for(lambda: not group(process.pid), 5 - (time.time() - sent))
    text = log_of(out)
    assert "Traceback" not in text and "Exception ignored" not in text, text[-3000:]
    assert f"learnforget run {study_file} --out {out}" in text
    assert "running" not in statuses(out).values()  # marked to resume
    finish(study_file, out)
    assert set(statuses(out).values()) == {"finished"}
    assert_same_numbers(out, reference)


def test_ctrl_c_while_the_command_starts_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """Ctrl-C while ``learnforget`` still imports its libraries (here: raised by the import of
    the command line itself, where a real Ctrl-C lands in the first seconds)."""
    code = ("import sys\n"
            "class Interrupt:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'learnforget.cli':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Interrupt())\n"
            "sys.argv = ['learnforget', 'run', 'study.yaml']\n"
            "from learnforget.__main__ import main\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, preexec_fn=ctrl_c_heard)
    assert done.returncode == 130, done.stderr
    assert done.stderr == "interrupted while starting: nothing was done\n"


def test_ctrl_c_after_the_command_ended_leaves_its_exit_status(study_file: Path,
                                                               tmp_path: Path) -> None:
    """Ctrl-C while a finished command's interpreter tears down (here: sent by an exit hook,
    where a real Ctrl-C lands in the moment the ML libraries take to unload) changes nothing:
    the command's own exit status, no traceback, no "Exception ignored"."""
    code = ("import atexit, os, signal, sys, time\n"
            "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.5)))\n"
            f"sys.argv = ['learnforget', 'plan', {str(study_file)!r}]\n"
            "from learnforget.__main__ import main\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, preexec_fn=ctrl_c_heard)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert "full" in done.stdout  # the plan itself was printed


def test_sigusr1_prints_every_process_stacks_and_killing_the_main_one_leaves_no_worker(
        study_file: Path, tmp_path: Path) -> None:
    """SIGUSR1 to the group: the main process and each worker print where they are and go on;
    then SIGKILL to the main process: the workers end with it."""
    out = tmp_path / "out"
    process = start_training(study_file, out)
    workers = workers_of(process.pid)
    os.killpg(process.pid, signal.SIGUSR1)
    # The processes write into one log at once, so their lines interleave; each function name
    # is written whole. The main process is in its loop over the workers (run_jobs).
    assert wait_for(lambda: log_of(out).count("(most recent call first)") >= 1 + len(workers)
                    and "_worker" in log_of(out) and "run_jobs" in log_of(out), 10), \
        log_of(out)[-3000:]
    assert "died unexpectedly" not in log_of(out)  # multiprocessing's resource tracker lives
    # everyone went on: no worker died of the signal (its run would be failed; a run may have
    # finished meanwhile), and the main process runs (or, on a slow machine, has finished)
    assert "failed" not in statuses(out).values(), log_of(out)[-3000:]
    assert process.poll() in (None, 0), log_of(out)[-3000:]
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert wait_for(lambda: not group(process.pid), 5), group(process.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_forkserver_is_bound_to_its_starter_before_anything_else() -> None:
    """The forkserver's first import arms the kernel's parent-death signal for the process id
    its starter named, and ends the server at once when that process is no longer its parent
    (it died before the signal was armed)."""
    code = ("import ctypes, signal\n"
            "from learnforget.executors.lifeline import bind_server_to_starter\n"
            "bind_server_to_starter()\n"
            "armed = ctypes.c_int()\n"
            "ctypes.CDLL(None).prctl(2, ctypes.byref(armed), 0, 0, 0)  # PR_GET_PDEATHSIG\n"
            "print(signal.Signals(armed.value).name if armed.value else 'none')\n")
    for starter, expected in ((os.getpid(), (0, "SIGKILL\n")), (os.getpid() + 1, (1, "")),
                              (None, (0, "none\n"))):
        env = {k: v for k, v in os.environ.items() if k != SERVER_STARTER}
        if starter is not None:
            env[SERVER_STARTER] = str(starter)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, env=env)
        assert (done.returncode, done.stdout) == expected, (starter, done.stderr)
    assert SERVER_STARTER not in os.environ
    with starting_server():
        assert os.environ[SERVER_STARTER] == str(os.getpid())
    assert SERVER_STARTER not in os.environ


# --- failures -----------------------------------------------------------------------------------

def test_a_failed_run_ends_the_command_with_a_summary_and_exit_1(study_file: Path,
                                                                 tmp_path: Path) -> None:
    """The full run's folder cannot be made (a file is in its place): that run fails, the
    LoRA run finishes, and `run` ends with a summary of the failure and exit status 1."""
    out = tmp_path / "out"
    full = next(r for r in expand(parse_study(STUDY)) if r.method.kind == "full")
    (out / "runs").mkdir(parents=True)
    (out / "runs" / full.run_id).write_text("in the way")
    process = start(study_file, out)
    assert exit_status(process, out, 300) == 1, log_of(out)[-3000:]
    text = log_of(out)
    assert "Traceback" not in text, text[-3000:]
    assert statuses(out) == {"full": "failed", "lora-r4-all": "finished"}
    summary = " ".join(text[text.index("1 run failed"):].split())
    assert f"full lr 0.001 (run {full.run_id}):" in summary
    assert "Error" in summary and "full error:" in summary


def test_a_full_disk_leaves_the_run_failed_not_running(tmp_path: Path, monkeypatch) -> None:
    study = parse_study({**STUDY, "methods": [STUDY["methods"][1]]})
    (run,) = expand(study)
    measure_base(study, tmp_path, log=lambda m: None)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "checkpoint")

    monkeypatch.setattr("learnforget.train.save_checkpoint", full_disk)
    assert execute_run(study, run, tmp_path, log=lambda m: None) == "failed"
    (failed,) = failed_runs(tmp_path, {run.run_id: "failed"})
    assert failed.label == "lora-r4-all" and failed.lr == 5e-3
    assert "No space left on device" in failed.error
    assert failed.error_file == tmp_path / "runs" / run.run_id / ERROR_FILE
    (line,) = failure_summary([StudyOutcome(tmp_path, {}, [failed])])
    assert line.startswith("lora-r4-all lr 0.005") and str(failed.error_file) in line


def test_a_truncated_checkpoint_at_resume_is_reported_and_the_run_restarts(
        tmp_path: Path, reference: dict) -> None:
    study = parse_study(STUDY)
    measure_base(study, tmp_path, log=lambda m: None)
    runs = expand(study)
    for run in runs:
        assert execute_run(study, run, tmp_path, log=lambda m: None) == "finished"
    full = next(r for r in runs if r.method.kind == "full")
    store = Store(tmp_path / "results.sqlite")
    store.set_status(full.run_id, "pending")  # as if it had been stopped after step 24
    store.close()
    folder = tmp_path / "runs" / full.run_id / "checkpoint-24"
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    logged: list[str] = []
    assert execute_run(study, full, tmp_path, log=logged.append) == "finished"
    assert any(str(folder) in m and "unreadable" in m and "from the start" in m for m in logged)
    assert (folder / STATE_FILE).exists()  # rewritten by the restarted run
    assert_same_numbers(tmp_path, reference)


# --- one writer, one study ----------------------------------------------------------------------

def test_a_second_run_on_the_same_folder_names_the_process_holding_it(
        study_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from learnforget.outdir import locked\n"
         f"with locked(Path({str(out)!r})):\n    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(app, ["run", str(study_file), "--out", str(out)])
        assert result.exit_code == 2
        assert f"in use by process {holder.pid} on {os.uname().nodename}" in result.output
        assert not (out / "results.sqlite").exists()
    finally:
        holder.stdin.close()
        holder.wait(10)


def test_another_study_is_refused_naming_the_differences(study_file: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    other = parse_study({**STUDY, "name": "other", "target": {"domain": "math", "regime": "ift"}})
    (out / "study.json").write_text(other.model_dump_json(indent=2))
    result = CliRunner().invoke(app, ["run", str(study_file), "--out", str(out)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "holds another study" in text and "--force-new-study" in text
    for field in ("name:", "target.domain:", "target.regime:"):
        assert field in text
    assert not (out / "results.sqlite").exists()
    mine = parse_study(STUDY).model_dump(mode="json")
    assert check_same_study(out, mine, force=True) == []
    # Extending the study (one more LR) is not another study.
    (out / "study.json").write_text(parse_study(STUDY).model_dump_json())
    more = parse_study({**STUDY, "methods": [{"kind": "full", "lr": [1e-3, 2e-3]}]})
    assert check_same_study(out, more.model_dump(mode="json")) == ["methods"]


# --- report -------------------------------------------------------------------------------------

@pytest.mark.parametrize("store", ["empty", "garbage", "folder"])
def test_report_on_an_empty_or_unreadable_store_keeps_the_existing_files(
        store: str, tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    if store == "empty":
        Store(db).close()
    elif store == "garbage":
        db.write_bytes(b"not a database" * 100)
    else:
        db.mkdir()
    (tmp_path / "measurements.csv").write_text("good\n")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "index.html").write_text("good")
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "nothing was written" in " ".join(result.output.split())
    assert (tmp_path / "measurements.csv").read_text() == "good\n"
    assert (tmp_path / "report" / "index.html").read_text() == "good"
