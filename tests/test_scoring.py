"""The scoring primitives on a real tiny Llama and a real byte-level BPE (fixtures in conftest)."""

from __future__ import annotations

import copy
import math
import statistics
from itertools import combinations, product

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model

from learnforget.data.items import ChoiceItem, TextItem
from learnforget.measure.bits_per_byte import (
    _rolling_windows,
    bits_per_byte,
    bits_per_byte_items,
    bits_per_byte_scores,
)
from learnforget.measure.multiple_choice import (
    choice_accuracy,
    choice_loglikelihoods,
    choice_predictions,
    multiple_choice_scores,
    request_loglikelihoods,
)

torch.set_num_threads(1)

SENTENCE = "The cat bought 12 apples and a café au lait."  # é: more bytes than characters


def _full_pass_log_probs(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= 1, from one forward pass over the whole sequence."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return log_probs[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]


def _plain(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- bits per byte -------------------------------------------------------------------------------


def test_bits_per_byte_equals_a_hand_computation(scoring_model, scoring_tokenizer) -> None:
    # No BOS in this tokenizer: the first token is conditioned on EOS.
    ids = [scoring_tokenizer.eos_token_id] + _plain(scoring_tokenizer, SENTENCE)
    nll = -float(_full_pass_log_probs(scoring_model, ids).sum())
    n_bytes = len(SENTENCE.encode("utf-8"))
    assert n_bytes > len(SENTENCE)
    expected = nll / (n_bytes * math.log(2))
    got = bits_per_byte(scoring_model, scoring_tokenizer, [TextItem(SENTENCE)])
    assert got == pytest.approx(expected, abs=1e-5)


def test_prefix_conditions_but_is_not_scored(scoring_model, scoring_tokenizer) -> None:
    prefix, text = "A farmer counted", " 12 apples."
    prefix_ids = [scoring_tokenizer.eos_token_id] + _plain(scoring_tokenizer, prefix)
    ids = prefix_ids + _plain(scoring_tokenizer, text)
    expected_nll = -float(_full_pass_log_probs(scoring_model, ids)[len(prefix_ids) - 1 :].sum())
    [(nll, n_bytes)] = bits_per_byte_items(
        scoring_model, scoring_tokenizer, [TextItem(text, prefix=prefix)]
    )
    assert n_bytes == len(text.encode("utf-8"))
    assert nll == pytest.approx(expected_nll, abs=1e-4)


def test_bos_is_the_start_token_and_is_not_doubled(scoring_model, scoring_bos_tokenizer) -> None:
    tokenizer = scoring_bos_tokenizer
    assert tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id  # it adds BOS by itself
    ids = [tokenizer.bos_token_id] + _plain(tokenizer, SENTENCE)
    expected_nll = -float(_full_pass_log_probs(scoring_model, ids).sum())
    [(nll, _)] = bits_per_byte_items(scoring_model, tokenizer, [TextItem(SENTENCE)])
    assert nll == pytest.approx(expected_nll, abs=1e-4)


def test_bits_per_byte_is_the_aggregate_of_the_items(scoring_model, scoring_tokenizer) -> None:
    items = [TextItem(SENTENCE), TextItem(" 7 coins.", prefix="Our team sold"), TextItem("")]
    per_item = bits_per_byte_items(scoring_model, scoring_tokenizer, items)
    assert per_item[2] == (0.0, 0)
    total_nll = sum(nll for nll, _ in per_item)
    total_bytes = sum(n for _, n in per_item)
    assert bits_per_byte(scoring_model, scoring_tokenizer, items) == pytest.approx(
        total_nll / total_bytes / math.log(2), rel=1e-12
    )


def test_bpb_stderr_is_the_ratio_estimator_error_over_documents(
    scoring_model, scoring_tokenizer
) -> None:
    # Hand computation: each document's bits from one full forward pass, then the delta-method
    # standard error of sum(bits) / sum(bytes) over documents.
    texts = [SENTENCE, "A farmer sold 7 coins.", "My sister wrote 300 letters before dinner."]
    bits, sizes = [], []
    for text in texts:
        ids = [scoring_tokenizer.eos_token_id] + _plain(scoring_tokenizer, text)
        bits.append(-float(_full_pass_log_probs(scoring_model, ids).sum()) / math.log(2))
        sizes.append(len(text.encode("utf-8")))
    n, ratio = len(texts), sum(bits) / sum(sizes)
    mean_bytes = sum(sizes) / n
    expected = math.sqrt(
        sum((b - ratio * y) ** 2 for b, y in zip(bits, sizes, strict=True)) / (n * (n - 1))
    ) / mean_bytes
    items = [TextItem(text) for text in texts]
    scores = bits_per_byte_scores(bits_per_byte_items(scoring_model, scoring_tokenizer, items))
    assert set(scores) == {"bpb", "bpb_stderr"}
    assert scores["bpb"] == pytest.approx(ratio, rel=1e-5)
    assert scores["bpb_stderr"] == pytest.approx(expected, rel=1e-4)
    assert 0 < scores["bpb_stderr"] < scores["bpb"]
    # the value is bits_per_byte's, bit for bit
    assert scores["bpb"] == bits_per_byte(scoring_model, scoring_tokenizer, items)
    # one document: no spread to estimate
    single = bits_per_byte_scores(bits_per_byte_items(scoring_model, scoring_tokenizer, items[:1]))
    assert math.isnan(single["bpb_stderr"])


def test_bits_per_byte_does_not_depend_on_batching(scoring_model, scoring_tokenizer) -> None:
    items = [
        TextItem(SENTENCE),
        TextItem(" 7 coins.", prefix="Our team sold"),
        TextItem("Every student wrote 257 small boats again. " * 8),  # longer than the context
        TextItem("A"),
        TextItem(" books", prefix="My sister painted 498 red boxes for the market and"),
    ]
    one = bits_per_byte_items(scoring_model, scoring_tokenizer, items, batch_size=1)
    four = bits_per_byte_items(scoring_model, scoring_tokenizer, items, batch_size=4)
    for (nll_one, bytes_one), (nll_four, bytes_four) in zip(one, four, strict=True):
        assert bytes_one == bytes_four
        assert nll_one == pytest.approx(nll_four, abs=1e-5)


def test_long_text_stride_one_equals_a_sliding_window(scoring_model, scoring_tokenizer) -> None:
    """With stride 1 every token is conditioned on the ``max_length`` tokens before it (or all of
    them near the start): compute that definition token by token."""
    max_length = 6
    text = "The old king found 598 letters again. A farmer found 144 coins."
    ids = [scoring_tokenizer.eos_token_id] + _plain(scoring_tokenizer, text)
    assert len(ids) > 2 * max_length
    expected_nll = 0.0
    for t in range(1, len(ids)):
        window = ids[max(0, t - max_length) : t + 1]
        expected_nll -= float(_full_pass_log_probs(scoring_model, window)[-1])
    [(nll, _)] = bits_per_byte_items(
        scoring_model, scoring_tokenizer, [TextItem(text)], max_length=max_length, stride=1
    )
    assert nll == pytest.approx(expected_nll, abs=1e-4)


def test_text_longer_than_the_model_context_is_scored(scoring_model, scoring_tokenizer) -> None:
    text = "Every student wrote 257 small boats again. " * 15
    assert len(_plain(scoring_tokenizer, text)) > 2 * scoring_model.config.max_position_embeddings
    for stride in (None, 64):
        value = bits_per_byte(scoring_model, scoring_tokenizer, [TextItem(text)], stride=stride)
        assert math.isfinite(value) and value > 0


def test_rolling_windows_score_every_token_once() -> None:
    for n_context, n_text, max_length, stride in product(
        (1, 3, 10, 40), (1, 5, 17, 100), (8, 16), (1, 3, 8)
    ):
        if stride > max_length:
            continue
        n_total = n_context + n_text
        windows = _rolling_windows(n_context, n_total, max_length, stride)
        targets = [t for _, first, end in windows for t in range(first, end)]
        assert targets == list(range(n_context, n_total))  # each text token once, in order
        for input_start, first, end in windows:
            assert 0 <= input_start < first < end
            assert end - 1 - input_start <= max_length  # the input fits the context
            for t in range(first, end):  # conditioning: at least the guaranteed amount
                assert t - input_start >= min(t, max_length - stride + 1)


def test_peft_wrapped_model_scores_like_its_base(scoring_model, scoring_tokenizer) -> None:
    """A fresh LoRA adapter is zero, so the wrapped model's scores equal the base model's."""
    base = bits_per_byte(scoring_model, scoring_tokenizer, [TextItem(SENTENCE)])
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    wrapped = get_peft_model(copy.deepcopy(scoring_model), config)
    assert bits_per_byte(wrapped, scoring_tokenizer, [TextItem(SENTENCE)]) == pytest.approx(
        base, abs=1e-6
    )


def test_training_mode_is_restored(scoring_model, scoring_tokenizer) -> None:
    scoring_model.train()
    scoring_model.model.layers[0].eval()  # a submodule in a different mode stays so
    try:
        bits_per_byte(scoring_model, scoring_tokenizer, [TextItem(SENTENCE)])
        assert scoring_model.training
        assert not scoring_model.model.layers[0].training
        assert scoring_model.model.layers[1].training
    finally:
        scoring_model.eval()


# --- multiple choice -----------------------------------------------------------------------------


def test_choice_loglikelihood_equals_a_hand_computation(scoring_model, scoring_tokenizer) -> None:
    # lm-eval's encoding: the context's trailing space moves to the continuation, then
    # continuation tokens = tokens(context + continuation)[len(tokens(context)):].
    context, choice = "The cat bought ", "12 apples"
    whole = _plain(scoring_tokenizer, "The cat bought 12 apples")
    n_context = len(_plain(scoring_tokenizer, "The cat bought"))
    expected = float(_full_pass_log_probs(scoring_model, whole)[n_context - 1 :].sum())
    [[(ll, _)]] = choice_loglikelihoods(
        scoring_model, scoring_tokenizer, [ChoiceItem(context, (choice,), 0)]
    )
    assert ll == pytest.approx(expected, abs=1e-4)


def test_empty_context_conditions_on_the_start_token(scoring_model, scoring_tokenizer) -> None:
    ids = [scoring_tokenizer.eos_token_id] + _plain(scoring_tokenizer, "A farmer")
    expected = float(_full_pass_log_probs(scoring_model, ids).sum())
    [[(ll, _)]] = choice_loglikelihoods(
        scoring_model, scoring_tokenizer, [ChoiceItem("", ("A farmer",), 0)]
    )
    assert ll == pytest.approx(expected, abs=1e-4)


def test_long_context_is_cut_from_the_left(scoring_model, scoring_tokenizer) -> None:
    context = "My sister sold 324 small boats in the morning. " * 5 + "The cat"
    whole = _plain(scoring_tokenizer, context + " sold")
    n_context = len(_plain(scoring_tokenizer, context))
    context_size = scoring_model.config.max_position_embeddings
    assert len(whole) > context_size + 1
    window = whole[-(context_size + 1) :]  # the model sees window[:-1]
    n_scored = len(whole) - n_context
    expected = float(_full_pass_log_probs(scoring_model, window)[-n_scored:].sum())
    [[(ll, _)]] = choice_loglikelihoods(
        scoring_model, scoring_tokenizer, [ChoiceItem(context, (" sold",), 0)]
    )
    assert ll == pytest.approx(expected, abs=1e-4)


def test_acc_and_acc_norm_by_hand() -> None:
    """acc: argmax log-likelihood; acc_norm: argmax log-likelihood per character."""
    items = [
        ChoiceItem("q1", ("a", "bbbb"), label=0),  # lls -2, -4: acc -> 0; per char -2, -1 -> 1
        ChoiceItem("q2", ("xx", "yy", "zz"), label=2),  # equal lengths: both pick 2
        ChoiceItem("q3", ("long one", "s"), label=1),  # -8/8 = -1 vs -3/1: acc_norm -> 0
    ]
    loglikelihoods = [
        [(-2.0, False), (-4.0, False)],
        [(-5.0, False), (-3.0, False), (-1.0, True)],
        [(-8.0, False), (-3.0, False)],
    ]
    assert choice_predictions(items, loglikelihoods) == [(0, 1), (2, 2), (1, 0)]
    # acc per item 1, 1, 1 (no spread); acc_norm 0, 1, 0: sample std sqrt(1/3), / sqrt(3)
    assert choice_accuracy(items, loglikelihoods) == pytest.approx(
        {"acc": 1.0, "acc_stderr": 0.0, "acc_norm": 1 / 3, "acc_norm_stderr": 1 / 3}
    )


def test_multiple_choice_scores_on_the_model(scoring_model, scoring_tokenizer) -> None:
    items = [
        ChoiceItem("The cat bought", (" 12 apples", " books"), label=0),
        ChoiceItem("A farmer sold", (" 7", " red boxes for the market before dinner"), label=0),
        ChoiceItem("My sister", (" wrote", " painted", " carried 5 small boats again"), label=1),
    ]
    lls = choice_loglikelihoods(scoring_model, scoring_tokenizer, items)
    predictions = []
    for item, scores in zip(items, lls, strict=True):
        values = [ll for ll, _ in scores]
        per_char = [ll / len(c) for ll, c in zip(values, item.choices, strict=True)]
        predictions.append(
            (
                max(range(len(values)), key=values.__getitem__),
                max(range(len(values)), key=per_char.__getitem__),
            )
        )
    assert any(acc != norm for acc, norm in predictions), "no item where acc and acc_norm differ"
    correct = {
        "acc": [int(p == i.label) for (p, _), i in zip(predictions, items, strict=True)],
        "acc_norm": [int(p == i.label) for (_, p), i in zip(predictions, items, strict=True)],
    }
    expected = {}
    for metric, values in correct.items():
        expected[metric] = sum(values) / 3
        expected[f"{metric}_stderr"] = statistics.stdev(values) / math.sqrt(3)
    assert expected["acc_stderr"] + expected["acc_norm_stderr"] > 0, "no spread to check"
    for batch_size in (16, 1):
        scores = multiple_choice_scores(scoring_model, scoring_tokenizer, items, batch_size)
        assert scores == pytest.approx(expected, rel=1e-12, abs=0)


def test_choice_loglikelihoods_do_not_depend_on_batching(scoring_model, scoring_tokenizer) -> None:
    items = [
        ChoiceItem("The cat bought", (" 12 apples", " books"), label=0),
        ChoiceItem("", ("A farmer", "The old king"), label=0),
        ChoiceItem("Our team ", ("found", "sold 5 coins"), label=1),
    ]
    one = choice_loglikelihoods(scoring_model, scoring_tokenizer, items, batch_size=1)
    many = choice_loglikelihoods(scoring_model, scoring_tokenizer, items, batch_size=16)
    for a, b in zip(sum(one, []), sum(many, []), strict=True):
        assert a[0] == pytest.approx(b[0], abs=1e-5) and a[1] == b[1]


def _hand_loglikelihood(model, tokenizer, context: str, choice: str) -> float:
    """log p(choice | context) from one forward pass over context + choice (no trailing
    spaces in the contexts used here, so lm-eval's encoding is the plain split)."""
    whole = _plain(tokenizer, context + choice)
    n_context = len(_plain(tokenizer, context))
    return float(_full_pass_log_probs(model, whole)[n_context - 1 :].sum())


def test_choices_sharing_a_context_score_as_separate_sequences(
    scoring_model, scoring_tokenizer
) -> None:
    # contexts of different lengths, 2–5 choices of very different lengths (one a single
    # token), an item with one choice: the shared-context path (one pass per context, the
    # cache copied per choice) must give each choice its own full-sequence log-likelihood
    items = [
        ChoiceItem("The cat bought", (" 12 apples", " books", " a", " red boxes for the old king"),
                   0),
        ChoiceItem("A farmer sold 7 small boats in the morning and", (" wrote", " painted"), 1),
        ChoiceItem("My sister", (" carried 5 coins", " found"), 0),
        ChoiceItem("Every student wrote 257 small", (" books",), 0),
        ChoiceItem("Our team found", (" 3", " 4", " 5 red", " six", " the cat again"), 2),
    ]
    assert _plain(scoring_tokenizer, " a") and len(_plain(scoring_tokenizer, " a")) == 1
    for batch_size in (1, 3, 16):
        lls = choice_loglikelihoods(scoring_model, scoring_tokenizer, items, batch_size)
        for item, scores in zip(items, lls, strict=True):
            for choice, (ll, _) in zip(item.choices, scores, strict=True):
                expected = _hand_loglikelihood(scoring_model, scoring_tokenizer, item.context,
                                               choice)
                assert ll == pytest.approx(expected, abs=1e-4), (batch_size, item.context, choice)


def test_requests_sharing_a_prefix_score_as_separate_sequences(
    scoring_model, scoring_tokenizer
) -> None:
    # WinoGrande-style groups: each option ends its own context after a shared sentence start
    # (the blank), the continuation is shared; groups of 2–3 requests, one request alone, one
    # group whose contexts share no token. Each request must get its full-sequence
    # log-likelihood, greedy flags as the plain path gives them.
    requests = [
        ("The cat bought the boats because the cat", " was rich and old"),
        ("The cat bought the boats because the boats", " was rich and old"),
        ("My sister found 12 apples and", " wrote"),
        ("My sister found 12 apples but", " wrote"),
        ("My sister found 12 apples for the old king and", " wrote"),
        ("A farmer sold", " 7 small boats"),
        ("Our team", " found the cat"),
        ("Every student", " found the cat"),
    ]
    groups = [[0, 1], [2, 3, 4], [5], [6, 7]]
    prefixes = [_plain(scoring_tokenizer, requests[i][0]) for i in (0, 1)]
    assert prefixes[0][:3] == prefixes[1][:3] != prefixes[0]  # a shared prefix, own endings
    shared: list[bool] = []  # whether each forward pass ran groups of requests (a 4-D mask)
    hook = scoring_model.register_forward_pre_hook(
        lambda module, args, kwargs: shared.append(
            kwargs.get("attention_mask") is not None and kwargs["attention_mask"].dim() == 4),
        with_kwargs=True)
    try:
        plain = request_loglikelihoods(scoring_model, scoring_tokenizer, requests,
                                       [[i] for i in range(8)])
        assert not any(shared)  # groups of one: the plain path only
        grouped_by_batch = {}
        for batch_size in (1, 2, 16):
            shared.clear()
            grouped_by_batch[batch_size] = request_loglikelihoods(
                scoring_model, scoring_tokenizer, requests, groups, batch_size)
            assert any(shared), batch_size  # the shared prefixes were used
    finally:
        hook.remove()
    for batch_size, grouped in grouped_by_batch.items():
        for (context, continuation), (ll, greedy), (ll_plain, greedy_plain) in zip(
                requests, grouped, plain, strict=True):
            expected = _hand_loglikelihood(scoring_model, scoring_tokenizer, context,
                                           continuation)
            assert ll == pytest.approx(expected, abs=1e-4), (batch_size, context)
            assert ll_plain == pytest.approx(expected, abs=1e-4) and greedy == greedy_plain


class _NoPositionIds(torch.nn.Module):
    """A causal LM whose forward takes no position ids or cache (as some custom models)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


class _IgnoresMask(_NoPositionIds):
    """Takes a 4-D mask and position ids but reads each row as plain causal text: only the
    probe can tell."""

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        self.masks_seen.append(attention_mask.dim())
        return self.model(input_ids=input_ids, position_ids=position_ids)


class _IgnoresPositions(_IgnoresMask):
    """Takes position ids but ignores them (the mask is honoured): only the probe can tell."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        self.masks_seen.append(attention_mask.dim())
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


@pytest.mark.parametrize("wrapper", [_NoPositionIds, _IgnoresMask, _IgnoresPositions])
def test_models_without_mask_or_position_support_are_scored_the_plain_way(
    wrapper, scoring_model, scoring_tokenizer
) -> None:
    items = [ChoiceItem("The cat bought", (" 12 apples", " books"), 0),
             ChoiceItem("My sister", (" wrote", " painted", " carried 5 coins"), 1)]
    expected = choice_loglikelihoods(scoring_model, scoring_tokenizer, items)
    wrapped = wrapper(scoring_model)
    wrapped.masks_seen = []
    got = choice_loglikelihoods(wrapped, scoring_tokenizer, items)
    for a, b in zip(sum(expected, []), sum(got, []), strict=True):
        assert a[0] == pytest.approx(b[0], abs=1e-4) and a[1] == b[1]
    if wrapper is not _NoPositionIds:  # the grouped batch ran and the probe turned it down
        assert wrapped.masks_seen[0] == 4 and 2 in wrapped.masks_seen


# --- paired standard errors ----------------------------------------------------------------------
def test_paired_stderr_is_the_standard_error_of_the_per_item_differences() -> None:
    import numpy as np

    from learnforget.measure.uncertainty import average_items, paired_stderr

    a = {"acc": [1.0, 1.0, 0.0, 1.0, 0.0, 1.0], "bits": [50.0, 300.0, 120.0],
         "bytes": [100.0, 200.0, 80.0]}
    b = {"acc": [1.0, 0.0, 0.0, 1.0, 1.0, 0.0], "bits": [40.0, 290.0, 100.0],
         "bytes": [100.0, 200.0, 80.0]}
    d = np.array(a["acc"]) - np.array(b["acc"])
    assert paired_stderr(a, b, "acc") == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)))
    # bits per byte: the ratio Σ(bits_a − bits_b) / Σbytes, delta-method error over items
    diff = np.array(a["bits"]) - np.array(b["bits"])
    y = np.array(a["bytes"])
    r = diff.sum() / y.sum()
    expected = math.sqrt(((diff - r * y) ** 2).sum() / (3 * 2)) / y.mean()
    assert paired_stderr(a, b, "bpb") == pytest.approx(expected)
    # other items (bytes differ) or a missing metric: no paired error
    assert math.isnan(paired_stderr(a, {**b, "bytes": [1.0, 2.0, 3.0]}, "bpb"))
    assert math.isnan(paired_stderr(a, {"bits": b["bits"], "bytes": b["bytes"]}, "acc"))
    # seeds are averaged item by item
    assert average_items([{"acc": [1.0, 0.0]}, {"acc": [0.0, 0.0], "x": [1.0]}]) == {
        "acc": [0.5, 0.0]}


def test_evaluate_returns_the_per_item_values_behind_each_score(scoring_model, scoring_tokenizer
                                                                ) -> None:
    from learnforget.measure.evaluate import score_task
    from learnforget.measure.tasks import get_task
    from learnforget.measure.uncertainty import mean_stderr

    items = [ChoiceItem(context=f"The {w} sat", choices=(" on a mat", " in a box", " up"),
                        label=i % 3) for i, w in enumerate(["cat", "dog", "bird", "fish"])]
    scored = score_task(scoring_model, scoring_tokenizer, get_task("source_cloze"), items, 2)
    for metric in ("acc", "acc_norm"):
        values = scored.per_item[metric]
        assert len(values) == 4 and set(values) <= {0.0, 1.0}
        assert scored.scores[metric] == pytest.approx(sum(values) / 4)
        assert scored.scores[f"{metric}_stderr"] == pytest.approx(mean_stderr(values))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=9), st.integers(1, 200),
       st.integers(0, 64))
def test_rows_are_cut_into_the_cheapest_batches(lengths, budget, forward_cost) -> None:
    # every way of cutting the sorted rows into consecutive batches, against the one chosen
    from learnforget.measure.shared_context import chunks_by_length

    lengths = sorted(lengths, reverse=True)

    def cost(cuts: list[list[int]]) -> float | None:
        if any(len(c) > 1 and len(c) * lengths[c[0]] > budget for c in cuts):
            return None  # over the budget (a single row may exceed it)
        return sum(forward_cost + len(c) * lengths[c[0]] for c in cuts)

    n = len(lengths)
    every = []
    for k in range(n):
        for bounds in combinations(range(1, n), k):
            edges = [0, *bounds, n]
            every.append([list(range(a, b)) for a, b in zip(edges, edges[1:], strict=False)])
    chosen = chunks_by_length(lengths, budget, forward_cost)
    assert sorted(i for c in chosen for i in c) == list(range(n))
    assert cost(chosen) == min(c for c in map(cost, every) if c is not None)


def test_positions_fed_count_each_shared_prefix_once() -> None:
    from learnforget.measure.shared_context import positions_fed

    pairs = [([1, 2, 3], [7, 8]), ([1, 2, 3], [9]), ([1, 2, 4], [5, 6, 7]), ([4], [5])]
    # plain: every request alone, its last token only predicted: 4 + 3 + 5 + 1
    # grouped: [0, 1] share 3 tokens (3 + 1 + 0), [2] alone (5), [3] alone (1)
    assert positions_fed(pairs, [[0, 1], [2], [3]]) == (13, 10)
    # [0, 1, 2] share [1, 2]: 2 + (1 + 1) + (1 + 0) + (1 + 2); [3] alone
    assert positions_fed(pairs, [[0, 1, 2], [3]]) == (13, 9)
    # a context of 4 tokens: request 2 (6 tokens) is cut to 5 and fed 4, and its group goes the
    # plain way; the others fit
    assert positions_fed(pairs, [[0, 1], [2], [3]], max_length=4) == (12, 9)
    assert positions_fed(pairs, [[0, 1, 2], [3]], max_length=4) == (12, 12)


@pytest.mark.parametrize("chunk_positions", [1, 3, 1 << 20])
def test_a_batch_is_read_back_at_once_with_the_per_request_numbers(
        scoring_model, scoring_tokenizer, monkeypatch, chunk_positions: int) -> None:
    """``continuation_scores`` (every request of a batch gathered, scored in chunks and copied
    to the host once) gives each request exactly the float and greedy flag of lm-eval's loop,
    which reads them request by request: the same float32 values summed the same way."""
    import learnforget.measure.continuations as continuations

    vocab = scoring_model.config.vocab_size
    monkeypatch.setattr(continuations, "CPU_CHUNK_ELEMENTS", chunk_positions * vocab)
    texts = ["The cat sat on the mat.", "A café au lait costs 3 euros.", "12 apples"]
    rows = [scoring_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
    with torch.inference_mode():
        logits = scoring_model(input_ids=ids).logits
    requests = []
    for row, tokens in enumerate(rows):
        for start in range(1, len(tokens)):  # every suffix of the row is a continuation
            requests.append((row, range(start - 1, len(tokens) - 1), tokens[start:]))
    greedy_request = (0, range(0, 3), logits[0, :3].argmax(-1).tolist())
    requests.append(greedy_request)
    scores = continuations.continuation_scores(logits, requests)
    for (row, where, continuation), score in zip(requests, scores, strict=True):
        log_probs = logits[row, where.start:where.stop].float().log_softmax(-1)
        target = torch.tensor(continuation)
        assert score == (float(log_probs.gather(-1, target[:, None]).sum()),
                         bool((log_probs.argmax(-1) == target).all()))
    assert scores[-1][1] is True and not all(greedy for _, greedy in scores)
