"""The items that evaluation tasks are made of, one dataclass per scoring primitive (data, so
that data sources build them without importing the measure layer).

A task (see ``learnforget.measure.tasks``) is data: a name, a loader that returns a list of
these items, and the primitive that scores them (``learnforget.measure.bits_per_byte``,
``multiple_choice`` or ``generation``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TextItem:
    """Text scored by bits per byte. ``prefix`` conditions the model but is not scored
    (e.g. the problem statement when only the worked answer is measured)."""

    text: str
    prefix: str = ""


@dataclass(frozen=True)
class ChoiceItem:
    """Multiple choice by log-likelihood: ``context`` followed by ``target_delimiter`` and each
    of ``choices``; ``label`` is the index of the right one. As in lm-eval-harness, the scored
    continuation is ``target_delimiter + choice`` and acc_norm divides by ``len(choice)``
    (lm-eval's standard tasks use the delimiter " ")."""

    context: str
    choices: tuple[str, ...]
    label: int
    target_delimiter: str = ""

    def continuations(self) -> tuple[str, ...]:
        """The strings actually scored after the context."""
        return tuple(self.target_delimiter + choice for choice in self.choices)


@dataclass(frozen=True)
class GenerationItem:
    """A prompt to complete. ``answer`` is the reference (a number for GSM8K-style items);
    ``stop`` ends generation; ``meta`` carries task-specific data (HumanEval's ``test``,
    ``entry_point`` and ``task_id``)."""

    prompt: str
    answer: str = ""
    stop: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, hash=False, compare=False)
