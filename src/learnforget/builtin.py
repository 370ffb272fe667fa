"""The built-in base models: a byte-level BPE tokenizer and a small Llama, pretrained here.

``builtin:tiny`` (the demo's base) and ``builtin:micro`` (tests) are pretrained by the tool on
the built-in English source corpus mixed with a small share of code and math text — real
pretraining data has some, and without it the target tokens' embeddings stay untrained and
full finetuning gets an unfair lead (see docs/demo.md). The result is an ordinary Hugging Face
model folder (config, safetensors, tokenizer) cached under ``cache_dir()/base/<name>-<hash>``,
so PEFT, transformers and lm-eval load it like any other model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from learnforget.data.batches import BatchStream, pack_documents
from learnforget.data.code import code_documents
from learnforget.data.english import english_documents
from learnforget.data.math import math_documents
from learnforget.errors import UserError
from learnforget.optim import make_optimizer, make_scheduler
from learnforget.paths import cache_dir
from learnforget.study import OptimizerSpec, ScheduleSpec
from learnforget.terminal_progress import step_progress

EOS = "<|endoftext|>"
DATA_VERSION = "1"  # bump when the corpora or the mix change: it is part of the cache key


@dataclass(frozen=True)
class BuiltinSpec:
    """Architecture and pretraining recipe of a built-in base model."""

    vocab_size: int
    hidden_size: int
    layers: int
    heads: int
    intermediate_size: int
    seq_len: int
    pretrain_tokens: int
    batch_size: int = 16
    lr: float = 3e-3
    code_share: float = 0.10  # share of pretraining characters that are code
    math_share: float = 0.04  # … and math word problems; the rest is English prose
    seed: int = 1234

    def key(self) -> str:
        """Cache key: the recipe plus the data version."""
        text = json.dumps({**asdict(self), "data": DATA_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


BUILTINS: dict[str, BuiltinSpec] = {
    # Demo base: ~2M parameters, pretraining in a few minutes on 2 CPU cores.
    "tiny": BuiltinSpec(vocab_size=4096, hidden_size=128, layers=4, heads=4,
                        intermediate_size=512, seq_len=256, pretrain_tokens=1_500_000),
    # tiny's body with a 1024-token vocabulary: the share of parameters outside the embeddings
    # and head rises from 50% to 80% (demo --full asks whether LoRA's place against full
    # finetuning changes with it).
    "tiny-vocab1k": BuiltinSpec(vocab_size=1024, hidden_size=128, layers=4, heads=4,
                                intermediate_size=512, seq_len=256, pretrain_tokens=1_500_000),
    # Test base: seconds.
    "micro": BuiltinSpec(vocab_size=1024, hidden_size=64, layers=2, heads=2,
                         intermediate_size=256, seq_len=128, pretrain_tokens=120_000,
                         lr=5e-3),
}


def pretraining_mix(spec: BuiltinSpec) -> tuple[list[str], dict[str, int]]:
    """The documents the base is pretrained on (train splits only) and characters per source."""
    rng = random.Random(spec.seed)
    prose = english_documents("train")
    prose_chars = sum(map(len, prose))
    total = prose_chars / (1.0 - spec.code_share - spec.math_share)

    def take(docs: list[str], chars: float) -> list[str]:
        docs = list(docs)
        rng.shuffle(docs)
        out, size = [], 0
        for doc in docs:
            if size >= chars:
                break
            out.append(doc)
            size += len(doc)
        return out

    code = take(code_documents("train"), spec.code_share * total)
    maths = take(math_documents("train", 20_000, seed=spec.seed), spec.math_share * total)
    docs = prose + code + maths
    rng.shuffle(docs)
    shares = {"prose": prose_chars, "code": sum(map(len, code)), "math": sum(map(len, maths))}
    return docs, shares


def train_tokenizer(documents: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2 style pre-tokenisation) with ``<|endoftext|>`` as EOS/pad."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS)


def builtin_model_config(spec: BuiltinSpec, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """The Llama configuration of a built-in model (untied head, like Llama-2)."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.seq_len,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )


def pretrain(
    spec: BuiltinSpec, folder: Path, log: Callable[[str], None] = print, name: str = "model"
) -> dict[str, float]:
    """Build the tokenizer and pretrain the model from scratch; save both into ``folder``.
    Progress: a bar on a terminal, else a line through ``log`` every few seconds."""
    started = time.time()
    torch.manual_seed(spec.seed)
    docs, shares = pretraining_mix(spec)
    tokenizer = train_tokenizer(docs, spec.vocab_size)
    steps = max(1, spec.pretrain_tokens // (spec.batch_size * spec.seq_len))
    needed = steps * spec.batch_size * spec.seq_len
    blocks = pack_documents(docs, tokenizer, spec.seq_len, max_tokens=needed)
    model = LlamaForCausalLM(builtin_model_config(spec, tokenizer))
    stream = BatchStream(blocks, spec.batch_size, spec.seed, tokenizer.eos_token_id)
    # The per-tensor AdamW, not the fused kernel: a built-in base is the same weights whether
    # it was cached by an earlier version or pretrained now (the kernels round differently).
    optimizer = make_optimizer(list(model.parameters()), OptimizerSpec(), spec.lr, 0.01,
                               allow_fused=False)
    schedule = ScheduleSpec(name="cosine", warmup=0.05, min_lr_ratio=0.1)
    scheduler = make_scheduler(optimizer, steps, schedule)
    model.train()
    loss_value = float("nan")
    with step_progress(f"pretraining builtin:{name}", steps, log) as show:
        for step in range(steps):
            batch = stream.batch(step)
            loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            show(step + 1, f"loss {loss_value:.3f}")
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()  # the bar above is the progress report
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    total_chars = sum(shares.values())
    info = {
        "spec": asdict(spec),
        "steps": steps,
        "tokens": steps * spec.batch_size * spec.seq_len,
        "final_loss": loss_value,
        "seconds": time.time() - started,
        "parameters": sum(p.numel() for p in model.parameters()),
        "mix_chars": shares,
        "mix_share": {k: v / total_chars for k, v in shares.items()},
    }
    (folder / "learnforget_pretraining.json").write_text(json.dumps(info, indent=2))
    return info


def builtin_folder(name: str, log: Callable[[str], None] = print) -> Path:
    """The cached folder of built-in base ``name``, pretraining it first if needed.

    A file lock makes concurrent callers wait for one pretraining instead of racing."""
    if name not in BUILTINS:
        raise UserError(f"unknown built-in model 'builtin:{name}'; use one of "
                        + ", ".join(f"builtin:{n}" for n in BUILTINS))
    spec = BUILTINS[name]
    root = cache_dir() / "base"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{name}-{spec.key()}"
    marker = folder / "learnforget_pretraining.json"
    if marker.exists():
        return folder
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return folder
        log(f"pretraining builtin:{name} once (cached in {folder})")
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        threads = torch.get_num_threads()
        pretrain(spec, partial, log, name)
        torch.set_num_threads(threads)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return folder
