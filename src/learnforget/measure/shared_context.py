"""Multiple-choice log-likelihoods with each context run once for all of its choices.

lm-eval scores every (context, choice) request as a sequence of its own, so a four-way
HellaSwag item costs four passes over the same context. Here a context goes through the model
once; its key/value cache is copied to one row per choice, and only the choices' tokens run on
top of it. For the built-in cloze (1–3 verse contexts, one-verse choices) that halves the tokens
the model sees; for HellaSwag and ARC it saves most of the context's cost. lm-eval has no such
path (its ``HFLM`` re-runs the context per request), hence this module.

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


def _cache_argument(model) -> str:
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


def _score_batch(model, groups: list[tuple[list[int], list[list[int]]]], device: torch.device,
                 cache_argument: str) -> list[Scores]:
    """Scores of every choice of ``groups`` [(context, [continuation, …])], one batch."""
    first_logp, cache, context_mask = _context_pass(model, [c for c, _ in groups], device)
    rows = [(g, cont) for g, (_, conts) in enumerate(groups) for cont in conts]
    width = max(len(cont) for _, cont in rows) - 1
    rest_logp = None
    if width > 0:  # the choices' tokens after their first, on top of the copied cache
        index = torch.tensor([g for g, _ in rows])
        cache.batch_select_indices(index.to(device))
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (_, cont) in enumerate(rows):
            ids[row, : len(cont) - 1] = torch.tensor(cont[:-1])
            mask[row, : len(cont) - 1] = 1
        lengths = context_mask.sum(-1)[index]
        positions = lengths[:, None] + torch.arange(width)[None, :]
        out = model(input_ids=ids.to(device),
                    attention_mask=torch.cat([context_mask[index], mask], dim=1).to(device),
                    position_ids=positions.to(device), use_cache=True,
                    **{cache_argument: cache})
        rest_logp = out.logits.float().log_softmax(-1)
    scores: list[Scores] = [[] for _ in groups]
    for row, (g, cont) in enumerate(rows):
        first = first_logp[g]
        log_likelihood = float(first[cont[0]])
        greedy = int(first.argmax()) == cont[0]
        if len(cont) > 1:
            logp = rest_logp[row, : len(cont) - 1]
            target = torch.tensor(cont[1:], device=logp.device)
            log_likelihood += float(logp.gather(-1, target[:, None]).sum())
            greedy = greedy and bool((logp.argmax(-1) == target).all())
        scores[g].append((log_likelihood, greedy))
    return scores


def shared_context_scores(model, pairs: Sequence[TokenPair], batch_size: int, max_length: int,
                          plain: PlainScorer, device: torch.device) -> Scores:
    """(log-likelihood, is greedy) of each pair, in order: pairs sharing a context are scored
    with one pass over it; the rest, or all when the model fails the probe, by ``plain``."""
    by_context: dict[tuple[int, ...], list[int]] = {}
    for i, (context, _) in enumerate(pairs):
        by_context.setdefault(tuple(context), []).append(i)
    shared = [
        (context, members) for context, members in by_context.items()
        if len(members) > 1
        and all(len(context) + len(pairs[i][1]) <= max_length + 1 for i in members)
    ]
    results: list[tuple[float, bool] | None] = [None] * len(pairs)
    # batches pad the choices to their longest, and the choices cost most: group by that
    shared.sort(key=lambda group: (-max(len(pairs[i][1]) for i in group[1]), -len(group[0])))
    batches: list[list[tuple[tuple[int, ...], list[int]]]] = []
    for group in shared:
        if batches and sum(len(m) for _, m in batches[-1]) + len(group[1]) <= batch_size:
            batches[-1].append(group)
        else:
            batches.append([group])
    cache_argument = _cache_argument(model)
    for number, batch in enumerate(batches):
        groups = [(list(context), [pairs[i][1] for i in members]) for context, members in batch]
        if number == 0:
            try:
                scores = _score_batch(model, groups, device, cache_argument)
            except (TypeError, ValueError, AttributeError, NotImplementedError, RuntimeError):
                return plain(pairs)  # the model cannot take a cache and position ids
            members = batch[0][1]
            with batch_reporting(None):  # the probe is not progress
                reference = plain([pairs[i] for i in members])
            if any(abs(ours[0] - theirs[0]) > TOLERANCE
                   for ours, theirs in zip(scores[0], reference, strict=True)):
                return plain(pairs)
        else:
            scores = _score_batch(model, groups, device, cache_argument)
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
