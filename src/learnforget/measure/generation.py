"""Generation: completions of prompts, greedy or sampled (seeded), cut at stop strings, as
lm-eval's ``generate_until`` produces them. Batches are left padded with an attention mask;
greedy decoding of a ``transformers`` model runs through ``greedy`` (finished sequences leave
the batch), sampling and other models through ``model.generate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from learnforget.errors import UserError
from learnforget.measure.greedy import greedy_tokens
from learnforget.measure.greedy import supports as greedy_supports
from learnforget.measure.inference import (
    check_batch_size,
    context_length,
    evaluating,
    model_device,
    start_token_id,
)
from learnforget.measure.scoring_progress import report_batch


class _StopOnText(StoppingCriteria):
    """Marks a sequence finished once its decoded continuation contains a stop string.

    Written here rather than using ``generate(stop_strings=...)`` because matching the decoded
    text is exact for any vocabulary (byte-level pieces included), which token-level matching of
    stop strings does not guarantee.
    """

    def __init__(self, tokenizer, stop: Sequence[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_width :], skip_special_tokens=True
        )
        done = [any(stop in text for stop in self.stop) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    cut = min((text.find(s) for s in stop if s and s in text), default=len(text))
    return text[:cut]


def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    stop: Sequence[str] = (),
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    batch_size: int = 8,
    seed: int = 0,
) -> list[list[str]]:
    """Completions of each prompt: one list per prompt with ``num_return_sequences`` strings,
    the decoded continuation only, cut before the first stop string.

    Greedy by default; ``do_sample`` samples with ``temperature`` and nucleus ``top_p`` (no top-k,
    no repetition penalty, whatever the model's own generation config says). Sampling is seeded:
    the same prompts, batch size and seed give the same completions; the global RNG state is
    left untouched. Prompts are encoded with the tokenizer's own special tokens (e.g. its BOS)
    and cut from the left to leave room for ``max_new_tokens``; an empty prompt is the start
    token (BOS, else EOS). Generation of a sequence ends at EOS, at a stop string or after
    ``max_new_tokens``; greedy decoding of a ``transformers`` model drops a finished sequence
    from the batch (``greedy``), sampling and other models go through ``model.generate``.
    """
    check_batch_size(batch_size)
    if max_new_tokens < 1 or num_return_sequences < 1:
        raise UserError("max_new_tokens and num_return_sequences must be at least 1.")
    if do_sample and (temperature <= 0 or not 0 < top_p <= 1):
        raise UserError(
            f"sampling needs temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}; "
            "use do_sample=False for greedy decoding."
        )
    prompt_room = context_length(model, tokenizer) - max_new_tokens
    if prompt_room < 1:
        raise UserError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context."
        )
    start = start_token_id(tokenizer)
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    encoded = []
    for prompt in prompts:
        ids = list(tokenizer(prompt)["input_ids"]) or ([start] if start is not None else [])
        if not ids:
            raise UserError(
                "an empty prompt, and the tokenizer has no BOS/EOS token to start from."
            )
        encoded.append(ids[-prompt_room:])
    # Greedy decoding gives one answer per prompt: compute it once and repeat it.
    samples_per_call = num_return_sequences if do_sample else 1
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        num_return_sequences=samples_per_call,
        pad_token_id=pad_id,
        eos_token_id=tokenizer.eos_token_id,
        repetition_penalty=1.0,
        **({"temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample else {}),
    )
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    completions: list[list[str]] = [[] for _ in prompts]
    pruned = not do_sample and greedy_supports(model)

    def finished(tokens: Sequence[int]) -> bool:
        if not stop:
            return False
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        return any(s in text for s in stop)

    device = model_device(model)
    rng_devices = [device] if device.type != "cpu" else []
    with (
        evaluating(model),
        torch.random.fork_rng(devices=rng_devices, device_type=device.type),
    ):
        torch.manual_seed(seed)
        for first in range(0, len(order), batch_size):
            indices = order[first : first + batch_size]
            width = max(len(encoded[i]) for i in indices)
            input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
            for row, i in enumerate(indices):  # left padding
                input_ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                attention_mask[row, width - len(encoded[i]) :] = 1
            if pruned:  # greedy, each sequence leaving the batch when it is done
                new_rows = greedy_tokens(model, input_ids.to(device), attention_mask.to(device),
                                         max_new_tokens, tokenizer.eos_token_id, finished)
            else:
                stopping = (StoppingCriteriaList([_StopOnText(tokenizer, stop, width)])
                            if stop else None)
                output = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    generation_config=config,
                    stopping_criteria=stopping,
                )
                new_rows = output[:, width:].tolist()
            for row, new_tokens in enumerate(new_rows):
                if tokenizer.eos_token_id in new_tokens:
                    new_tokens = new_tokens[: new_tokens.index(tokenizer.eos_token_id)]
                text = tokenizer.decode(new_tokens, skip_special_tokens=True)
                completions[indices[row // samples_per_call]].append(_truncate_at_stop(text, stop))
            report_batch(first + len(indices), len(order))
    if not do_sample:
        completions = [texts * num_return_sequences for texts in completions]
    return completions
