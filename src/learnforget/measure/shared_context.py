"""Multiple-choice log-likelihoods with the text an item's requests share run once.

lm-eval scores every (context, choice) request as a sequence of its own, so a four-way
HellaSwag item costs four passes over the same context. Here the requests of one item form a
group; the token prefix their contexts share goes through the model once, its key/value cache is
copied to one row per request, and only each request's own tokens run on top of it. For
HellaSwag, ARC and the built-in cloze the shared prefix is the whole context; for WinoGrande
(each option fills the blank and forms its own context) it is the sentence up to the blank. lm-eval
has no such path (its ``HFLM`` re-runs the context per request), hence this module.

The numbers are lm-eval's, up to float rounding: the first batch is also scored the plain way
and, if the two disagree by more than ``TOLERANCE`` nats (a model whose cache or position ids
do not behave like a Llama's), or the model cannot take a cache and position ids at all, the
caller scores everything the plain way. Requests that need their context cut (longer than the
model's context) and contexts with a single choice are always scored the plain way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch

from learnforget.measure.progress import batch_reporting, report_batch, reporting_within

TokenPair = tuple[list[int], list[int]]
Scores = list[tuple[float, bool]]
PlainScorer = Callable[[Sequence[TokenPair]], Scores]

TOLERANCE = 1e-3  # nats: the shared and the plain path must agree on the probe batch


def cache_argument_name(model) -> str:
    """The name the model's forward gives its key/value cache (transformers 5 renamed
    ``past_key_values`` to ``cache``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _context_pass(model, contexts: list[list[int]], device: torch.device):
    """Left-padded contexts → (log-probs of the token after each context, cache, mask)."""
    width = max(len(c) for c in contexts)
    ids = torch.zeros((len(contexts), width), dtype=torch.long)
    mask = torch.zeros((len(contexts), width), dtype=torch.long)
    for row, context in enumerate(contexts):
        ids[row, width - len(context):] = torch.tensor(context)
        mask[row, width - len(context):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device),
              "position_ids": positions.to(device), "use_cache": True}
    try:  # only the last position's logits are needed
        out = model(**inputs, logits_to_keep=1)
    except TypeError:  # a model without logits_to_keep
        out = model(**inputs)
    cache = out.get("cache", None) or out.get("past_key_values", None)
    if cache is None:
        raise NotImplementedError("the model returned no key/value cache")
    return out.logits[:, -1].float().log_softmax(-1), cache, mask


def _common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """The number of leading tokens all ``sequences`` share."""
    length = min(len(seq) for seq in sequences)
    for position in range(length):
        token = sequences[0][position]
        if any(seq[position] != token for seq in sequences[1:]):
            return position
    return length


# A group whose members share a prefix: (prefix, [(context after the prefix, continuation)]).
Group = tuple[list[int], list[tuple[list[int], list[int]]]]


def _score_batch(model, groups: list[Group], device: torch.device,
                 cache_argument: str) -> list[Scores]:
    """Scores of every member of ``groups``, one batch: each prefix goes through the model once;
    its cache is copied to one row per member, which runs the rest of its context and its
    continuation (but the last token) on top of it."""
    first_logp, cache, prefix_mask = _context_pass(model, [prefix for prefix, _ in groups],
                                                   device)
    rows = [(g, rest, cont) for g, (_, members) in enumerate(groups) for rest, cont in members]
    width = max(len(rest) + len(cont) for _, rest, cont in rows) - 1
    rest_logits = None
    if width > 0:  # the members' own tokens, on top of the copied cache
        index = torch.tensor([g for g, _, _ in rows])
        cache.batch_select_indices(index.to(device))
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (_, rest, cont) in enumerate(rows):
            tokens = (rest + cont)[:-1]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        lengths = prefix_mask.sum(-1)[index]
        positions = lengths[:, None] + torch.arange(width)[None, :]
        out = model(input_ids=ids.to(device),
                    attention_mask=torch.cat([prefix_mask[index], mask], dim=1).to(device),
                    position_ids=positions.to(device), use_cache=True,
                    **{cache_argument: cache})
        rest_logits = out.logits
    scores: list[Scores] = [[] for _ in groups]
    for row, (g, rest, cont) in enumerate(rows):
        # continuation token j is predicted at position len(rest) − 1 + j of the row (−1: the
        # prefix's last position)
        first = first_logp[g] if not rest else None
        start = len(rest) - 1 if rest else 0
        pieces = [] if rest else [first[cont[0]]]
        greedy = True if rest else int(first.argmax()) == cont[0]
        targets = cont if rest else cont[1:]
        if targets:
            logp = rest_logits[row, start : start + len(targets)].float().log_softmax(-1)
            target = torch.tensor(targets, device=logp.device)
            pieces.append(logp.gather(-1, target[:, None]).sum())
            greedy = greedy and bool((logp.argmax(-1) == target).all())
        scores[g].append((float(sum(float(piece) for piece in pieces)), greedy))
    return scores


def shared_context_scores(model, pairs: Sequence[TokenPair], batch_size: int, max_length: int,
                          plain: PlainScorer, device: torch.device,
                          groups: Sequence[Sequence[int]] | None = None) -> Scores:
    """(log-likelihood, is greedy) of each pair, in order. ``groups`` (indices into ``pairs``;
    by default the pairs of identical context) share the prefix their contexts have in common:
    it is run once per group. Pairs in no group of two or more, pairs that would need their
    context cut, and all pairs when the model fails the probe are scored by ``plain``."""
    if groups is None:
        by_context: dict[tuple[int, ...], list[int]] = {}
        for i, (context, _) in enumerate(pairs):
            by_context.setdefault(tuple(context), []).append(i)
        groups = list(by_context.values())
    shared: list[tuple[int, list[int]]] = []  # (prefix length, members)
    for members in groups:
        if len(members) < 2 or any(len(pairs[i][0]) + len(pairs[i][1]) > max_length + 1
                                   for i in members):
            continue
        prefix = _common_prefix([pairs[i][0] for i in members])
        if prefix > 0:
            shared.append((prefix, list(members)))
    results: list[tuple[float, bool] | None] = [None] * len(pairs)

    def rest_width(group: tuple[int, list[int]]) -> int:
        prefix, members = group
        return max(len(pairs[i][0]) - prefix + len(pairs[i][1]) for i in members)

    # batches pad the members' own tokens to their longest, and those cost most: group by that
    shared.sort(key=lambda group: (-rest_width(group), -group[0]))
    batches: list[list[tuple[int, list[int]]]] = []
    for group in shared:
        if batches and sum(len(m) for _, m in batches[-1]) + len(group[1]) <= batch_size:
            batches[-1].append(group)
        else:
            batches.append([group])
    cache_argument = cache_argument_name(model)
    for number, batch in enumerate(batches):
        groups_in = [(pairs[members[0]][0][:prefix],
                      [(pairs[i][0][prefix:], pairs[i][1]) for i in members])
                     for prefix, members in batch]
        if number == 0:
            try:
                scores = _score_batch(model, groups_in, device, cache_argument)
            except (TypeError, ValueError, AttributeError, NotImplementedError, RuntimeError):
                return plain(pairs)  # the model cannot take a cache and position ids
            members = batch[0][1]
            with batch_reporting(None):  # the probe is not progress
                reference = plain([pairs[i] for i in members])
            if any(abs(ours[0] - theirs[0]) > TOLERANCE
                   for ours, theirs in zip(scores[0], reference, strict=True)):
                return plain(pairs)
        else:
            scores = _score_batch(model, groups_in, device, cache_argument)
        for (_, members), group_scores in zip(batch, scores, strict=True):
            for i, score in zip(members, group_scores, strict=True):
                results[i] = score
        report_batch(sum(r is not None for r in results), len(pairs))
    rest = [i for i, r in enumerate(results) if r is None]
    with reporting_within(len(pairs) - len(rest), len(pairs)):
        scores = plain([pairs[i] for i in rest]) if rest else []
    for i, score in zip(rest, scores, strict=True):
        results[i] = score
    return [r for r in results if r is not None]
