"""The built-in offline data sources: English prose (KJV), stdlib code, generated math problems."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from fractions import Fraction

import pytest

from learnforget.data import code, english
from learnforget.data import math as mathdata
from learnforget.data.batches import split_for_sampling
from learnforget.data.types import Pair

# ---------------------------------------------------------------- English


def test_english_splits_are_disjoint_whole_chapters() -> None:
    train = english.english_passages("train")
    heldout = english.english_passages("heldout")
    train_chapters = {(p.book, p.chapter) for p in train}
    heldout_chapters = {(p.book, p.chapter) for p in heldout}
    assert not train_chapters & heldout_chapters
    assert len(train_chapters) + len(heldout_chapters) == 1189  # chapters in the KJV
    assert 0.03 < len(heldout) / (len(train) + len(heldout)) < 0.07
    assert not set(english.english_documents("train")) & set(english.english_documents("heldout"))
    assert all(1 <= len(p.verses) <= english.PASSAGE_VERSES for p in train + heldout)
    assert sum(map(len, english.english_documents("train"))) > 3_500_000
    genesis = (
        "In the beginning God created the heaven and the earth. And the earth was without form"
    )
    assert english.english_documents("train")[0].startswith(genesis)  # verses 1:1 and 1:2
    assert not any(re.search(r"\d+:\d+", doc) for doc in english.english_documents("heldout"))


def test_source_cloze_items_are_well_formed() -> None:
    items = english.source_cloze_items(500, seed=0)
    heldout = english.english_documents("heldout")
    assert len(items) == 500
    assert len({(item.context, item.choices) for item in items}) == 500
    for item in items:
        assert len(item.choices) == 4 and len(set(item.choices)) == 4
        assert 0 <= item.label < 4
        assert all(choice.startswith(" ") for choice in item.choices)
        assert any(item.context + item.choices[item.label] in doc for doc in heldout)
        wrong = [c for i, c in enumerate(item.choices) if i != item.label]
        assert not any(item.context + c in doc for c in wrong for doc in heldout)
    # The label is not a constant: a shuffle puts the true verse everywhere.
    assert {item.label for item in items} == {0, 1, 2, 3}
    assert english.source_cloze_items(50, seed=0) != english.source_cloze_items(50, seed=1)


def test_source_cloze_refuses_more_items_than_verses() -> None:
    with pytest.raises(ValueError, match="n must be between"):
        english.source_cloze_items(100_000)


# ---------------------------------------------------------------- code


def _is_charmap_codec(text: str) -> bool:
    """A charmap codec (cp1252, koi8_r, mac_roman...) is built from a literal table."""
    return "codecs.charmap_build(" in text or "decoding_map = " in text


def test_code_excludes_tests_and_codec_tables() -> None:
    train, heldout = code.code_files("train"), code.code_files("heldout")
    kept = set(train) | set(heldout)
    excluded = code.code_excluded_files()
    assert not any(code.is_test_path(path) for path in kept)
    assert not any("site-packages" in path for path in kept)
    charmaps = {
        path.relative_to(code.stdlib_root()).as_posix()
        for path in (code.stdlib_root() / "encodings").glob("*.py")
        if _is_charmap_codec(path.read_text(encoding="utf-8"))
    }
    assert len(charmaps) > 30 and charmaps <= set(excluded["generated"])
    assert not any(_is_charmap_codec(text) for text in [*train.values(), *heldout.values()])
    assert "encodings/utf_8.py" in kept  # real codecs stay: the rule looks at content, not names
    if (code.stdlib_root() / "test" / "test_os.py").is_file():
        assert "test/test_os.py" in excluded["tests"]
    assert all(code.is_test_path(path) for path in excluded["tests"])


def test_code_splits_are_disjoint_and_held_out_is_not_a_copy_of_train() -> None:
    train, heldout = code.code_files("train"), code.code_files("heldout")
    assert not set(train) & set(heldout)
    assert all(code.is_heldout_path(p) for p in heldout)
    assert not any(code.is_heldout_path(p) for p in train)
    train_lines = set().union(*(code._shareable_lines(t) for t in train.values()))
    for text in heldout.values():
        lines = code._shareable_lines(text)
        assert len(lines & train_lines) <= code.NEAR_DUPLICATE_SHARE * len(lines)
    stats = code.code_filter_stats()
    assert stats["files_train"] == len(train) and stats["files_heldout"] == len(heldout)
    assert stats["chars_heldout"] == sum(map(len, heldout.values()))
    assert stats["files_train"] > 300 and 0.04 < len(heldout) / (len(train) + len(heldout)) < 0.12


def test_code_corpus_is_cached_on_disk_exactly() -> None:
    corpus = code.code_corpus()
    cache_file = code._disk_cache_path(code.stdlib_root(), "files")
    assert cache_file.is_file()
    assert code.CodeCorpus(**json.loads(cache_file.read_text(encoding="utf-8"))) == corpus
    pairs = code.code_ift_pairs("heldout")
    pairs_file = code._disk_cache_path(code.stdlib_root(), "pairs")
    stored = json.loads(pairs_file.read_text(encoding="utf-8"))["heldout"]
    assert [Pair(prompt, response) for prompt, response in stored] == pairs


def test_generated_table_rule() -> None:
    table = "decoding_table = (\n" + "".join(f"    '\\x{i:02x}'  # {i:#04x}\n" for i in range(64))
    table += ")\n\ndef decode(data):\n    return data.translate(decoding_table)\n"
    assert code.is_generated_table(table)
    documented = 'def f(x):\n    """' + "Prose.\n" * 80 + '    """\n    return x + 1\n'
    assert not code.is_generated_table(documented)
    short_list = "__all__ = [\n" + "".join(f"    'name{i}',\n" for i in range(20)) + "]\n"
    assert not code.is_generated_table(short_list)  # under MIN_TABLE_LINES: kept


def test_function_pairs_cut_at_the_docstring() -> None:
    source = textwrap.dedent('''
        class Box:
            def area(self,
                     scale=1):
                """Area of the box.

                Scaled by ``scale``.
                """

                width = self.w * scale
                return width * self.h * scale

            def no_doc(self):
                return 1

            def one_liner(self):
                """Doc."""; return 2

            def only_doc(self):
                """Nothing else."""
    ''')
    assert code.function_pairs(source) == [
        Pair(
            prompt='def area(self,\n         scale=1):\n    """Area of the box.\n\n'
            '    Scaled by ``scale``.\n    """\n',
            response="    width = self.w * scale\n    return width * self.h * scale\n",
        )
    ]


def test_code_ift_pairs_parse_and_are_unique() -> None:
    train, heldout = code.code_ift_pairs("train"), code.code_ift_pairs("heldout")
    assert len(train) > 2000 and len(heldout) > 100
    for pairs in (train, heldout):
        assert len({p.prompt for p in pairs}) == len(pairs)
        parsed = 0
        for pair in pairs:
            assert re.match(r"(async )?def ", pair.prompt) and pair.response.endswith("\n")
            assert 1 <= len(pair.response.splitlines()) <= code.MAX_BODY_LINES
            try:
                ast.parse(textwrap.dedent(pair.prompt + pair.response))
                parsed += 1
            except SyntaxError:
                pass
        assert parsed >= 0.95 * len(pairs)
    assert not {p.prompt for p in train} & {p.prompt for p in heldout}


def test_a_code_cpt_run_trains_on_the_files_without_parsing_out_function_pairs(
        monkeypatch) -> None:
    """Training material is built alone: a code CPT run gets the train files, in the order
    ``load_target`` gives them, and never builds the function pairs (seconds of parsing)."""
    from learnforget.data.target import load_target, training_material
    from learnforget.study import TargetSpec

    target = TargetSpec(domain="code", regime="cpt")
    expected = load_target(target).documents

    def no_pairs():
        raise AssertionError("a code CPT run built the function pairs")

    monkeypatch.setattr(code, "_code_pairs", no_pairs)
    assert training_material(target) == expected == code.code_documents("train")
    with pytest.raises(AssertionError, match="built the function pairs"):
        training_material(TargetSpec(domain="code", regime="ift"))


# ---------------------------------------------------------------- math


def _evaluate(expression: str) -> Fraction:
    """Exact value of an arithmetic expression of integers and + - * / (no eval)."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.BinOp):
            left, right = walk(node.left), walk(node.right)
            ops = {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}
            if isinstance(node.op, ast.Div):
                return left / right
            return ops[type(node.op)]
        raise ValueError(f"not arithmetic: {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval").body)


def test_math_splits_are_disjoint_and_distinct() -> None:
    train = mathdata.math_problem_identities("train", 20_000)
    test = mathdata.math_problem_identities("test", 2_000)
    new = mathdata.math_problem_identities("test_new_templates", 500)
    assert len(set(train)) == 20_000 and len(set(test)) == 2_000 and len(set(new)) == 500
    assert not set(train) & set(test)
    train_templates = {template for template, _ in train}
    assert len(train_templates) >= 12
    assert {template for template, _ in test} == train_templates
    assert {template for template, _ in new} == set(mathdata.RESERVED_TEMPLATES)
    assert not train_templates & set(mathdata.RESERVED_TEMPLATES)
    train_questions = {p.question for p in mathdata.math_problems("train", 20_000)}
    assert not train_questions & {p.question for p in mathdata.math_problems("test", 2_000)}


@pytest.mark.parametrize(
    ("split", "n"), [("train", 3000), ("test", 500), ("test_new_templates", 300)]
)
def test_math_solutions_are_arithmetically_correct(split: str, n: int) -> None:
    annotation = re.compile(r"(\S+) = <<([^=<>]+)=(-?\d+)>>(-?\d+)")
    for problem in mathdata.math_problems(split, n, seed=7):
        *steps, last = problem.solution.split("\n")
        assert last == f"#### {problem.answer}" and re.fullmatch(r"-?\d+", problem.answer)
        assert steps
        for step in steps:
            found = annotation.findall(step)
            assert found, step
            for written, expression, value, shown in found:
                assert written == expression and value == shown
                assert _evaluate(expression) == int(value), step
        assert steps[-1].count(f">>{problem.answer}") == 1


def test_math_formatting_and_determinism() -> None:
    problems = mathdata.math_problems("train", 50, seed=3)
    assert problems == mathdata.math_problems("train", 50, seed=3)
    assert problems != mathdata.math_problems("train", 50, seed=4)
    pairs = mathdata.math_ift_pairs("train", 50, seed=3)
    assert pairs[0].prompt == f"Question: {problems[0].question}\nAnswer:"
    assert [p.response for p in pairs] == [" " + p.solution for p in problems]
    assert mathdata.math_documents("train", 50, seed=3) == [p.prompt + p.response for p in pairs]


# ---------------------------------------------------------------- all three


FINGERPRINT = """
import hashlib
from learnforget.data import code, english, math
parts = [
    english.english_documents("heldout"),
    english.source_cloze_items(500, seed=0),
    math.math_problems("train", 500, seed=0),
    math.math_problems("test_new_templates", 100, seed=0),
    sorted(code.code_files("heldout")),
    code.code_ift_pairs("heldout")[:200],
]
digest = hashlib.sha256(repr(parts).encode()).hexdigest()
"""


def test_sources_are_identical_in_another_process() -> None:
    """No dependence on hash randomisation, set order or global random state."""
    here: dict = {}
    exec(FINGERPRINT, here)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", FINGERPRINT + "print(digest)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.strip() == here["digest"]


def test_cpt_sampling_pieces_keep_the_text_and_cut_at_lines() -> None:
    big = "".join(f"line {i} of a large file\n" for i in range(2000))
    documents = [big, "small a\n", "small b\nsecond line\n"]
    pieces = split_for_sampling(documents, max_chars=100)
    assert "".join(pieces) == "".join(documents)
    assert all(len(piece) <= 100 and piece.endswith("\n") for piece in pieces)
    assert len(pieces) > 400 and "small a\n" in pieces
    long_line = "x" * 250 + "\n"  # a line longer than the limit stays whole
    assert split_for_sampling([long_line, "y\n"], max_chars=100) == [long_line, "y\n"]
