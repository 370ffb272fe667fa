"""Greedy decoding of a batch that drops each sequence from the batch once it has finished.

``transformers``' ``generate`` keeps every sequence of a batch in every forward pass until the
last one stops, feeding pad tokens to those already done; so does lm-eval's ``generate_until``,
which calls it. On GSM8K or HumanEval, where one completion stops after 40 tokens and another
runs to the limit, most of that work is wasted. Here a finished sequence (EOS, a stop string, or
the length limit) leaves the batch, and its rows leave the key/value cache
(``batch_select_indices``), so each step runs only the sequences still going. The tokens are the
ones ``generate`` picks: the argmax of the same logits, with the position ids it derives from the
attention mask (``cumsum − 1``). No library offers this for a plain model (continuous batching
belongs to serving engines), hence this module.

Prompts of a batch that share a long token prefix (a few-shot preamble) run it once
(``_prompt_pass``): prefix caching, as serving engines do, for one batch.

It serves ``generation.generate``'s greedy path for ``transformers`` models (``supports``); other
models, and sampling, go through ``generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from learnforget.measure.shared_context import (
    cache_argument_name,
    common_prefix,
    forward_parameters,
)

MIN_SHARED_PREFIX = 16  # tokens the prompts of a batch must share to run them once


def _base_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports(model) -> bool:
    """Whether ``model`` is a ``transformers`` model whose forward takes position ids and a
    key/value cache (what the loop feeds it)."""
    from transformers import PreTrainedModel

    base = _base_model(model)
    if not isinstance(base, PreTrainedModel):
        return False
    parameters = forward_parameters(base)
    return "position_ids" in parameters and (
        "past_key_values" in parameters or "cache" in parameters)


def _takes_logits_to_keep(model) -> bool:
    return "logits_to_keep" in forward_parameters(model)


def _cache_of(out):
    return out.get("cache", None) or out.get("past_key_values", None)


def _prompt_pass(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 cache_argument: str):
    """The prompts' forward pass → (output, cache, attention mask, position ids). Only each
    row's last logits are computed (as ``generate`` asks too). When the rows share a token
    prefix of ``MIN_SHARED_PREFIX`` or more (a few-shot preamble: GSM8K's eight worked
    examples), the prefix runs once, its cache is repeated for every row, and each row's own
    tokens follow it, left-padded: ``[prefix | padding | own tokens]``, the padding masked and
    the positions those of the unpadded prompt."""
    keep = {"logits_to_keep": 1} if _takes_logits_to_keep(model) else {}
    rows = input_ids.shape[0]
    prompts = [row[row_mask.bool()].tolist() for row, row_mask in zip(input_ids, attention_mask,
                                                                      strict=True)]
    shared = min(common_prefix(prompts), min(len(p) for p in prompts) - 1) if rows > 1 else 0
    if shared < MIN_SHARED_PREFIX:
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                    use_cache=True, **keep)
        return out, _cache_of(out), attention_mask, positions
    device = input_ids.device
    prefix = torch.tensor([prompts[0][:shared]], device=device)
    cache = _cache_of(model(input_ids=prefix, use_cache=True, **keep))
    cache.batch_repeat_interleave(rows)
    width = max(len(p) - shared for p in prompts)
    ids = input_ids.new_zeros((rows, width))
    own_mask = attention_mask.new_zeros((rows, width))
    for row, prompt in enumerate(prompts):
        own = prompt[shared:]
        ids[row, width - len(own):] = torch.tensor(own, device=device)
        own_mask[row, width - len(own):] = 1
    positions = shared + (own_mask.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([own_mask.new_ones((rows, shared)), own_mask], dim=1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                **{cache_argument: cache}, **keep)
    return out, _cache_of(out), mask, positions


def greedy_tokens(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  max_new_tokens: int, eos_token_id: int | None,
                  finished: Callable[[Sequence[int]], bool]) -> list[list[int]]:
    """The new tokens of each left-padded row of ``input_ids``, decoded greedily until EOS (kept
    as the last token), until ``finished(tokens so far)`` says a stop string has appeared, or
    for ``max_new_tokens`` tokens."""
    cache_argument = cache_argument_name(model)
    rows = input_ids.shape[0]
    generated: list[list[int]] = [[] for _ in range(rows)]
    alive = list(range(rows))
    out, cache, mask, positions = _prompt_pass(model, input_ids, attention_mask, cache_argument)
    last_position = positions[:, -1]
    for step in range(max_new_tokens):
        tokens = out.logits[:, -1].argmax(-1)
        keep = []
        for index, (row, token) in enumerate(zip(alive, tokens.tolist(), strict=True)):
            generated[row].append(token)
            if token != eos_token_id and not finished(generated[row]):
                keep.append(index)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(alive):
            select = torch.tensor(keep, device=tokens.device)
            cache.batch_select_indices(select)
            tokens, mask, last_position = tokens[select], mask[select], last_position[select]
            alive = [alive[i] for i in keep]
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
        last_position = last_position + 1
        out = model(input_ids=tokens[:, None], attention_mask=mask,
                    position_ids=last_position[:, None], use_cache=True,
                    **{cache_argument: cache})
    return generated
