"""Where learnforget keeps what it builds: built-in base models, tokenizers, prepared data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user's cache folder for learnforget (``$LEARNFORGET_CACHE`` overrides it)."""
    root = os.environ.get("LEARNFORGET_CACHE")
    if root:
        path = Path(root)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "learnforget"
    path.mkdir(parents=True, exist_ok=True)
    return path
