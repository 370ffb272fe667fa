"""Multiple choice as lm-evaluation-harness scores it: (context, continuation) ``loglikelihood``
requests encoded as lm-eval encodes them, their log-likelihoods (an item's requests share one
pass over their common context, ``shared_context``), and acc / acc_norm with their standard
errors from them. A continuation longer than the model's context is an error; a context too long
is cut from the left.
"""

from __future__ import annotations

from collections.abc import Sequence

from learnforget.data.items import ChoiceItem
from learnforget.errors import UserError
from learnforget.measure.inference import (
    check_batch_size,
    context_length,
    encode_plain,
    evaluating,
    start_token_id,
)
from learnforget.measure.shared_context import shared_context_scores
from learnforget.measure.token_loglikelihoods import TokenPair, score_token_pairs
from learnforget.measure.uncertainty import ItemValues, mean_with_stderr


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
        continuation_ids = encode_plain(tokenizer, continuation)
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

    def plain(subset: Sequence[TokenPair]) -> list[tuple[float, bool]]:
        return score_token_pairs(model, subset, batch_size, max_length)

    check_batch_size(batch_size)
    with evaluating(model) as device:
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
