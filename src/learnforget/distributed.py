"""One study whose runs each span several processes (GPUs): launched by ``accelerate launch``.

    accelerate launch --config_file examples/accelerate/fsdp.yaml \\
        -m learnforget.distributed STUDY.yaml --out OUT

Every process reads the study and goes through its runs in the same order; each run trains in
all of them at once (data parallel, or sharded by FSDP / DeepSpeed as the accelerate config
says: ``train.train_loop`` splits every global batch across the processes). Only the main
process writes: it locks OUT, measures the base model, decides whether a run is skipped or
resumed (and tells the others), saves the checkpoints, measures them, writes the store and the
report. The others wait for it (``wait_for_everyone``) and write nothing. So OUT ends up the
same as after ``learnforget run`` in one process: the same run ids, checkpoints and store rows
(``tests/test_distributed.py`` checks this with 2 CPU processes on gloo).

Ray spreads a grid of runs over machines; this spreads one run over devices (docs/study.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import typer
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from learnforget.plan import RunConfig
from learnforget.study import Study

WAIT_HOURS = 12
"""How long the other processes wait at a barrier for the main one (measuring a checkpoint on
real benchmarks takes far longer than the collective's default timeout of 10-30 minutes)."""


def _say(state: PartialState) -> Callable[[str], None]:
    return print if state.is_main_process else (lambda message: None)


def run_decision(study: Study, run: RunConfig, out: Path) -> tuple[str | None, int]:
    """(the stored status when the run is not to be trained — finished or diverged — else
    None, the checkpoint step to resume from, 0 for the start); read on the main process."""
    from learnforget.checkpoint_files import STATE_FILE
    from learnforget.store import Store

    store = Store(out / "results.sqlite")
    try:
        status = store.run_status(run.run_id)
        steps = store.checkpoint_steps(run.run_id)
    finally:
        store.close()
    if status in ("finished", "diverged"):
        return status, 0
    run_dir = out / "runs" / run.run_id
    resumable = [s for s in steps if (run_dir / f"checkpoint-{s}" / STATE_FILE).exists()]
    return None, max(resumable, default=0)


def _share(state: PartialState, value: object) -> object:
    """``value`` of the main process, on every process."""
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def run_everywhere(study: Study, run: RunConfig, out: Path, state: PartialState) -> str:
    """Train and measure one run with every process; returns its status (on the main process;
    ``following`` on the others)."""
    from learnforget.runner import execute_run, follow_run

    decision = run_decision(study, run, out) if state.is_main_process else None
    skip, resume = _share(state, decision)
    if state.is_main_process:
        status = execute_run(study, run, out, log=print)
    elif skip is None:  # train alongside; train_loop lets only the main process write
        follow_run(study, run, out, resume)
        status = "following"
    else:
        status = skip
    state.wait_for_everyone()
    return status


def run_distributed(study_file: Path, out: Path | None) -> dict[str, dict[str, str]]:
    """Every study of ``study_file`` with each run spread over the launched processes;
    {study name: {run id: status}} (statuses as the main process knows them)."""
    import torch

    from learnforget.plan import expand
    from learnforget.preflight import check_study
    from learnforget.study import load_studies

    # Without CUDA the processes join on gloo (MULTI_CPU), however they were started: by
    # accelerate's multi-GPU launcher (torchrun) or by torchrun itself.
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(hours=WAIT_HOURS))
    say = _say(state)
    studies = load_studies(study_file)
    for study in studies:
        expand(study)
        check_study(study)
        if study.search == "halving":
            from learnforget.errors import UserError

            raise UserError(f"study {study.name}: search: halving runs under `learnforget run` "
                            "(local or Ray executor), not across the processes of "
                            "`accelerate launch`; use search: grid there")
    results: dict[str, dict[str, str]] = {}
    for study in studies:
        if len(studies) == 1:
            target = out or Path("out") / study.name
        else:
            target = (out or Path("out") / study_file.stem) / study.name
        results[study.name] = _run_study(study, target, state, say)
    return results


def _run_study(study: Study, out: Path, state: PartialState,
               say: Callable[[str], None]) -> dict[str, str]:
    from learnforget.measure.base_measurement import measure_base
    from learnforget.outdir import locked
    from learnforget.plan import expand

    runs = expand(study)
    lock = contextlib.nullcontext()
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        lock = locked(out)
    with lock:
        if state.is_main_process:
            (out / "study.json").write_text(study.model_dump_json(indent=2))
            say(f"study {study.name}: {len(runs)} runs, each on {state.num_processes} "
                f"processes → {out}")
            measure_base(study, out, log=say)
        state.wait_for_everyone()
        statuses = {run.run_id: run_everywhere(study, run, out, state) for run in runs}
        if state.is_main_process:
            from learnforget.pipeline import write_study_report

            say(f"report: {write_study_report(out)[0]}")
        state.wait_for_everyone()
    return statuses


LAUNCHERS = ("none", "accelerate")


def check_accelerate_config(config_file: Path) -> None:
    """A ``UserError`` naming the problem unless accelerate's own loader reads ``config_file``
    (checked here so that a bad file gets a message, not a traceback from the launched
    processes)."""
    from accelerate.commands.config.config_args import load_config_from_file

    from learnforget.errors import UserError

    try:
        load_config_from_file(str(config_file))
    except Exception as error:  # YAML/JSON parser errors, accelerate's ValueError, bad shapes
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"--accelerate-config {config_file} is not an accelerate config "
            f"({type(error).__name__}: {first}): write one with `accelerate config "
            "--config_file FILE` or start from examples/accelerate/fsdp.yaml") from None


def launch_command(study_file: Path, out: Path | None, config_file: Path | None = None,
                   num_processes: int | None = None) -> list[str]:
    """The ``accelerate launch`` command line that runs ``study_file`` with this module
    (``learnforget run STUDY --launcher accelerate``): ``config_file`` an accelerate config
    (``examples/accelerate/fsdp.yaml``; default: accelerate's own default config),
    ``num_processes`` overriding the config's."""
    import sys

    from learnforget.errors import UserError

    if config_file is not None and not config_file.is_file():
        raise UserError(f"--accelerate-config {config_file} is not a file: give an accelerate "
                        "config such as examples/accelerate/fsdp.yaml")
    if config_file is not None:
        check_accelerate_config(config_file)
    if num_processes is not None and num_processes < 1:
        raise UserError(f"--num-processes must be at least 1, not {num_processes}")
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file is not None:
        command += ["--config_file", str(config_file)]
    if num_processes is not None:
        command += ["--num_processes", str(num_processes)]
    command += ["-m", "learnforget.distributed", str(study_file)]
    return command + (["--out", str(out)] if out is not None else [])


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(study_file: Path = typer.Argument(..., help="the study YAML file"),
         out: Path | None = typer.Option(None, "--out", help="output folder (default out/NAME)")
         ) -> None:
    """Run STUDY_FILE with each run spread over the processes ``accelerate launch`` started."""
    from learnforget.errors import UserError

    try:
        results = run_distributed(study_file, out)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if PartialState().is_main_process:
        for name, statuses in results.items():
            counts: dict[str, int] = {}
            for status in statuses.values():
                counts[status] = counts.get(status, 0) + 1
            typer.echo(f"{name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


if __name__ == "__main__":
    app()
