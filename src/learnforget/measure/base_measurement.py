"""The base model's measurements, stored once per study as run ``base-…``: every checkpoint's
forgetting is compared against them (and, for custom data, its train / held-out split)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from learnforget.base import load_base
from learnforget.measure.checkpoint import Measurer, measured_tasks
from learnforget.measure.scoring_progress import ScoringCallback
from learnforget.outbase import keep_base
from learnforget.plan import config_hash
from learnforget.store import Measurement, Store
from learnforget.study import Study


def base_run_id(study: Study) -> str:
    """The id under which the base model's measurements are stored."""
    return "base-" + config_hash({"base": study.base.model_dump(mode="json"),
                                  "target": study.target.model_dump(mode="json")})


def base_values(store: Store, study: Study) -> dict[tuple[str, str], float]:
    """The base model's stored measurements, {(task, metric): value}."""
    return {(r["task"], r["metric"]): r["value"] for r in store.measurements(base_run_id(study))}


def measure_base(study: Study, out: Path, log: Callable[[str], None] = print,
                 progress: ScoringCallback | None = None) -> dict:
    """Save the base into ``OUT/base`` (``outbase.keep_base``) and measure it once (step 0 of
    run ``base-…``); returns its values."""
    keep_base(study.base, out, log)
    store = Store(out / "results.sqlite")
    run_id = base_run_id(study)
    store.ensure_run(run_id, study.name, "base", "base", {"base": study.base.model_dump()})
    done = {r["task"] for r in store.measurements(run_id)}
    missing = measured_tasks(study, final=True, spectrum=False) - done
    if store.run_status(run_id) != "finished" or missing:
        log("measuring the base model")
        loaded = load_base(study.base, log=log)
        measurer = Measurer(study, loaded.tokenizer, {})
        rows, artifacts = measurer(
            loaded.model, only=missing, progress=progress,
            on_task=(lambda n: None) if progress else lambda n: log(f"  base: {n}"))
        store.record_checkpoint(run_id, 0, 0, None, [(0, 0, m) for m in rows], artifacts)
        store.set_status(run_id, "finished")
    if study.target.domain == "custom" and "data" not in done:
        _record_split(study, store, run_id, log)
    values = base_values(store, study)
    store.close()
    return values


def _record_split(study: Study, store: Store, run_id: str, log: Callable[[str], None]) -> None:
    """Log custom data's train / held-out split and store it as task ``data`` of the base."""
    from learnforget.data.target import load_target

    split = load_target(study.target).split
    if split is None:
        return
    log(f"held-out split of {study.target.data}: {split.describe()}")
    rows = [Measurement("data", "examples", float(len(split.heldout))),
            Measurement("data", "heldout_examples", float(split.heldout_count)),
            Measurement("data", "near_duplicate_groups", float(split.groups_merged)),
            Measurement("data", "heldout_near_duplicate_share", split.near_duplicate_share)]
    store.add_measurements(run_id, [(0, 0, m) for m in rows], {})
