"""Multiple-choice log-likelihoods with the text an item's requests share run once.

lm-eval scores every (context, choice) request as a sequence of its own, so a four-way
HellaSwag item costs four passes over the same context. Here the requests of one item form a
group, and a group is one row of a batch: the token prefix their contexts share, then each
request's own tokens (the rest of its context, its continuation), side by side. A 4-D attention
mask lets each request's tokens see the prefix and their own earlier tokens only, and position
ids restart after the prefix for each request, so every request is computed as if it were alone
after the prefix (the idea of tree attention in speculative decoding). For HellaSwag, ARC and
the built-in cloze the shared prefix is the whole context; for WinoGrande (each option fills the
blank and forms its own context) it is the sentence up to the blank. lm-eval has no such path
(its ``HFLM`` re-runs the context per request), hence this module.

The numbers are lm-eval's, up to float rounding: one request of the first batch (one that sits
after another in its row) is also scored the plain way and, if the two disagree by more than
``TOLERANCE`` nats (a model that ignores a 4-D mask or position ids), or the model cannot take
them at all, the caller scores everything the plain way. Requests that need their context cut
(longer than the model's context) and contexts with a single choice are always scored the plain
way.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import weakref
from collections.abc import Callable, Sequence

import torch

from learnforget.measure.continuations import continuation_scores
from learnforget.measure.scoring_progress import batch_reporting, report_batch, reporting_within
from learnforget.measure.token_loglikelihoods import TokenPair

Scores = list[tuple[float, bool]]
PlainScorer = Callable[[Sequence[TokenPair]], Scores]

TOLERANCE = 1e-3  # nats: the shared and the plain path must agree on the probe request
# A forward pass costs about as much as this many more positions, whatever its size: on a CPU
# each pass repacks every weight matrix and runs the layers' Python (SmolLM2-135M, one thread:
# ~0.23 s a pass, ~7 ms a position); cutting the rows into batches trades padding against
# passes with it.
FORWARD_COST = 32

# A group whose members share a prefix: (prefix, [(context after the prefix, continuation)]).
Group = tuple[list[int], list[tuple[list[int], list[int]]]]


_FORWARD_PARAMETERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forward_parameters(model) -> frozenset[str]:
    """The argument names of the forward of ``model`` (of the model a PEFT wrapper holds), read
    once per model: scoring and decoding ask on every batch."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return _FORWARD_PARAMETERS[base]
    except (KeyError, TypeError):  # not seen yet, or not weak-referenceable
        names = frozenset(inspect.signature(base.forward).parameters)
    with contextlib.suppress(TypeError):
        _FORWARD_PARAMETERS[base] = names
    return names


def cache_argument_name(model) -> str:
    """The name the model's forward gives its key/value cache (transformers 5 renamed
    ``past_key_values`` to ``cache``)."""
    return "cache" if "cache" in forward_parameters(model) else "past_key_values"


def common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """The number of leading tokens all ``sequences`` share."""
    length = min(len(seq) for seq in sequences)
    for position in range(length):
        token = sequences[0][position]
        if any(seq[position] != token for seq in sequences[1:]):
            return position
    return length


def _own_tokens(rest: list[int], continuation: list[int]) -> list[int]:
    """The tokens a member adds to its group's row: the rest of its context and its
    continuation but the last token (the last is only predicted)."""
    return (rest + continuation)[:-1]


def _row_width(group: Group) -> int:
    prefix, members = group
    return len(prefix) + sum(len(_own_tokens(rest, cont)) for rest, cont in members)


def chunks_by_length(lengths: Sequence[int], budget: int,
                     forward_cost: int = FORWARD_COST) -> list[list[int]]:
    """Indices of ``lengths`` (sorted longest first) cut into consecutive batches of at most
    ``budget`` padded positions (rows × the batch's first length; a longer row goes alone),
    choosing the cut that costs least when a forward pass costs ``forward_cost`` positions plus
    one per padded position: an exact split by dynamic programming over the sorted rows."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n  # best[j]: the cost of rows [0, j)
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for begin in range(end - 1, -1, -1):
            padded = (end - begin) * lengths[begin]
            if padded > budget and end - begin > 1:
                break
            cost = best[begin] + forward_cost + padded
            if cost < best[end]:
                best[end], cut[end] = cost, begin
    chunks: list[list[int]] = []
    end = n
    while end > 0:
        chunks.append(list(range(cut[end], end)))
        end = cut[end]
    return chunks[::-1]


def _tree_batch(groups: list[Group], dtype: torch.dtype):
    """Right-padded rows of prefix + members' own tokens → (ids, position ids, additive 4-D
    mask, per member the row positions whose logits predict its continuation)."""
    width = max(_row_width(group) for group in groups)
    ids = torch.zeros((len(groups), width), dtype=torch.long)
    positions = torch.zeros((len(groups), width), dtype=torch.long)
    allowed = torch.ones((len(groups), width, width), dtype=torch.bool).tril()
    predicting: list[list[list[int]]] = []
    for row, (prefix, members) in enumerate(groups):
        ids[row, : len(prefix)] = torch.tensor(prefix)
        positions[row, : len(prefix)] = torch.arange(len(prefix))
        start = len(prefix)
        mine = []
        for rest, cont in members:
            own = _own_tokens(rest, cont)
            end = start + len(own)
            ids[row, start:end] = torch.tensor(own, dtype=torch.long)
            positions[row, start:end] = torch.arange(len(prefix), len(prefix) + len(own))
            allowed[row, start:end, len(prefix):start] = False  # not the other members
            # cont[0] follows the prefix or the member's rest; cont[j] follows cont[j − 1]
            first = start + len(rest) - 1 if rest else len(prefix) - 1
            mine.append([first] + list(range(start + len(rest), start + len(rest)
                                             + len(cont) - 1)))
            start = end
        allowed[row, start:, len(prefix):start] = False  # padding: the prefix and itself
        predicting.append(mine)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return ids, positions, mask[:, None], predicting


def _score_batch(model, groups: list[Group], device: torch.device) -> list[Scores]:
    """Scores of every member of ``groups``: one forward pass, one row per group."""
    dtype = model.get_input_embeddings().weight.dtype
    ids, positions, mask, predicting = _tree_batch(groups, dtype)
    # logits only from the first position any member reads onwards (the heads of long prefixes
    # are not needed)
    first_needed = min(p for rows in predicting for member in rows for p in member[:1])
    keep = ids.shape[1] - first_needed
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device),
              "position_ids": positions.to(device)}
    try:
        logits = model(**inputs, logits_to_keep=keep).logits
    except TypeError:  # a model without logits_to_keep
        logits = model(**inputs).logits[:, first_needed:]
    requests = [(row, [p - first_needed for p in where], cont)
                for row, (_, members) in enumerate(groups)
                for (_, cont), where in zip(members, predicting[row], strict=True)]
    flat = iter(continuation_scores(logits, requests))
    return [[next(flat) for _ in members] for _, members in groups]


def _cut(pair: TokenPair, max_length: float) -> bool:
    """Whether the request has to lose context tokens to fit the model (then it and its group
    are scored the plain way, one sequence each, as lm-eval does)."""
    return len(pair[0]) + len(pair[1]) > max_length + 1


def positions_fed(pairs: Sequence[TokenPair], groups: Sequence[Sequence[int]],
                  max_length: float = math.inf) -> tuple[int, int]:
    """The token positions the plain path (one sequence per request, as lm-eval) and the
    grouped path (each group's shared prefix once) feed the model, padding aside: their ratio
    bounds what sharing can gain. A request longer than ``max_length + 1`` tokens is cut from
    the left on both paths, and its group is scored the plain way (``shared_context_scores``)."""
    def alone(i: int) -> int:
        return int(min(len(pairs[i][0]) + len(pairs[i][1]), max_length + 1)) - 1

    plain = sum(alone(i) for i in range(len(pairs)))
    grouped = 0
    for members in groups:
        if len(members) < 2 or any(_cut(pairs[i], max_length) for i in members):
            grouped += sum(alone(i) for i in members)
            continue
        prefix = common_prefix([pairs[i][0] for i in members])
        grouped += prefix + sum(len(pairs[i][0]) - prefix + len(pairs[i][1]) - 1
                                for i in members)
    return plain, grouped


def shared_context_scores(model, pairs: Sequence[TokenPair], batch_size: int, max_length: int,
                          plain: PlainScorer, device: torch.device,
                          groups: Sequence[Sequence[int]] | None = None) -> Scores:
    """(log-likelihood, is greedy) of each pair, in order. ``groups`` (indices into ``pairs``;
    by default the pairs of identical context) share the prefix their contexts have in common:
    it is run once per group. A batch holds as many positions as ``batch_size`` of the longest
    requests would. Pairs in no group of two or more, pairs that would need their context cut,
    and all pairs when the model fails the probe are scored by ``plain``."""
    if groups is None:
        by_context: dict[tuple[int, ...], list[int]] = {}
        for i, (context, _) in enumerate(pairs):
            by_context.setdefault(tuple(context), []).append(i)
        groups = list(by_context.values())
    shared: list[tuple[Group, list[int]]] = []  # (the group's row, its members' indices)
    for members in groups:
        if len(members) < 2 or any(_cut(pairs[i], max_length) for i in members):
            continue
        prefix = common_prefix([pairs[i][0] for i in members])
        if prefix > 0:
            row = (pairs[members[0]][0][:prefix],
                   [(pairs[i][0][prefix:], pairs[i][1]) for i in members])
            shared.append((row, list(members)))
    results: list[tuple[float, bool] | None] = [None] * len(pairs)
    by_width = sorted(((_row_width(row), row, members) for row, members in shared),
                      key=lambda entry: -entry[0])
    shared = [(row, members) for _, row, members in by_width]
    longest = max((len(pairs[i][0]) + len(pairs[i][1]) for _, members in shared
                   for i in members), default=0)
    batches = chunks_by_length([width for width, _, _ in by_width], batch_size * longest)
    for number, batch in enumerate(batches):
        entries = [shared[i] for i in batch]
        if number == 0:
            try:
                scores = _score_batch(model, [row for row, _ in entries], device)
            except (TypeError, ValueError, AttributeError, NotImplementedError, RuntimeError):
                return plain(pairs)  # the model cannot take a 4-D mask and position ids
            if not _passes_probe(pairs, entries, scores, plain):
                return plain(pairs)
        else:
            scores = _score_batch(model, [row for row, _ in entries], device)
        for (_, members), group_scores in zip(entries, scores, strict=True):
            for i, score in zip(members, group_scores, strict=True):
                results[i] = score
        report_batch(sum(r is not None for r in results), len(pairs))
    rest = [i for i, r in enumerate(results) if r is None]
    with reporting_within(len(pairs) - len(rest), len(pairs)):
        scores = plain([pairs[i] for i in rest]) if rest else []
    for i, score in zip(rest, scores, strict=True):
        results[i] = score
    return [r for r in results if r is not None]


def _passes_probe(pairs: Sequence[TokenPair], entries: list[tuple[Group, list[int]]],
                  scores: list[Scores], plain: PlainScorer) -> bool:
    """Whether one request of the batch scores the same the plain way: the last request with
    tokens of its own in its row (it sits after other members, so it depends on both the mask
    and the position ids), from a row with two such requests where there is one, the shortest
    such request otherwise."""
    candidates = []
    for ((_, own), members), group_scores in zip(entries, scores, strict=True):
        with_tokens = [(i, score) for (rest, cont), i, score
                       in zip(own, members, group_scores, strict=True) if _own_tokens(rest, cont)]
        if with_tokens:
            i, score = with_tokens[-1]
            candidates.append((-min(len(with_tokens), 2), len(pairs[i][0]) + len(pairs[i][1]),
                               i, score))
    if not candidates:
        return True  # every request is read off its prefix's last position
    *_, probe, score = min(candidates, key=lambda found: found[:2])
    with batch_reporting(None):  # the probe is not progress
        [reference] = plain([pairs[probe]])
    return abs(score[0] - reference[0]) <= TOLERANCE
