"""A train / held-out split of custom data that keeps near-duplicates together.

A plain hash of each example sends two rephrasings of one problem to different sides about 5% of
the time each, and the held-out score then measures memorisation. Here examples are grouped by
near-duplication — MinHash over word 3-grams of the normalised text (lower case, punctuation
and runs of spaces removed), with ``datasketch``'s LSH index to find candidate pairs — and a
whole group goes to one side, chosen by a stable hash of the group's first member. The split
also reports how many held-out examples still have a looser near-duplicate (Jaccard ≥
``LOOSE``) in train, the leak a user should know about.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

THRESHOLD = 0.7  # estimated Jaccard of word 3-grams at which two examples are one group
LOOSE = 0.5  # reported: held-out examples with a train example at least this similar
NUM_PERM = 64  # MinHash permutations (error of the Jaccard estimate ≈ 1/√64 = 0.125)
SHINGLE = 3
_PUNCTUATION = re.compile(r"[^\w\s]+")
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed."""
    return _SPACES.sub(" ", _PUNCTUATION.sub(" ", text.lower())).strip()


def _shingles(text: str) -> set[bytes]:
    words = normalise(text).split()
    if len(words) < SHINGLE:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + SHINGLE]).encode() for i in range(len(words) - SHINGLE + 1)}


def hashed_heldout(key: str, share: float) -> bool:
    """Stable assignment of one key to the held-out split (a ``share`` of keys)."""
    digest = hashlib.sha256(key.encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[:4], "big") < share * 2**32


@dataclass(frozen=True)
class Split:
    """Which examples are held out, and what the grouping found."""

    heldout: list[bool]
    groups_merged: int  # groups of two or more near-duplicates kept on one side
    examples_in_groups: int
    heldout_with_near_duplicate: int  # held-out examples with a train one ≥ LOOSE similar

    @property
    def heldout_count(self) -> int:
        """How many examples are held out."""
        return sum(self.heldout)

    @property
    def near_duplicate_share(self) -> float:
        """The share of held-out examples with a near-duplicate (Jaccard ≥ LOOSE) in train."""
        return self.heldout_with_near_duplicate / self.heldout_count if self.heldout_count \
            else 0.0

    def describe(self) -> str:
        """One line for the terminal and the report."""
        return (f"{self.heldout_count} of {len(self.heldout)} examples held out; "
                f"{self.groups_merged} groups of near-duplicates ({self.examples_in_groups} "
                f"examples) kept on one side; {self.near_duplicate_share:.1%} of held-out "
                f"examples have a near-duplicate (word 3-gram Jaccard ≥ {LOOSE:g}) in train")


def near_duplicate_split(texts: Sequence[str], share: float) -> Split:
    """Hold out about ``share`` of ``texts``, near-duplicates (estimated Jaccard ≥
    ``THRESHOLD``) always on the same side."""
    from datasketch import MinHash, MinHashLSH

    hashes = []
    for text in texts:
        minhash = MinHash(num_perm=NUM_PERM)
        minhash.update_batch(list(_shingles(text)))
        hashes.append(minhash)
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    loose = MinHashLSH(threshold=LOOSE, num_perm=NUM_PERM)
    for i, minhash in enumerate(hashes):
        for j in loose.query(minhash):
            if minhash.jaccard(hashes[j]) >= THRESHOLD:
                parent[root(i)] = root(j)
        loose.insert(i, minhash)
    members: dict[int, list[int]] = {}
    for i in range(len(texts)):
        members.setdefault(root(i), []).append(i)
    heldout = [False] * len(texts)
    for group in members.values():
        side = hashed_heldout(texts[min(group)], share)
        for i in group:
            heldout[i] = side
    leaked = sum(1 for i, flag in enumerate(heldout) if flag and any(
        not heldout[j] and hashes[i].jaccard(hashes[j]) >= LOOSE
        for j in loose.query(hashes[i])))
    big = [group for group in members.values() if len(group) >= 2]
    return Split(heldout, len(big), sum(len(group) for group in big), leaked)
