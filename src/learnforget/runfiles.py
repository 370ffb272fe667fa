"""``OUT/runs/RUN_ID/run.json``: what a run folder holds, readable without the store.

The run folders are named by run id (a hash of the run's configuration). ``run.json`` beside
the checkpoints says which run it is — method and its settings, learning rate, seed, status —
and lists the checkpoints with their step, tokens and folder. ``RunFilesStore`` keeps it up to
date: it wraps the results store of one run and rewrites the file whenever the run's status
changes or a checkpoint is committed (and points each LoRA checkpoint at ``OUT/base``, see
``outbase.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from learnforget.outbase import BASE_DIR, kept_base, point_adapter_at_base
from learnforget.plan import RunConfig

RUN_FILE = "run.json"
METHOD_FIELDS = {
    "full": ("weight_decay", "attention_dropout", "train_embeddings"),
    "lora": ("r", "alpha", "targets", "dropout", "use_rslora", "use_dora", "init",
             "weight_decay"),
    "peft": ("peft", "weight_decay"),
}


def _relative(path: str | None, out: Path) -> str | None:
    """``path`` relative to OUT when it lies inside it (the folder may move), else as given."""
    if not path:
        return None
    try:
        return Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix()
    except ValueError:  # another drive
        return path


def run_record(run: RunConfig, study: str, status: str | None, checkpoints: list[dict],
               out: Path, error: str | None = None) -> dict:
    """The content of ``run.json``: the run, its status and its checkpoints (folders relative
    to OUT)."""
    method = run.method
    base = kept_base(out)
    return {
        "run_id": run.run_id,
        "study": study,
        "label": run.label,
        "method": {"kind": method.kind,
                   **{name: getattr(method, name) for name in METHOD_FIELDS[method.kind]}},
        "lr": method.lr,
        "optimizer": run.optimizer.name,
        "seed": run.seed,
        "base": {"model": run.base.model, "folder": BASE_DIR if base else None},
        "status": status,
        "error": error.strip().splitlines()[-1] if error and error.strip() else None,
        "checkpoints": [{"step": c["step"], "tokens": c["tokens"],
                         "folder": _relative(c.get("path"), out)} for c in checkpoints],
    }



def write_run_file(folder: Path, record: dict) -> Path:
    """Write ``record`` to ``folder/run.json`` atomically; returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / RUN_FILE
    partial = target.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(target)
    return target


def read_run_file(folder: Path) -> dict:
    """The ``run.json`` of a run folder."""
    return json.loads((folder / RUN_FILE).read_text())


class RunFilesStore:
    """The results store of one run, writing ``run.json`` (and pointing LoRA checkpoints at
    ``OUT/base``) on every status change and committed checkpoint; every other method is the
    wrapped store's."""

    def __init__(self, store, run: RunConfig, study: str, out: Path) -> None:
        self._store, self._run, self._study, self._out = store, run, study, out
        self._error: str | None = None
        base = kept_base(out)
        for checkpoint in store.checkpoints(run.run_id) if base is not None else []:
            if checkpoint.get("path") and Path(checkpoint["path"]).is_dir():
                point_adapter_at_base(Path(checkpoint["path"]), base)  # from before OUT/base
        self.write()

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def write(self) -> Path:
        """Rewrite ``run.json`` from the store's status and checkpoints of the run."""
        run_id = self._run.run_id
        record = run_record(self._run, self._study, self._store.run_status(run_id),
                            self._store.checkpoints(run_id), self._out, self._error)
        return write_run_file(self._out / "runs" / run_id, record)

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        """The store's ``set_status``, then ``run.json``."""
        self._store.set_status(run_id, status, error)
        if run_id == self._run.run_id:
            self._error = error
            self.write()

    def record_checkpoint(self, run_id: str, step: int, tokens: int, path: str | None,
                          *args, **kwargs) -> None:
        """Point a LoRA checkpoint at ``OUT/base``, commit it, then rewrite ``run.json``."""
        base = kept_base(self._out)
        if base is not None and path:
            point_adapter_at_base(Path(path), base)
        self._store.record_checkpoint(run_id, step, tokens, path, *args, **kwargs)
        if run_id == self._run.run_id:
            self.write()
