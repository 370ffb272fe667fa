"""Shared pytest fixtures.

Fixtures are grouped by the test module family that uses them and prefixed accordingly.
"""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# --- scoring_*: a tiny random Llama and a byte-level BPE for the scoring primitives -------------

SCORING_EOS = "<|endoftext|>"
SCORING_BOS = "<|begin_of_text|>"
SCORING_CONTEXT = 64  # the tiny model's max_position_embeddings


def _scoring_sentences(count: int, seed: int = 0) -> list[str]:
    """Deterministic English-like sentences with numbers: a few KB of tokenizer training text."""
    rng = random.Random(seed)
    subjects = ["The cat", "A farmer", "My sister", "The old king", "Every student", "Our team"]
    verbs = ["bought", "counted", "found", "sold", "painted", "carried", "wrote"]
    objects = ["apples", "letters", "stones", "red boxes", "small boats", "books", "coins"]
    endings = ["yesterday.", "in the morning.", "for the market.", "before dinner.", "again."]
    return [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.randint(1, 999)} "
        f"{rng.choice(objects)} {rng.choice(endings)}"
        for _ in range(count)
    ]


def _scoring_bpe() -> Tokenizer:
    """A byte-level BPE trained on the generated sentences, with the two special tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[SCORING_EOS, SCORING_BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_scoring_sentences(400), trainer=trainer)
    return tokenizer


@pytest.fixture(scope="session")
def scoring_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2 style: EOS ``<|endoftext|>`` only, no BOS, nothing added when encoding."""
    return PreTrainedTokenizerFast(tokenizer_object=_scoring_bpe(), eos_token=SCORING_EOS)


@pytest.fixture(scope="session")
def scoring_bos_tokenizer() -> PreTrainedTokenizerFast:
    """Llama style: the same vocabulary, but encoding prepends the BOS ``<|begin_of_text|>``."""
    bpe = _scoring_bpe()
    bos_id = bpe.token_to_id(SCORING_BOS)
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{SCORING_BOS} $A",
        pair=f"{SCORING_BOS} $A {SCORING_BOS} $B",
        special_tokens=[(SCORING_BOS, bos_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=SCORING_BOS, eos_token=SCORING_EOS
    )


@pytest.fixture(scope="session")
def scoring_model(scoring_tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A seeded random-init Llama (hidden 32, 2 layers, 2 heads, context 64) in eval mode.

    ``initializer_range`` is larger than usual so that next-token distributions are peaked and
    greedy decoding has clear winners (no near-ties that float noise could flip).
    """
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(scoring_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=SCORING_CONTEXT,
        initializer_range=0.3,
        eos_token_id=scoring_tokenizer.eos_token_id,
        bos_token_id=scoring_tokenizer.convert_tokens_to_ids(SCORING_BOS),
        pad_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.eval()
    return model


# --- studies: the micro study most training tests run, and its stored numbers ------------------
def micro_study(**changes) -> dict:
    """A micro code-CPT study with cheap evaluation (a full-FT and a LoRA run); ``changes``
    replace top-level fields."""
    study = {
        "name": "micro-test",
        "base": "builtin:micro",
        "target": {"domain": "code", "regime": "cpt"},
        "methods": [{"kind": "full", "lr": [1e-3]},
                    {"kind": "lora", "lr": [5e-3], "r": [4], "targets": ["all"]}],
        "training": {"batch_size": 8, "seq_len": 64},
        "budgets": {"steps": [3, 6]},
        "evaluation": {"learning": ["code_bpb"], "forgetting": ["source_bpb"], "limit": 4},
    }
    study.update(changes)
    return study


MACHINE_METRICS = ("tokens_per_s", "peak_memory_mb")  # depend on the machine, not the run


def stored_numbers(out) -> dict[tuple, float]:
    """{(label, step, task, metric): value} of every number in OUT's store except throughput
    and peak memory (they differ between two runs of the same study)."""
    from learnforget.store import Store

    store = Store(out / "results.sqlite")
    labels = {r["run_id"]: r["label"] for r in store.runs()}
    rows = {(labels[m["run_id"]], m["step"], m["task"], m["metric"]): m["value"]
            for m in store.measurements() if m["metric"] not in MACHINE_METRICS}
    store.close()
    return rows


# --- fixtures of the claims and sandbox test modules -------------------------------------------
@pytest.fixture(scope="module")
def plain_frame(tmp_path_factory):
    """The claims tests' ``PLAIN`` study (``claim_studies``) without spectra or diversity."""
    from claim_studies import FULL_LORA, PLAIN, frame_of

    return frame_of(tmp_path_factory.mktemp("plain"), FULL_LORA, PLAIN)


@pytest.fixture
def private_sandbox_folder(monkeypatch) -> None:
    """Sandboxes started by a test create their folders in ``sandbox_helpers.PRIVATE_TMP``."""
    from sandbox_helpers import use_private_temporary_folder

    use_private_temporary_folder(monkeypatch)
