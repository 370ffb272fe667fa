"""Run a study's runs as Ray tasks: on this machine or spread over a Ray cluster.

Ray schedules one task per run with ``training.threads`` CPUs (and ``gpus_per_run`` GPUs), so a
grid fills every node of a cluster. The results store stays one SQLite file on the driver's
machine: a ``StoreActor`` pinned there owns it and each task sends its writes to it, so SQLite is
never opened over a network file system, and every checkpoint's measurements are committed the
moment they exist (a task that dies loses no finished measurement; rerunning resumes). Progress
comes back through a Ray queue and is drawn by the same progress bars as the local executor.

Checkpoint weights are written under ``OUT/runs`` on the node that trains the run; to resume an
interrupted run on another node, or to measure a finished one again, OUT must be a folder every
node sees (a shared file system), which is how Ray clusters are usually set up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from learnforget.errors import UserError
from learnforget.executors.local import progress_bars
from learnforget.plan import RunConfig
from learnforget.store import Store
from learnforget.study import Study

# The Store methods a run calls (see runner.execute_run); the actor serves exactly these.
STORE_METHODS = (
    "ensure_run", "set_status", "run_status", "record_checkpoint", "checkpoint_steps",
    "checkpoints", "add_measurements", "measurements",
)


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise UserError(
            "the Ray executor needs Ray: pip install 'learnforget[ray]' (or pip install ray), "
            "or run without --executor ray to train on this machine."
        ) from exc
    return ray


class StoreOwner:
    """Body of the store actor: one Store on the driver's disk, its methods called one at a
    time (an actor runs one call after another, so SQLite sees a single writer)."""

    def __init__(self, path: str) -> None:
        self.store = Store(path)

    def call(self, name: str, *args, **kwargs):
        """``Store.NAME(*args, **kwargs)`` for a name in ``STORE_METHODS``."""
        if name not in STORE_METHODS:
            raise AttributeError(f"the store actor does not serve {name!r}")
        return getattr(self.store, name)(*args, **kwargs)


class StoreProxy:
    """The Store interface a run sees inside a Ray task: every call goes to the store actor
    and waits for it (a checkpoint is committed before training goes on)."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def __getattr__(self, name: str):
        if name not in STORE_METHODS:
            raise AttributeError(name)
        import ray

        return lambda *args, **kwargs: ray.get(self._actor.call.remote(name, *args, **kwargs))

    def close(self) -> None:
        """Nothing to close here: the actor owns the connection."""


def _store_actor(ray, path: Path):
    """A StoreOwner actor pinned to this (the driver's) node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0)(StoreOwner).options(scheduling_strategy=here).remote(str(path))


def _ray_task(study_json: str, run_json: str, out: str, store: Any, events: Any,
              stop_after: int | None = None) -> tuple[str, str]:
    """One run inside a Ray worker: rebuild the configs and execute the run (up to its
    ``stop_after``-th checkpoint when given)."""
    from learnforget.plan import RunConfig as _Run
    from learnforget.quiet import quiet_warnings
    from learnforget.runner import execute_run
    from learnforget.study import Study as _Study

    quiet_warnings()

    run = _Run.model_validate_json(run_json)
    status = execute_run(
        _Study.model_validate_json(study_json), run, Path(out),
        progress=events.put, log=lambda msg: events.put({"log": msg}),
        open_store=lambda: StoreProxy(store), stop_after=stop_after,
    )
    return run.run_id, status


def _connect(ray, address: str | None) -> None:
    """Start Ray on this machine (``address`` None) or join the cluster at ``address``."""
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except ConnectionError as exc:
        raise UserError(
            f"no Ray cluster at {address!r} ({exc}); start one with `ray start --head`, "
            "or leave out --ray-address to run Ray on this machine."
        ) from exc


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Ray started (or joined) once for every call of ``run_all_ray`` inside: the rounds of
    successive halving do not each start it again (most of a minute on 2 cores)."""
    ray = _import_ray()
    if ray.is_initialized():
        yield
        return
    _connect(ray, address)
    try:
        yield
    finally:
        ray.shutdown()


def run_all_ray(study: Study, runs: list[RunConfig], out: Path, console: Console | None = None,
                address: str | None = None, gpus_per_run: float = 0.0,
                stop_after: list[int | None] | None = None) -> dict[str, str]:
    """Execute ``runs`` as Ray tasks (``address``: a running cluster, e.g. ``auto``; None
    starts Ray on this machine); returns {run_id: status}. ``stop_after``: per run, the
    checkpoint it stops after (a rung of successive halving), None: trained to the end."""
    ray = _import_ray()
    from ray.util.queue import Empty, Queue

    console = console or Console(stderr=True)
    started_here = not ray.is_initialized()
    if started_here:
        _connect(ray, address)
    statuses: dict[str, str] = {}
    pending: dict = {}
    try:
        store = _store_actor(ray, out.resolve() / "results.sqlite")
        events = Queue()
        task = ray.remote(_ray_task).options(
            num_cpus=study.training.threads, num_gpus=gpus_per_run, max_retries=0)
        stops = stop_after or [None] * len(runs)
        pending = {task.remote(study.model_dump_json(), r.model_dump_json(), str(out.resolve()),
                               store, events, stop): r
                   for r, stop in zip(runs, stops, strict=True)}
        with progress_bars(console, len(runs)) as bars:
            while pending:
                with contextlib.suppress(Empty):
                    bars.handle(events.get(timeout=0.5))
                done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                for ref in done:
                    run = pending.pop(ref)
                    try:
                        run_id, status = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = exc.as_instanceof_cause()
                        if isinstance(cause, UserError):
                            raise cause from None
                        run_id, status = run.run_id, "failed"
                        _mark(out / "results.sqlite", [run_id], "failed", str(cause)[-4000:])
                    except ray.exceptions.RayError as exc:  # the task's worker died
                        run_id, status = run.run_id, "failed"
                        _mark(out / "results.sqlite", [run_id], "failed",
                              f"the Ray task of this run ended without a result: {exc}"[:4000])
                    statuses[run_id] = status
            while not events.empty():
                bars.handle(events.get())
    except BaseException:  # Ctrl-C, SIGTERM, a UserError: stop every task still running
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        unfinished = [r.run_id for r in pending.values()]
        if started_here:
            ray.shutdown()
            started_here = False
        _mark(out / "results.sqlite", unfinished, "pending")
        raise
    finally:
        if started_here:
            ray.shutdown()
    return statuses


def _mark(path: Path, run_ids: list[str], status: str, error: str | None = None) -> None:
    """Runs whose task is gone and that did not end (``pending`` or ``running`` in the store)
    get ``status``: ``pending`` after a stop (the next ``run`` resumes them), ``failed``."""
    if not run_ids or not path.exists():
        return
    store = Store(path)
    try:
        for run_id in run_ids:
            if store.run_status(run_id) in ("pending", "running"):
                store.set_status(run_id, status, error)
    finally:
        store.close()
