"""Warnings that say nothing to our users, silenced in every process that trains or measures
(the command line and each executor's workers call ``quiet_warnings``)."""

from __future__ import annotations

import warnings


def quiet_warnings() -> None:
    """Silence library warnings about internals the user cannot act on."""
    # PEFT calls an attribute transformers has renamed.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                            category=FutureWarning)
