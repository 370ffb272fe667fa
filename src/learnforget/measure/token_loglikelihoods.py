"""The log-likelihood of each continuation given its context, both in token ids, with the flag
whether it is the greedy continuation: lm-eval's ``HFLM._loglikelihood_tokens`` for a causal LM,
run in batches (the model's logits are read by ``continuations``).

Batches are right padded: pad positions come after every scored position, so with a causal model
they cannot change them; an attention mask is passed anyway. Bits per byte (``bits_per_byte``)
and lm-eval's loglikelihood requests (``multiple_choice``) score through ``score_token_pairs``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from learnforget.errors import UserError
from learnforget.measure.continuations import continuation_scores
from learnforget.measure.inference import check_batch_size, evaluating
from learnforget.measure.scoring_progress import report_batch

# A scoring request in token ids: (context, continuation); the continuation is scored.
TokenPair = tuple[list[int], list[int]]


def score_token_pairs(
    model, pairs: Sequence[TokenPair], batch_size: int, max_length: int
) -> list[tuple[float, bool]]:
    """Log-likelihood of each continuation given its context, and whether it is the greedy
    continuation: lm-eval's ``HFLM._loglikelihood_tokens`` for a causal LM.

    The model sees ``(context + continuation)[-(max_length + 1):][:-1]`` (the context is cut from
    the left when too long). Requests are sorted longest first so a batch pads little; results
    come back in the order of ``pairs``.
    """
    check_batch_size(batch_size)
    for context, continuation in pairs:
        if not context or not continuation:
            raise ValueError("every scoring request needs a context and a continuation token")
        if len(continuation) > max_length:
            raise UserError(
                f"a continuation of {len(continuation)} tokens does not fit the model's context "
                f"of {max_length} tokens; shorten the choices or use a model with a longer context."
            )
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    results: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
    with evaluating(model) as device:
        for first in range(0, len(order), batch_size):
            indices = order[first : first + batch_size]
            inputs = [(pairs[i][0] + pairs[i][1])[-(max_length + 1) :][:-1] for i in indices]
            width = max(len(ids) for ids in inputs)
            input_ids = torch.zeros((len(inputs), width), dtype=torch.long)
            attention_mask = torch.zeros((len(inputs), width), dtype=torch.long)
            for row, ids in enumerate(inputs):  # right padding
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention_mask[row, : len(ids)] = 1
            logits = model(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
            ).logits
            requests = [(row, range(len(inputs[row]) - len(pairs[i][1]), len(inputs[row])),
                         pairs[i][1]) for row, i in enumerate(indices)]
            for i, scores in zip(indices, continuation_scores(logits, requests), strict=True):
                results[i] = scores
            report_batch(first + len(indices), len(order))
    return results
