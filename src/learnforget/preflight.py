"""Checks made before anything is created or trained: the output folder, the study's data,
task names, device and sequence length. ``plan`` runs them, and ``run`` runs them before it
creates OUT, so a study that cannot run fails in seconds with a message naming the problem.
"""

from __future__ import annotations

import os
from pathlib import Path

from learnforget.errors import UserError
from learnforget.study import Study

SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_output_folder(out: Path, option: str = "--out") -> None:
    """A ``UserError`` unless ``out`` is (or can be created as) a writable folder. Nothing is
    created here."""
    resolved = Path(os.path.abspath(out.expanduser()))
    system = next((root for root in SYSTEM_ROOTS
                   if resolved == root or root in resolved.parents), None)
    if system is not None:
        raise UserError(f"{option} {out} is inside {system}, a system folder: choose a folder "
                        "of your own, e.g. out/NAME")
    if resolved.exists() and not resolved.is_dir():
        raise UserError(f"{option} {out} is an existing file, not a folder: choose another path "
                        "or move the file away")
    existing = resolved
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option} {out}: {existing} is a file, so no folder can be made there; "
                        "choose another path")
    if not os.access(existing, os.W_OK | os.X_OK) or read_only_mount(existing):
        what = "is not writable" if existing == resolved else f"cannot be created in {existing}"
        raise UserError(f"{option} {out} {what} (read-only or no permission): choose a folder "
                        "you can write to")


def read_only_mount(folder: Path) -> bool:
    """Whether ``folder`` lies on a file system mounted read-only (``os.access`` says yes to
    root even there)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_study(study: Study) -> None:
    """Every check of a study that needs no training: task names, device, custom data and the
    model's maximum sequence length; the first failure is a ``UserError``."""
    from learnforget.base import check_device
    from learnforget.measure.tasks import validate_tasks

    try:
        validate_tasks(study)
    except UserError as exc:
        raise UserError(f"evaluation (learning, forgetting, final_only): {exc}") from None
    check_device(study.base.device, "base.device")
    _check_data(study)
    _check_seq_len(study)


def _check_data(study: Study) -> None:
    """The user's data (``target.data``, any domain): local files exist, are readable and have
    the text field(s); a named dataset or hub id needs the hub within reach."""
    target = study.target
    if not target.data:
        return
    from learnforget.data.loaders import NAMED_DATASETS, _looks_like_path

    local = Path(target.data).expanduser()
    if target.data in NAMED_DATASETS or not (local.exists() or _looks_like_path(target.data)):
        from learnforget.base import hub_unreachable_reason

        reason = hub_unreachable_reason()
        if reason is not None:
            raise UserError(f"target.data {target.data!r} is read from the Hugging Face hub, "
                            f"which is out of reach ({reason}): connect, or download it and "
                            "point target.data at the local files")
        return
    from learnforget.data.target import first_example

    first_example(target)  # opens the files and checks the fields of their records


def _check_seq_len(study: Study) -> None:
    """``training.seq_len`` within the model's position embeddings."""
    from learnforget.planinfo import base_config

    config = base_config(study.base)
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and study.training.seq_len > limit:
        raise UserError(f"training.seq_len {study.training.seq_len} is beyond what "
                        f"{study.base.model} was trained for (max_position_embeddings "
                        f"{limit}): set training.seq_len to at most {limit}")
