"""What every scoring primitive (bits per byte, multiple choice, generation) needs from a model
and its tokenizer: the context length, the start token, the device, eval and inference mode with
every module's training flag restored, plain encoding and the batch-size check.

The primitives take a Hugging Face causal LM (a ``PreTrainedModel``, possibly wrapped in a
``peft.PeftModel``) and its tokenizer, work in batches on the model's device under
``torch.inference_mode()`` (``evaluating``), put the model in eval mode and restore every
module's previous training mode afterwards. Padding is done on token-id lists, not by the
tokenizer, so the caller's tokenizer (its ``padding_side`` and ``pad_token``) is never modified.

Context length. The model's context is read from its config (``n_positions``,
``max_position_embeddings`` or ``n_ctx``, in that order, as lm-eval does), else the tokenizer's
``model_max_length``, else 2048. Inputs longer than the context lose tokens from the LEFT of the
conditioning context, as in lm-eval; the tokens being scored (or generated) are never dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from learnforget.errors import UserError

_CONTEXT_LENGTH_ATTRIBUTES = ("n_positions", "max_position_embeddings", "n_ctx")
_DEFAULT_CONTEXT_LENGTH = 2048  # lm-eval's fallback when nothing states a context length
_TOKENIZER_UNBOUNDED = 10**12  # tokenizers report a huge model_max_length when it is unset


def context_length(model, tokenizer) -> int:
    """The number of positions the model can attend to, resolved as lm-eval resolves it."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for attribute in _CONTEXT_LENGTH_ATTRIBUTES:
        value = getattr(config, attribute, None)
        if value is not None:
            return int(value)
    model_max_length = getattr(tokenizer, "model_max_length", None)
    if model_max_length is not None and model_max_length < _TOKENIZER_UNBOUNDED:
        return int(model_max_length)
    return _DEFAULT_CONTEXT_LENGTH


def start_token_id(tokenizer) -> int | None:
    """The token that conditions the first scored token: BOS when the tokenizer has one, else
    EOS (the document separator of GPT-2-style vocabularies), else None. lm-eval's
    ``prefix_token_id``."""
    if tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    return tokenizer.eos_token_id


def model_device(model) -> torch.device:
    """The device of the model's (first) parameters: where its inputs go."""
    return next(model.parameters()).device


@contextlib.contextmanager
def evaluating(model) -> Iterator[torch.device]:
    """Eval mode plus ``inference_mode`` for the duration; every module's previous training flag
    is restored afterwards (not just the root's: some may have been frozen in eval mode)."""
    training_flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.inference_mode():
            yield model_device(model)
    finally:
        for module, training in training_flags.items():
            module.training = training


def encode_plain(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def check_batch_size(batch_size: int) -> None:
    """A ``UserError`` for a batch size below 1."""
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}.")
