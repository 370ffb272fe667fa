"""The shapes that every data source hands to training: documents and prompt/response pairs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    """One instruction-finetuning example: the loss is on ``response`` only."""

    prompt: str
    response: str
