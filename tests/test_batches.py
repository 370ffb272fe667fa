"""Training batches grouped by length (``training.group_by_length``) on the built-in math IFT
data and the micro base's tokenizer (256-token examples: few are cut, so lengths vary)."""

from __future__ import annotations

import pytest
import torch
from conftest import micro_study

from learnforget.base import load_base
from learnforget.data.batches import LENGTH_GROUP_BATCHES, BatchStream
from learnforget.data.prepare import build_stream, training_examples
from learnforget.errors import UserError
from learnforget.plan import expand
from learnforget.precision import run_id_view
from learnforget.study import parse_study


def _math_ift(**training) -> dict:
    return micro_study(target={"domain": "math", "regime": "ift"},
                       methods=[{"kind": "full", "lr": [1e-3]}],
                       training={"batch_size": 8, "seq_len": 256, **training})


@pytest.fixture(scope="module")
def examples_and_pad() -> tuple[list, int]:
    (run,) = expand(parse_study(_math_ift()))
    tokenizer = load_base(run.base, log=lambda m: None).tokenizer
    return training_examples(run, tokenizer), tokenizer.pad_token_id


def _padding(stream: BatchStream, steps: range) -> int:
    """Positions of the steps' batches that hold no token."""
    total = 0
    for step in steps:
        mask = stream.batch(step)["attention_mask"]
        total += int(mask.numel() - mask.sum())
    return total


def test_grouped_batches_pad_less_and_hold_each_epochs_examples(examples_and_pad) -> None:
    examples, pad = examples_and_pad
    plain = BatchStream(examples, 8, seed=3, pad_id=pad)
    grouped = BatchStream(examples, 8, seed=3, pad_id=pad, group_by_length=True)
    epoch = range(plain.steps_per_epoch)
    assert len(epoch) > LENGTH_GROUP_BATCHES  # several groups
    # the same examples in the epoch, from the same shuffled order, regrouped within each group
    group = LENGTH_GROUP_BATCHES * 8
    order, shuffled = grouped._permutation(0), plain._permutation(0)
    for start in range(0, len(order), group):
        assert sorted(order[start:start + group].tolist()) == sorted(
            shuffled[start:start + group].tolist())
    # each group sorted by length and cut into batches, the batches then shuffled: no
    # longest-to-shortest curriculum across a group's steps
    for start in range(0, len(order) - group, group):
        by_length = sorted(shuffled[start:start + group].tolist(),
                           key=lambda i: -len(examples[i].input_ids))
        expected = {tuple(by_length[k:k + 8]) for k in range(0, group, 8)}
        batches = [tuple(order[k:k + 8].tolist()) for k in range(start, start + group, 8)]
        assert set(batches) == expected
        widths = [len(examples[b[0]].input_ids) for b in batches]
        assert widths != sorted(widths, reverse=True)
    # far less padding (measured with batches of 16: 22.6% of the positions fed → 0.7%)
    assert _padding(grouped, epoch) < _padding(plain, epoch) / 3
    # a batch is a function of its step: a resumed run (a new stream) sees the same batches
    again = BatchStream(examples, 8, seed=3, pad_id=pad, group_by_length=True)
    for step in (len(epoch) + 7, 5, len(epoch) - 1):  # into the second epoch and back
        assert all(torch.equal(again.batch(step)[k], v) for k, v in grouped.batch(step).items())
    assert not torch.equal(grouped._permutation(1), grouped._permutation(0))


def test_a_grouped_ift_run_is_built_from_the_study_and_gets_its_own_id(examples_and_pad) -> None:
    (plain,) = expand(parse_study(_math_ift()))
    (grouped,) = expand(parse_study(_math_ift(group_by_length=True)))
    assert "group_by_length" not in run_id_view(plain.model_dump(mode="json"))["training"]
    assert grouped.run_id != plain.run_id  # another data order: another run
    tokenizer = load_base(grouped.base, log=lambda m: None).tokenizer
    stream = build_stream(grouped, tokenizer)
    assert stream.group_by_length and not build_stream(plain, tokenizer).group_by_length
    first = stream.batch(0)["attention_mask"].sum(-1).tolist()
    assert first == sorted(first, reverse=True)


def test_grouping_cpt_blocks_is_refused_with_the_fix() -> None:
    with pytest.raises(UserError) as error:
        parse_study(micro_study(training={"batch_size": 8, "seq_len": 64,
                                          "group_by_length": True}))
    assert "training.group_by_length applies to instruction finetuning" in str(error.value)
    assert "remove it" in str(error.value)


def test_a_grouped_ift_study_trains_and_measures(tmp_path) -> None:
    """A micro math-IFT run with ``group_by_length`` trains and is measured like any other."""
    from learnforget.measure.base_measurement import measure_base
    from learnforget.runner import execute_run
    from learnforget.store import Store

    study = parse_study(micro_study(
        base="builtin:micro", target={"domain": "math", "regime": "ift"},
        methods=[{"kind": "full", "lr": [1e-3]}],
        training={"batch_size": 8, "seq_len": 128, "group_by_length": True},
        budgets={"steps": [3, 6]},
        evaluation={"learning": ["math_bpb"], "forgetting": ["source_bpb"], "limit": 4}))
    (run,) = expand(study)
    measure_base(study, tmp_path, log=lambda m: None)
    assert execute_run(study, run, tmp_path, log=lambda m: None) == "finished"
    store = Store(tmp_path / "results.sqlite")
    assert store.checkpoint_steps(run.run_id) == [3, 6]
    rows = {(r["task"], r["metric"], r["step"]) for r in store.measurements()
            if r["run_id"] == run.run_id}
    store.close()
    assert {("train", "loss", 6), ("math_bpb", "bpb", 6), ("source_bpb", "bpb", 6)} <= rows
