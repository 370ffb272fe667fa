"""The ``learnforget`` command line: plan, estimate, run, report, demo, eval, score-code,
spectrum."""

from __future__ import annotations

import errno
import functools
import json
import math
import sys
import time
from pathlib import Path

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand

from learnforget.errors import UserError
from learnforget.measure.tasks import task_names
from learnforget.quiet import quiet_warnings

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="What does finetuning teach a model, what does it make it forget, and "
                       "which method should you use?")
console = Console(stderr=True)
quiet_warnings()


DEBUG = {"traceback": False}  # set by the global --debug option


def _error(message: str, status: int) -> typer.Exit:
    """Print one error message (no traceback) and return the ``typer.Exit`` to raise."""
    console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False,
                  soft_wrap=True)
    return typer.Exit(status)


def _os_error_message(exc: OSError) -> str:
    """An ``OSError`` as one line naming the path and what to do."""
    where = exc.filename or "a file"
    if exc.errno == errno.ENOSPC:
        return f"the disk holding {where} is full: free some space and run the command again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}: {exc.strerror}: choose a path you can write to, or fix its permissions"
    return f"{where}: {exc.strerror or exc}: check the path"


def friendly(func):
    """Turn ``UserError`` into a message and exit status 2 instead of a traceback; any other
    failure is one line with exit status 1 (``--debug`` shows the traceback instead)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except UserError as exc:
            if DEBUG["traceback"]:
                raise
            raise _error(str(exc), 2) from None
        except KeyboardInterrupt:
            console.print("interrupted: run the same command again to resume")
            raise typer.Exit(130) from None
        except OSError as exc:
            if DEBUG["traceback"]:
                raise
            raise _error(_os_error_message(exc), 1) from None
        except Exception as exc:
            if DEBUG["traceback"]:
                raise
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise _error(f"unexpected {type(exc).__name__}: {first} (run again with --debug "
                         "to see where, and report it)", 1) from None

    return wrapper


@app.command()
@friendly
def plan(study_file: Path = typer.Argument(..., help="the study YAML")) -> None:
    """List the runs of a study: ids, trainable parameters and token budgets (after checking
    task names, device, data and sequence length, as `run` does)."""
    from learnforget.executors.footprint import runtime_bytes
    from learnforget.memory_estimate import memory_warnings
    from learnforget.plan import expand
    from learnforget.planinfo import (
        precision_warnings,
        search_cost,
        search_cost_lines,
        summarize,
    )
    from learnforget.preflight import check_study
    from learnforget.study import load_studies

    for study in load_studies(study_file):
        runs = expand(study)
        check_study(study)
        table = Table(title=f"study {study.name}: {len(runs)} runs, "
                      f"precision {runs[0].training.precision}")
        for column in ("run id", "method", "lr", "optimizer", "seed", "trainable", "of total",
                       "budget"):
            table.add_column(column)
        for s in summarize(runs):
            table.add_row(s.run_id, s.label, f"{s.lr:g}", s.optimizer, str(s.seed),
                          f"{s.trainable:,}", f"{s.trainable / s.total:.1%}", s.budget)
        out = Console(width=None if sys.stdout.isatty() else 200)  # the plan: standard output
        out.print(table)
        for line in search_cost_lines(search_cost(runs, study.eta), study.search, study.eta):
            out.print(line, highlight=False, soft_wrap=True)
        for warning in precision_warnings(runs):
            console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
        runtime = runtime_bytes(runs[0].base.device)
        for warning in memory_warnings(runs, study.evaluation.spectrum, runtime):
            console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


@app.command()
@friendly
def estimate(
    study_file: Path = typer.Argument(..., help="the study YAML"),
    shards: int = typer.Option(1, min=1, help="FSDP processes that shard weights, gradients "
                               "and optimizer states"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Estimate each run's training memory (weights, gradients, optimizer states,
    activations) on the study's device, and say what to change where it does not fit."""
    from learnforget.executors.footprint import runtime_bytes
    from learnforget.memory_estimate import estimate_runs, fit_options
    from learnforget.peak_memory import MB
    from learnforget.plan import expand
    from learnforget.study import load_studies

    out = []
    for study in load_studies(study_file):
        runs = expand(study)
        spectrum = study.evaluation.spectrum
        memories = estimate_runs(runs, spectrum, shards, runtime_bytes(runs[0].base.device))
        if as_json:
            out += [{"study": study.name, "run_id": m.run_id, "method": m.label,
                     "micro_batch": m.micro_batch, "fits": m.fits,
                     "capacity_mb": m.capacity / MB, "device": m.capacity_name,
                     **{f"{k}_mb": v for k, v in m.estimate.as_mb().items()}}
                    for m in memories]
            continue
        table = Table(title=f"study {study.name}: estimated training memory (MiB) per process "
                      f"on {memories[0].capacity_name}")
        for column in ("run id", "method", "micro-batch", "weights", "gradients", "optimizer",
                       "activations", "other", "total", "fits"):
            table.add_column(column)
        for m in memories:
            mb = m.estimate.as_mb()
            table.add_row(m.run_id, m.label, str(m.micro_batch),
                          *(f"{mb[k]:,.0f}" for k in ("weights", "gradients", "optimizer",
                                                       "activations")),
                          f"{mb['snapshot'] + mb['runtime']:,.0f}", f"{mb['total']:,.0f}",
                          "yes" if m.fits else "NO")
        Console(width=None if sys.stdout.isatty() else 200).print(table)
        for run, m in zip(runs, memories, strict=True):
            if not m.fits:
                options = "; ".join(fit_options(run, m, spectrum, shards))
                console.print(f"[yellow]run {m.run_id} ({m.label}) does not fit:[/yellow] "
                              f"{options}", highlight=False)
    if as_json:
        print(json.dumps(out, indent=2))


def _exit_at_once(status: int) -> None:
    """End the command with ``status`` now. As the ``learnforget`` program itself (not called
    from Python), skip the interpreter's teardown of the ML libraries, which takes seconds: a
    stopped study has closed its files and stopped its workers already."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    if sys.argv and Path(sys.argv[0]).name in ("learnforget", "__main__.py"):
        os._exit(status)
    raise typer.Exit(status)


def _run_pipeline(study_file: Path, out: Path | None, executor=None,
                  force_new_study: bool = False) -> list:
    """Run the studies of ``study_file``; Ctrl-C or SIGTERM stops them (exit 130, saying how to
    resume), and failed runs end the command with a summary of them and exit 1."""
    import shlex

    from learnforget.pipeline import failure_summary, run_studies, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            outcomes = run_studies(study_file, out, executor, console, force_new_study)
    except KeyboardInterrupt:
        again = " ".join(["learnforget", *map(shlex.quote, sys.argv[1:])])
        console.print(f"interrupted: unfinished runs resume where they stopped with `{again}`",
                      highlight=False, soft_wrap=True)
        _exit_at_once(130)
    failures = failure_summary(outcomes)
    if failures:
        console.print(f"[bold red]{len(failures)} run{'s' if len(failures) > 1 else ''} "
                      "failed[/bold red] (run the same command again to retry them):")
        for line in failures:
            console.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    return outcomes


def folder_option(value: str | None, option: str) -> Path | None:
    """A folder option as a path; an empty value is a ``UserError`` (as a path it would be the
    current folder, and a study would be written there unasked)."""
    if value is None:
        return None
    if not value.strip():
        raise UserError(f"{option} is empty: give a folder, e.g. {option} out/NAME")
    return Path(value)


@app.command()
@friendly
def run(
    study_file: Path = typer.Argument(..., help="the study YAML"),
    out: str = typer.Option(None, "--out", "-o", help="output folder (default out/NAME)"),
    executor: str = typer.Option("local", help="local (processes on this machine) | ray"),
    ray_address: str = typer.Option(
        None, help="with --executor ray: a running cluster (auto, ray://HOST:10001); "
                   "default: start Ray on this machine"),
    gpus_per_run: float = typer.Option(0.0, help="with --executor ray: GPUs for each run"),
    force_new_study: bool = typer.Option(
        False, "--force-new-study",
        help="run into an OUT that holds another study (other name, base or target), adding "
             "this study's runs to its store and report"),
    launcher: str = typer.Option(
        "none", help="accelerate: spread each run over the processes of `accelerate launch` "
                     "(data parallel, FSDP or DeepSpeed as its config says; docs/study.md)"),
    accelerate_config: Path = typer.Option(
        None, help="with --launcher accelerate: an accelerate config file, e.g. "
                   "examples/accelerate/fsdp.yaml"),
    num_processes: int = typer.Option(
        None, help="with --launcher accelerate: processes (GPUs) per run"),
) -> None:
    """Train and measure every run of a study (resumes if run again), then write the report.
    Ctrl-C stops every run (exit 130); run the command again to resume."""
    from learnforget.executors import ExecutorChoice

    out = folder_option(out, "--out")
    if launcher not in ("none", "accelerate"):
        raise UserError(f"--launcher must be none or accelerate, not {launcher!r}")
    if launcher == "accelerate":
        import subprocess

        from learnforget.distributed import launch_command

        if executor != "local":
            raise UserError("--launcher accelerate spreads each run over the launched "
                            "processes; it does not combine with --executor ray in one command "
                            "(docs/study.md: a Ray task per run, each launching accelerate)")
        raise typer.Exit(subprocess.call(
            launch_command(study_file, out, accelerate_config, num_processes)))
    if accelerate_config is not None or num_processes is not None:
        raise UserError("--accelerate-config and --num-processes apply to --launcher "
                        "accelerate only")
    _run_pipeline(study_file, out, ExecutorChoice(executor, ray_address, gpus_per_run),
                  force_new_study)


@app.command()
@friendly
def report(out: Path = typer.Argument(
        ..., help="a study's output folder, or a multi-study run's (the demo's)")) -> None:
    """(Re)write OUT/report/index.html and OUT/measurements.csv from OUT/results.sqlite; for a
    multi-study run (or one of its studies) every study's report and the run's index page too
    (nothing is written when a store is unreadable or empty)."""
    from learnforget.pipeline import rewrite_reports

    for page in rewrite_reports(out):
        console.print(f"report: {escape(str(page))}", highlight=False, soft_wrap=True)


DEMOS = {"tiny": "demo.yaml", "micro": "demo-micro.yaml", "full": "demo-full.yaml"}


@app.command()
@friendly
def demo(
    out: str = typer.Option("demo-out", "--out", "-o", help="output folder"),
    scale: str = typer.Option("tiny",
                              help="tiny (the demo, about 12 min on 2 cores) | micro (~1 min)"),
    full: bool = typer.Option(False, "--full", help="the whole grid: all nine claims (~40 min)"),
) -> None:
    """The whole study at tiny scale on this CPU, offline: pretrain the built-in base, finetune
    code (CPT) and math (IFT) with full FT and LoRA, measure, report."""
    from importlib.resources import files

    key = "full" if full else scale
    if key not in DEMOS:
        raise UserError(f"--scale must be one of {', '.join(DEMOS)}, got {scale!r}")
    study_file = Path(str(files("learnforget") / "demos" / DEMOS[key]))
    out = folder_option(out, "--out")
    started = time.time()
    _run_pipeline(study_file, out)
    console.print(f"demo finished in {time.time() - started:.0f} s → {out / 'index.html'}")


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _model_spec(model: str, revision: str | None, dtype: str, device: str):
    from pydantic import ValidationError

    from learnforget.study import BaseModelSpec

    try:
        return BaseModelSpec(model=model, revision=revision, dtype=dtype, device=device)
    except ValidationError as exc:
        raise UserError(f"bad model option: {exc.errors()[0]['msg']}") from None


@app.command("eval")
@friendly
def eval_command(
    model: str = typer.Option(..., "--model", "-m", help="builtin:tiny, hub id, folder or .gguf"),
    tasks: str = typer.Option("hellaswag,arc_challenge,winogrande",
                              help="comma-separated, from: " + ", ".join(task_names())),
    adapter: str = typer.Option(None, help="a PEFT adapter folder or hub id on top of --model"),
    limit: int = typer.Option(None, min=1, help="items per task (a fixed, seeded subset)"),
    batch_size: int = typer.Option(8, min=1),
    revision: str = typer.Option(None, help="hub branch/tag/commit of --model"),
    adapter_revision: str = typer.Option(None, help="hub branch/tag/commit of --adapter"),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | device_map=auto"),
    as_json: bool = typer.Option(False, "--json", help="print {results, n} as JSON"),
) -> None:
    """Evaluate a model (or a checkpoint/adapter) on registry tasks, without training: each
    metric with its standard error over items (``<metric>_stderr``) and the item count."""
    import math

    from learnforget.base import check_device, load_for_eval
    from learnforget.measure.evaluate import evaluate
    from learnforget.measure.tasks import get_task
    from learnforget.measure.uncertainty import STDERR_SUFFIX, stderr_name

    names = _csv(tasks)
    if not names:
        raise UserError("--tasks is empty: name one or more tasks, e.g. --tasks "
                        f"hellaswag,arc_challenge (known: {', '.join(task_names())})")
    for name in names:
        get_task(name)  # unknown names fail before the model loads
    check_device(device, "--device")
    loaded = load_for_eval(_model_spec(model, revision, dtype, device), adapter,
                           log=lambda m: console.print(f"[dim]{m}[/dim]"),
                           adapter_revision=adapter_revision)
    from learnforget.terminal_progress import scoring_progress

    with scoring_progress(console) as shown:
        results, counts, _ = evaluate(loaded.model, loaded.tokenizer, names, limit, batch_size,
                                   progress=shown)
    if as_json:  # an unknown standard error (one item) is null, not NaN
        finite = {name: {metric: value if math.isfinite(value) else None
                         for metric, value in metrics.items()}
                  for name, metrics in results.items()}
        print(json.dumps({"results": finite, "n": counts}, indent=2))
        return
    table = Table(title=f"{model}" + (f" + {adapter}" if adapter else ""))
    for column in ("task", "metric", "value ± stderr (n)"):
        table.add_column(column)
    for name, metrics in results.items():
        for metric, value in metrics.items():
            if metric.endswith(STDERR_SUFFIX):
                continue
            stderr = metrics.get(stderr_name(metric))
            spread = f" ± {stderr:.4f}" if stderr is not None and math.isfinite(stderr) else ""
            table.add_row(name, metric, f"{value:.4f}{spread} (n={counts[name]})")
    Console().print(table)


@app.command("score-code")
@friendly
def score_code(
    samples: Path = typer.Argument(..., help="JSONL with task_id and completion per line"),
    k: str = typer.Option("1,10", help="comma-separated k values for pass@k"),
    timeout: float = typer.Option(10.0, help="seconds per program"),
    per_task: bool = typer.Option(False, "--per-task", help="also print n and c per task"),
) -> None:
    """Score HumanEval completions in the sandbox; prints {"pass@1": …} as JSON."""
    from learnforget.measure.humaneval import score_samples_file

    try:
        ks = [int(v) for v in _csv(k)]
    except ValueError:
        raise UserError(f"--k takes comma-separated integers, got {k!r}") from None
    if samples.is_dir():
        raise UserError(f"{samples} is a folder: give the JSONL file of samples")
    if not (math.isfinite(timeout) and timeout > 0):
        raise UserError(f"--timeout must be a positive number of seconds, got {timeout}")
    if any(value < 1 for value in ks):
        raise UserError(f"--k takes positive integers, got {k!r}")
    try:
        result = score_samples_file(samples, ks, timeout_s=timeout)
    except UnicodeDecodeError:
        raise UserError(f"{samples} is not a text file (not UTF-8): give a JSONL file with one "
                        '{"task_id": ..., "completion": ...} object per line') from None
    skipped = [value for value in ks if f"pass@{value}" not in result]
    if skipped:
        fewest = min((task["n"] for task in result.get("per_task", {}).values()), default=0)
        console.print(
            "note: " + ", ".join(f"pass@{value}" for value in skipped) + " not computed: "
            f"pass@k needs at least k samples of every task (the fewest here: {fewest})",
            soft_wrap=True, highlight=False)
    if not per_task:
        result.pop("per_task", None)
    print(json.dumps(result, indent=2))


@app.command()
@friendly
def spectrum(
    base: str = typer.Option(..., help="the base model: builtin:NAME, hub id, folder or .gguf"),
    tuned: str = typer.Option(None, help="the finetuned model (folder or hub id)"),
    adapter: str = typer.Option(None, help="a PEFT LoRA adapter trained on --base"),
    threshold: float = typer.Option(0.9, min=0.01, max=1.0, help="share of variance"),
    intruder_k: int = typer.Option(10, min=1),
    intruder_eps: float = typer.Option(0.5, min=0.0, max=1.0),
    device: str = typer.Option("cpu", help="where the SVDs run (cpu | cuda)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object per matrix"),
) -> None:
    """ΔW between a base and a finetuned model or adapter: rank for 90% of variance vs a
    random matrix, and intruder dimensions, per changed matrix."""
    from learnforget.base import attach_adapter, check_device, load_weights
    from learnforget.measure.spectrum import spectrum_between, spectrum_json

    if (tuned is None) == (adapter is None):
        raise UserError("give exactly one of --tuned MODEL or --adapter ADAPTER")
    check_device(device, "--device")
    spec = _model_spec(base, None, "float32", "cpu")
    base_model = load_weights(spec)  # weights only: ΔW needs no tokenizer
    base_state = {k: v.detach().clone() for k, v in base_model.state_dict().items()
                  if v.ndim == 2}
    if adapter:
        other = attach_adapter(base_model, adapter, base_name=base)
        result = spectrum_between(base_state, peft_model=other, threshold=threshold,
                                  intruder_k=intruder_k, intruder_eps=intruder_eps, device=device)
    else:
        other = load_weights(_model_spec(tuned, None, "float32", "cpu"))
        result = spectrum_between(base_state, tuned=other, threshold=threshold,
                                  intruder_k=intruder_k, intruder_eps=intruder_eps, device=device)
    if not result:
        raise UserError("no 2-D weight differs between the two models: is --tuned really "
                        "finetuned from --base?")
    rows = spectrum_json(result)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"ΔW spectrum: {len(rows)} changed matrices")
    for column in ("matrix", "shape", "rank90", "random rank90", "intruders", "‖ΔW‖/‖W‖"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], "×".join(map(str, row["shape"])), str(row["rank90"]),
                      str(row["random_rank90"]), str(row["intruders"]),
                      f"{row.get('relative_change', 0):.4f}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)


class _PlainUsage(TyperCommand):
    """A command whose usage line names its arguments in click's plain style (``STUDY_FILE``)
    rather than typer's braces (``{study_file}``)."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        """The usage pieces with braced argument names written plainly, in capitals."""
        return [piece[1:-1].upper() if piece.startswith("{") and piece.endswith("}") else piece
                for piece in super().collect_usage_pieces(ctx)]


for _command in app.registered_commands:
    if _command.cls in (None, TyperCommand):
        _command.cls = _PlainUsage


def _version(value: bool) -> None:
    if value:
        from learnforget import __version__

        print(f"learnforget {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit"),
          debug: bool = typer.Option(False, "--debug",
                                     help="on an error, show the full traceback")) -> None:
    """What does finetuning teach a model, what does it make it forget, and which method?"""
    from learnforget.stacks import dump_stacks_on_sigusr1

    DEBUG["traceback"] = debug
    dump_stacks_on_sigusr1()
