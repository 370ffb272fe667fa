"""A run's training data: tokenized once (cached on disk per tokenizer for built-in corpora),
then served as the run's seeded batch stream, with the steps at which its budgets fall."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
from collections.abc import Callable
from pathlib import Path

import torch

from learnforget.data.batches import (
    BatchStream,
    pack_documents,
    split_for_sampling,
    tokenize_pairs,
)
from learnforget.data.target import own_data, training_material
from learnforget.paths import cache_dir
from learnforget.plan import RunConfig, config_hash


def render_prompt_for(tokenizer) -> Callable[[str], str]:
    """IFT prompts through the tokenizer's chat template when it has one, else as they are."""
    if getattr(tokenizer, "chat_template", None):
        def render(prompt: str) -> str:
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return render
    return lambda prompt: prompt


def _tokens_needed(run: RunConfig) -> int | None:
    """How many CPT tokens the run's last budget consumes (None: epochs need all of them)."""
    per_step = run.training.batch_size * run.training.seq_len
    if run.budgets.unit == "tokens":
        return int(run.budgets.values[-1]) + per_step
    if run.budgets.unit == "steps":
        return int(run.budgets.values[-1]) * per_step
    return None


def _tokenizer_fingerprint(tokenizer) -> str | None:
    """A hash of the tokenizer's whole definition (None: a tokenizer without one, not cached)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    return hashlib.sha256(backend.to_str().encode()).hexdigest()


def _prepared_path(key: dict) -> Path:
    """Where the examples of cache key ``key`` are kept."""
    return cache_dir() / "prepared" / f"{config_hash(key)}.pt"


def _disk_cached(key: dict, build: Callable[[], object]) -> object:
    """``build()``, cached in ``cache_dir()/prepared`` under a hash of ``key`` (written
    atomically, so concurrent runs never read half a file)."""
    path = _prepared_path(key)
    if path.exists():
        return torch.load(path, weights_only=False)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    torch.save(value, partial)
    partial.replace(path)
    return value


def _training_key(run: RunConfig, fingerprint: str) -> dict:
    """What a run's prepared training examples depend on (their disk cache's key)."""
    needed = _tokens_needed(run) if run.target.regime == "cpt" else None
    return {"tokenizer": fingerprint, "target": run.target.model_dump(mode="json"),
            "seq_len": run.training.seq_len, "tokens": needed, "version": 2}


def training_examples(run: RunConfig, tokenizer) -> torch.Tensor | list:
    """The run's tokenized training data: packed blocks (CPT) or prompt/response examples (IFT).

    CPT documents are cut into pieces of a few thousand characters and taken in a fixed
    shuffled order (so a token budget takes a sample of the whole corpus, the same for every run
    of the study) and tokenized only as far as the budget reaches. Built-in corpora are cached
    on disk per tokenizer: preparing them costs more than a short run."""
    seq_len = run.training.seq_len

    def build():
        material = training_material(run.target, 0, tokenizer)
        if run.target.regime == "ift":
            return tokenize_pairs(material, tokenizer, seq_len, render_prompt_for(tokenizer))
        documents = split_for_sampling(material)
        random.Random(0).shuffle(documents)
        return pack_documents(documents, tokenizer, seq_len, max_tokens=_tokens_needed(run))

    fingerprint = _tokenizer_fingerprint(tokenizer)
    if own_data(run.target) or fingerprint is None:  # the user's files may change: not cached
        return build()
    return _disk_cached(_training_key(run, fingerprint), build)


def prepare_training_data(runs: list[RunConfig], load_tokenizer: Callable[[], object],
                          log: Callable[[str], None] = print) -> None:
    """Build and cache on disk the training examples of ``runs`` that a built-in corpus
    provides, once per distinct set, before the runs start: their processes then load the
    examples instead of each building the same set side by side, and do not hold the corpus
    the examples came from in memory while they train (it would add to their peak).
    ``load_tokenizer()``: the runs' tokenizer, loaded only when some run's data is built in."""
    runs = [run for run in runs if not own_data(run.target)]
    if not runs:
        return
    tokenizer = load_tokenizer()
    fingerprint = _tokenizer_fingerprint(tokenizer)
    if fingerprint is None:
        return
    missing = {}
    for run in runs:
        key = _training_key(run, fingerprint)
        if not _prepared_path(key).exists():
            missing.setdefault(config_hash(key), run)
    for run in missing.values():
        log(f"preparing the training data ({run.target.domain} {run.target.regime}, "
            f"{run.training.seq_len}-token sequences)")
        training_examples(run, tokenizer)


def build_stream(run: RunConfig, tokenizer) -> BatchStream:
    """The seeded batch stream of the run."""
    return BatchStream(training_examples(run, tokenizer), run.training.batch_size, run.seed,
                       tokenizer.pad_token_id, run.training.group_by_length)


def checkpoint_steps(run: RunConfig, stream: BatchStream) -> list[int]:
    """The optimizer steps at which the budgets fall (tokens / epochs / steps → steps)."""
    budgets = run.budgets
    if budgets.unit == "steps":
        steps = [int(v) for v in budgets.values]
    elif budgets.unit == "epochs":
        steps = [max(1, round(v * stream.steps_per_epoch)) for v in budgets.values]
    else:
        per_step = stream.mean_tokens_per_step()
        steps = [max(1, math.ceil(v / per_step)) for v in budgets.values]
    for index in range(1, len(steps)):  # CPT token budgets are refused at validation already
        if steps[index] == steps[index - 1]:
            logging.getLogger(__name__).warning(
                "warning: budgets.%s %g and %g both fall on step %d of this data: they are one "
                "checkpoint (space them further apart)", budgets.unit, budgets.values[index - 1],
                budgets.values[index], steps[index])
    return sorted(set(steps))
