"""The memory a run's process holds before it loads a model: the floor of the CPU memory
estimate (``memory_estimate.estimate_runs``'s ``runtime``), measured here because only at the
executors' level may the run's code be imported to measure it."""

from __future__ import annotations

import functools

from learnforget.peak_memory import resident_bytes
from learnforget.precision import uses_cuda


@functools.lru_cache(maxsize=1)
def _imported_runtime_bytes() -> int:
    """Resident memory of the interpreter with the libraries a training run imports, measured
    in this process after importing them."""
    import learnforget.executors.local  # noqa: F401  (what a run's process imports)
    import learnforget.runner  # noqa: F401

    return resident_bytes()


def runtime_bytes(device: str) -> int:
    """The bytes a run's process on ``device`` (a study's ``base.device``) holds before it
    loads anything: on a CPU the resident memory of the interpreter and the libraries a run
    imports; on CUDA none (``max_memory_allocated`` leaves out the context)."""
    return 0 if uses_cuda(device) else _imported_runtime_bytes()
