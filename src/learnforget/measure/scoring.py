"""The scoring primitives every evaluation task uses: bits per byte, multiple-choice
log-likelihoods (acc / acc_norm, as lm-evaluation-harness computes them) and generation.

All functions take a Hugging Face causal LM (a ``PreTrainedModel``, possibly wrapped in a
``peft.PeftModel``) and its tokenizer, work in batches on the model's device under
``torch.inference_mode()``, put the model in eval mode and restore every module's previous
training mode afterwards.

Context length. The model's context is read from its config (``n_positions``,
``max_position_embeddings`` or ``n_ctx``, in that order, as lm-eval does), else the tokenizer's
``model_max_length``, else 2048. Inputs longer than the context lose tokens from the LEFT of the
conditioning context, as in lm-eval; the tokens being scored (or generated) are never dropped:
scoring a continuation longer than the context is an error, and bits per byte scores long texts
in rolling windows (see ``bits_per_byte_items``).

Likelihood batches are right padded (pad positions come after every scored position, so with a
causal model they cannot change them; an attention mask is passed anyway); generation batches are
left padded with an attention mask. Padding is done here on token-id lists, not by the tokenizer,
so the caller's tokenizer (its ``padding_side`` and ``pad_token``) is never modified.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from learnforget.data.items import ChoiceItem, TextItem
from learnforget.errors import UserError
from learnforget.measure.continuations import continuation_scores
from learnforget.measure.greedy import greedy_tokens
from learnforget.measure.greedy import supports as greedy_supports
from learnforget.measure.scoring_progress import report_batch
from learnforget.measure.uncertainty import BITS, BYTES, ItemValues, mean_with_stderr, ratio_stderr

_CONTEXT_LENGTH_ATTRIBUTES = ("n_positions", "max_position_embeddings", "n_ctx")
_DEFAULT_CONTEXT_LENGTH = 2048  # lm-eval's fallback when nothing states a context length
_TOKENIZER_UNBOUNDED = 10**12  # tokenizers report a huge model_max_length when it is unset

# A scoring request in token ids: (context, continuation); the continuation is scored.
TokenPair = tuple[list[int], list[int]]


# --- shared helpers ------------------------------------------------------------------------------


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


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _evaluating(model) -> Iterator[torch.device]:
    """Eval mode plus ``inference_mode`` for the duration; every module's previous training flag
    is restored afterwards (not just the root's: some may have been frozen in eval mode)."""
    training_flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.inference_mode():
            yield _model_device(model)
    finally:
        for module, training in training_flags.items():
            module.training = training


def _encode_plain(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}.")


def _score_token_pairs(
    model, pairs: Sequence[TokenPair], batch_size: int, max_length: int
) -> list[tuple[float, bool]]:
    """Log-likelihood of each continuation given its context, and whether it is the greedy
    continuation: lm-eval's ``HFLM._loglikelihood_tokens`` for a causal LM.

    The model sees ``(context + continuation)[-(max_length + 1):][:-1]`` (the context is cut from
    the left when too long). Requests are sorted longest first so a batch pads little; results
    come back in the order of ``pairs``.
    """
    _check_batch_size(batch_size)
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
    with _evaluating(model) as device:
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


# --- bits per byte -------------------------------------------------------------------------------


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
        context = ([start] if start is not None else []) + _encode_plain(tokenizer, item.prefix)
        sequence = context + _encode_plain(tokenizer, item.text)
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
        owners, _score_token_pairs(model, pairs, batch_size, max_length), strict=True
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


# --- multiple choice (lm-eval's loglikelihood requests) ------------------------------------------


def _lm_eval_encode(tokenizer, text: str, prefix_token: int | None) -> list[int]:
    """lm-eval's ``HFLM.tok_encode``: the tokenizer's own special tokens (e.g. a BOS it adds),
    except when the text already starts with the prefix token's text."""
    prefix_text = tokenizer.decode(prefix_token) if prefix_token is not None else None
    if prefix_text and text.startswith(prefix_text):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


def _lm_eval_encode_pair(tokenizer, context: str, continuation: str) -> TokenPair:
    """Token ids of a (context, continuation) request exactly as lm-eval's ``loglikelihood``
    builds them for a causal LM (``LM.loglikelihood`` and ``LM._encode_pair``)."""
    prefix_token = start_token_id(tokenizer)
    if context == "":
        continuation_ids = _encode_plain(tokenizer, continuation)
        if not continuation_ids:
            raise UserError("a choice with an empty context and an empty continuation.")
        if prefix_token is None:
            raise UserError(
                "an empty context needs a BOS or EOS token to condition on; the tokenizer has "
                "neither: set tokenizer.eos_token."
            )
        if prefix_token != continuation_ids[0]:
            return [prefix_token], continuation_ids
        return continuation_ids[:1], continuation_ids[1:]
    # Trailing whitespace of the context moves to the continuation: word-boundary tokens then
    # carry their leading space, as they did in training.
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _lm_eval_encode(tokenizer, context + continuation, prefix_token)
    context_ids = _lm_eval_encode(tokenizer, context, prefix_token)
    return context_ids, whole[len(context_ids) :]


def encode_requests(tokenizer, requests: Sequence[tuple[str, str]]) -> list[TokenPair]:
    """The (context, continuation) token ids of each request, as lm-eval builds them; a
    ``UserError`` for a continuation that encodes to no tokens of its own."""
    pairs: list[TokenPair] = []
    for context, continuation in requests:
        context_ids, continuation_ids = _lm_eval_encode_pair(tokenizer, context, continuation)
        if not context_ids or not continuation_ids:
            raise UserError(
                f"choice {continuation!r} after context {context[-40:]!r} encodes to no "
                "tokens of its own; make every choice non-empty."
            )
        pairs.append((context_ids, continuation_ids))
    return pairs


def request_loglikelihoods(
    model, tokenizer, requests: Sequence[tuple[str, str]],
    groups: Sequence[Sequence[int]] | None = None, batch_size: int = 16,
) -> list[tuple[float, bool]]:
    """For each (context, continuation) request: (log-likelihood of the continuation given the
    context, whether it is the greedy continuation), exactly as lm-eval-harness computes
    ``loglikelihood`` requests. Contexts too long for the model are cut from the left. The
    requests of one of ``groups`` (indices; by default those of identical context) run the
    token prefix their contexts share once (``shared_context``)."""
    max_length = context_length(model, tokenizer)
    pairs = encode_requests(tokenizer, requests)
    from learnforget.measure.shared_context import shared_context_scores

    def plain(subset: Sequence[TokenPair]) -> list[tuple[float, bool]]:
        return _score_token_pairs(model, subset, batch_size, max_length)

    _check_batch_size(batch_size)
    with _evaluating(model) as device:
        return shared_context_scores(model, pairs, batch_size, max_length, plain, device, groups)


def grouped_requests(per_item: Sequence[Sequence[tuple[str, str]]]
                     ) -> tuple[list[tuple[str, str]], list[list[int]]]:
    """Every item's (context, continuation) requests in one flat list, and each item's indices
    into it (the groups ``request_loglikelihoods`` shares prefixes within)."""
    requests: list[tuple[str, str]] = []
    groups: list[list[int]] = []
    for mine in per_item:
        groups.append(list(range(len(requests), len(requests) + len(mine))))
        requests.extend(mine)
    return requests, groups


def choice_loglikelihoods(
    model, tokenizer, items: list[ChoiceItem], batch_size: int = 16
) -> list[list[tuple[float, bool]]]:
    """For each item and choice: (log-likelihood of the choice given the context, whether it is
    the greedy continuation), exactly as lm-eval-harness computes ``loglikelihood`` requests
    ``(context, choice)``. The choice string is the continuation as is (include its leading
    space, if any). Contexts too long for the model are cut from the left. An item's choices
    are scored on one pass over its context (``shared_context``)."""
    requests, groups = grouped_requests(
        [[(item.context, choice) for choice in item.continuations()] for item in items])
    flat = iter(request_loglikelihoods(model, tokenizer, requests, groups, batch_size))
    return [[next(flat) for _ in item.choices] for item in items]


def choice_predictions(
    items: list[ChoiceItem], loglikelihoods: list[list[tuple[float, bool]]]
) -> list[tuple[int, int]]:
    """Per item, (argmax of log-likelihood, argmax of log-likelihood / len(choice) in
    characters, the target delimiter not counted): the predictions behind lm-eval's acc and
    acc_norm. Ties go to the first choice, as with ``numpy.argmax``."""
    predictions = []
    for item, scores in zip(items, loglikelihoods, strict=True):
        if any(len(choice) == 0 for choice in item.choices):
            raise UserError(f"an empty choice in {item.choices!r}; acc_norm divides by length.")
        lls = [ll for ll, _ in scores]
        normalized = [ll / len(choice) for ll, choice in zip(lls, item.choices, strict=True)]
        predictions.append((lls.index(max(lls)), normalized.index(max(normalized))))
    return predictions


def choice_correct(
    items: list[ChoiceItem], loglikelihoods: list[list[tuple[float, bool]]]
) -> ItemValues:
    """``{"acc": [...], "acc_norm": [...]}``: 1.0 for each item whose prediction (see
    ``choice_predictions``) is the item's ``label``, else 0.0."""
    if not items:
        raise UserError("multiple-choice scoring needs at least one item.")
    predictions = choice_predictions(items, loglikelihoods)
    pairs = list(zip(predictions, items, strict=True))
    return {"acc": [float(p == item.label) for (p, _), item in pairs],
            "acc_norm": [float(p == item.label) for (_, p), item in pairs]}


def choice_accuracy(
    items: list[ChoiceItem], loglikelihoods: list[list[tuple[float, bool]]]
) -> dict[str, float]:
    """``{"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}``: the share of items whose
    prediction (see ``choice_predictions``) is the item's ``label``, and its standard error over
    items (lm-eval's ``mean_stderr``, see ``uncertainty``)."""
    return mean_with_stderr(choice_correct(items, loglikelihoods))


def multiple_choice_scores(
    model, tokenizer, items: list[ChoiceItem], batch_size: int = 16
) -> dict[str, float]:
    """``{"acc", "acc_norm"}`` with lm-eval's meaning, each with its ``_stderr``: acc picks the
    choice of highest log-likelihood; acc_norm the highest log-likelihood per character of the
    choice string."""
    return choice_accuracy(items, choice_loglikelihoods(model, tokenizer, items, batch_size))


# --- generation ----------------------------------------------------------------------------------


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
    _check_batch_size(batch_size)
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

    device = _model_device(model)
    rng_devices = [device] if device.type != "cpu" else []
    with (
        _evaluating(model),
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
