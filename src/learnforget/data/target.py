"""The target domain's training data and held-out text, for every domain × regime.

Built-in domains use the offline corpora (``code.py``, ``math.py``); ``custom`` reads the
user's files or a named/hub dataset through ``loaders.py``. Custom data is split train /
held-out with near-duplicates kept on one side (``dedup.py``), so the held-out part measures
learning, not memorisation of a rephrased copy. A code or math study that names ``data``
trains on it (``own_data``) and measures learning with the domain's held-out data and
benchmarks (HumanEval, GSM8K, code and math bits per byte).
"""

from __future__ import annotations

from dataclasses import dataclass

from learnforget.data.dedup import Split, near_duplicate_split
from learnforget.data.types import Pair
from learnforget.study import TargetSpec

MATH_TRAIN_PROBLEMS = 8000  # built-in math IFT/CPT set size when max_examples is not given
HELDOUT_SHARE = 0.05  # custom data: share held out for the learning measurement


@dataclass(frozen=True)
class TargetData:
    """Training material of one regime: documents (CPT) or pairs (IFT), plus held-out ones."""

    regime: str
    documents: list[str]
    pairs: list[Pair]
    heldout_documents: list[str]
    heldout_pairs: list[Pair]
    split: Split | None = None  # custom data: how the held-out part was chosen


def own_data(target: TargetSpec) -> bool:
    """Whether the study trains on the user's data (``target.data``, any domain) rather than on
    a built-in corpus."""
    return bool(target.data)


def _cap(items: list, limit: int | None) -> list:
    return items if limit is None else items[:limit]


def load_target(target: TargetSpec, seed: int = 0, tokenizer=None) -> TargetData:
    """The data of ``target``; ``tokenizer`` renders chat-format custom pairs when it has a
    chat template."""
    cap = target.max_examples
    if target.domain == "custom":
        from learnforget.data.loaders import load_documents, load_pairs

        if target.regime == "cpt":
            docs = list(load_documents(target.data, limit_docs=cap,
                                       text_field=target.text_field))
            split = near_duplicate_split(docs, HELDOUT_SHARE)
            return TargetData("cpt", [d for d, h in zip(docs, split.heldout, strict=True) if not h],
                              [], [d for d, h in zip(docs, split.heldout, strict=True) if h], [],
                              split)
        pairs = load_pairs(target.data, limit=cap, tokenizer=tokenizer,
                           prompt_field=target.prompt_field,
                           response_field=target.response_field)
        split = near_duplicate_split([p.prompt for p in pairs], HELDOUT_SHARE)
        train = [p for p, h in zip(pairs, split.heldout, strict=True) if not h]
        held = [p for p, h in zip(pairs, split.heldout, strict=True) if h]
        return TargetData("ift", [], train, [], held, split)
    if target.domain == "code":
        from learnforget.data.code import code_documents, code_ift_pairs

        heldout = (code_documents("heldout"), code_ift_pairs("heldout"))
    else:
        from learnforget.data.math import math_documents, math_ift_pairs

        heldout = (math_documents("test", 500, 0), math_ift_pairs("test", 500, 0))
    train = training_material(target, seed, tokenizer)
    cpt = target.regime == "cpt"
    return TargetData(target.regime, train if cpt else [], [] if cpt else train, *heldout)


def training_material(target: TargetSpec, seed: int = 0, tokenizer=None
                      ) -> list[str] | list[Pair]:
    """The training documents (CPT) or pairs (IFT) of ``target``: the user's data when it names
    ``data`` (for a code or math study, all of it), else the built-in corpus. For a built-in
    domain only those are built: the code corpus's function pairs, for one, take seconds to
    parse out of the standard library and a CPT run does not train on them."""
    cap = target.max_examples
    cpt = target.regime == "cpt"
    if own_data(target) and target.domain != "custom":  # all of it trains: no held-out part
        from learnforget.data.loaders import load_documents, load_pairs

        if cpt:
            return list(load_documents(target.data, limit_docs=cap,
                                       text_field=target.text_field))
        return load_pairs(target.data, limit=cap, tokenizer=tokenizer,
                          prompt_field=target.prompt_field, response_field=target.response_field)
    if target.domain == "code":
        from learnforget.data.code import code_documents, code_ift_pairs

        return _cap(code_documents("train"), cap) if cpt else _cap(code_ift_pairs("train"), cap)
    if target.domain == "math":
        from learnforget.data.math import math_documents, math_ift_pairs

        n = cap or MATH_TRAIN_PROBLEMS
        return math_documents("train", n, seed) if cpt else math_ift_pairs("train", n, seed)
    data = load_target(target, seed, tokenizer)
    return data.documents if cpt else data.pairs


def first_example(target: TargetSpec) -> str | Pair:
    """The first document or pair of a custom target: opening the source and checking its
    fields without reading it all (a missing file or field is a ``UserError`` here)."""
    from learnforget.data.loaders import load_documents, load_pairs

    if target.regime == "cpt":
        return next(load_documents(target.data, text_field=target.text_field))
    return load_pairs(target.data, limit=1, prompt_field=target.prompt_field,
                      response_field=target.response_field)[0]
