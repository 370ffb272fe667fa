"""The log-likelihood of each scored continuation in a batch's logits, read back in one go.

lm-eval reads every request's log-likelihood and greedy flag with ``float()`` and ``bool()``
as it goes, and builds each request's target ids on the device: on a GPU that is a host sync
(and a blocking copy) per request, which for a small model costs as much as the forward pass
itself. Here every request of a batch is gathered into one flat list of positions, scored in
chunks of bounded memory, and copied to the host once; each request's sum is then taken on the
CPU over its own positions, as a ``.sum()`` over the same float32 values, so on a CPU the numbers
are exactly those of the per-request loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# (row of the batch, positions whose logits predict the continuation, the continuation's ids)
ContinuationRequest = tuple[int, Sequence[int], Sequence[int]]

# log-probabilities of at most this many vocabulary entries are held at once: 4 MiB of float32
# on a CPU (a chunk stays in cache: larger ones made bits per byte slower than the per-request
# loop), 64 MiB on an accelerator (fewer, larger kernels; with the gathered logits about 160 MiB
# beside the model, so a model that fits its GPU snugly is still scored)
CPU_CHUNK_ELEMENTS = 1 << 20
ACCELERATOR_CHUNK_ELEMENTS = 1 << 24


def continuation_scores(logits: torch.Tensor, requests: Sequence[ContinuationRequest]
                        ) -> list[tuple[float, bool]]:
    """(sum of the continuation's log-probabilities, whether every token is the greedy one) for
    each request, from ``logits`` of shape (rows, positions, vocabulary)."""
    rows: list[int] = []
    positions: list[int] = []
    targets: list[int] = []
    for row, where, continuation in requests:
        if len(where) != len(continuation):
            raise ValueError("each continuation token needs the position that predicts it")
        rows += [row] * len(where)
        positions += where
        targets += continuation
    index = torch.tensor([rows, positions, targets], dtype=torch.long).to(logits.device)
    token_logprobs = torch.empty(len(targets), dtype=torch.float32, device=logits.device)
    greedy = torch.empty(len(targets), dtype=torch.bool, device=logits.device)
    elements = CPU_CHUNK_ELEMENTS if logits.device.type == "cpu" else ACCELERATOR_CHUNK_ELEMENTS
    chunk = max(1, elements // logits.shape[-1])
    for start in range(0, len(targets), chunk):
        rows_, positions_, targets_ = index[:, start : start + chunk]
        logprobs = logits[rows_, positions_].float().log_softmax(-1)
        token_logprobs[start : start + chunk] = logprobs.gather(-1, targets_[:, None])[:, 0]
        greedy[start : start + chunk] = logprobs.argmax(-1) == targets_
    token_logprobs, greedy = token_logprobs.cpu(), greedy.cpu()  # the batch's one host sync
    scores = []
    start = 0
    for _, _, continuation in requests:
        end = start + len(continuation)
        scores.append((float(token_logprobs[start:end].sum()), bool(greedy[start:end].all())))
        start = end
    return scores
