"""Bits per byte: the negative log-likelihood of texts in bits over their UTF-8 bytes, comparable
across tokenizers, with its standard error over items. Texts longer than the model's context are
scored in rolling windows (``bits_per_byte_items``), every token exactly once, as lm-eval's
``loglikelihood_rolling`` does by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from learnforget.data.items import TextItem
from learnforget.errors import UserError
from learnforget.measure.inference import context_length, encode_plain, start_token_id
from learnforget.measure.token_loglikelihoods import TokenPair, score_token_pairs
from learnforget.measure.uncertainty import BITS, BYTES, ItemValues, ratio_stderr


def _rolling_windows(
    n_context: int, n_total: int, max_length: int, stride: int
) -> list[tuple[int, int, int]]:
    """Windows ``(input_start, target_start, target_end)`` over a sequence whose positions
    ``[n_context, n_total)`` are to be scored, each exactly once.

    A window feeds positions ``[input_start, target_end - 1)`` (at most ``max_length`` tokens) and
    scores the targets ``[target_start, target_end)``. The first window scores every target that
    fits after the whole context (or ``stride`` targets when the context alone fills the window:
    then the context is cut from the left); each later window scores the next ``stride`` targets
    and is filled up to ``max_length`` with the tokens before them, so every scored token is
    conditioned on at least ``max_length - stride`` earlier tokens (or all of them).
    """
    windows = []
    target_start = n_context
    target_end = min(n_total, max(max_length + 1, n_context + stride))
    while target_start < n_total:
        windows.append((max(0, target_end - 1 - max_length), target_start, target_end))
        target_start = target_end
        target_end = min(n_total, target_end + stride)
    return windows


def bits_per_byte_items(
    model,
    tokenizer,
    items: list[TextItem],
    batch_size: int = 8,
    max_length: int | None = None,
    stride: int | None = None,
) -> list[tuple[float, int]]:
    """Per item: (negative log-likelihood of ``text`` in nats, UTF-8 byte count of ``text``).

    The scored sequence is ``[start] + tokens(prefix) + tokens(text)``, the prefix and the text
    tokenized separately without special tokens, so exactly the tokens of ``text`` are scored
    and the prefix only conditions them. ``start`` is the tokenizer's BOS token, or its EOS
    token when it has no BOS (lm-eval's rule): it is always prepended, so the first token of
    ``text`` is scored too even when the prefix is empty, and a tokenizer that adds BOS by
    itself does not get it twice.

    A sequence longer than the context (``max_length``, default: the model's) is scored in
    rolling windows with ``stride`` new tokens each: every token of ``text`` is scored once,
    conditioned on at least ``max_length - stride`` preceding tokens. The default,
    ``stride=max_length``, gives non-overlapping windows as lm-eval's ``loglikelihood_rolling``
    does (the cheapest: each token is fed once); a smaller stride gives the tokens at a
    window's start more context at the cost of feeding tokens again.
    """
    if max_length is None:
        max_length = context_length(model, tokenizer)
    if stride is None:
        stride = max_length
    if not 1 <= stride <= max_length:
        raise UserError(f"stride must be between 1 and max_length ({max_length}), got {stride}.")
    start = start_token_id(tokenizer)
    pairs: list[TokenPair] = []
    owners: list[int] = []
    for index, item in enumerate(items):
        context = ([start] if start is not None else []) + encode_plain(tokenizer, item.prefix)
        sequence = context + encode_plain(tokenizer, item.text)
        if not context and len(sequence) > 0:
            raise UserError(
                "the tokenizer has neither a BOS nor an EOS token, so the first token of a "
                "text without prefix cannot be scored; give the items a prefix or set "
                "tokenizer.eos_token."
            )
        for input_start, target_start, target_end in _rolling_windows(
            len(context), len(sequence), max_length, stride
        ):
            pairs.append((sequence[input_start:target_start], sequence[target_start:target_end]))
            owners.append(index)
    nll_nats = [0.0] * len(items)
    for owner, (log_likelihood, _) in zip(
        owners, score_token_pairs(model, pairs, batch_size, max_length), strict=True
    ):
        nll_nats[owner] -= log_likelihood
    return [
        (nll, len(item.text.encode("utf-8"))) for nll, item in zip(nll_nats, items, strict=True)
    ]


def bits_per_byte(
    model,
    tokenizer,
    items: list[TextItem],
    batch_size: int = 8,
    max_length: int | None = None,
    stride: int | None = None,
) -> float:
    """Total negative log-likelihood of the items' texts in bits divided by their total UTF-8
    bytes (``sum nll / sum bytes / ln 2``): comparable across tokenizers. Details, windows and
    the start token: ``bits_per_byte_items``."""
    per_item = bits_per_byte_items(model, tokenizer, items, batch_size, max_length, stride)
    return bits_per_byte_scores(per_item)["bpb"]


def bits_per_byte_values(per_item: Sequence[tuple[float, int]]) -> ItemValues:
    """``{"bits": [...], "bytes": [...]}`` per item from ``bits_per_byte_items``' (nll in nats,
    bytes) pairs: what a paired comparison of two checkpoints reads."""
    return {BITS: [nll / math.log(2) for nll, _ in per_item],
            BYTES: [float(n_bytes) for _, n_bytes in per_item]}


def bits_per_byte_scores(per_item: Sequence[tuple[float, int]]) -> dict[str, float]:
    """``{"bpb", "bpb_stderr"}`` from ``bits_per_byte_items``' (nll in nats, bytes) pairs:
    ``sum nll / sum bytes / ln 2`` and the standard error of that ratio over items
    (``uncertainty.ratio_stderr``, the bits of each item against its bytes)."""
    total_bytes = sum(n_bytes for _, n_bytes in per_item)
    if total_bytes == 0:
        raise UserError("bits per byte needs at least one item with non-empty text.")
    bits = [nll / math.log(2) for nll, _ in per_item]
    return {
        "bpb": sum(nll for nll, _ in per_item) / total_bytes / math.log(2),
        "bpb_stderr": ratio_stderr(bits, [n_bytes for _, n_bytes in per_item]),
    }
