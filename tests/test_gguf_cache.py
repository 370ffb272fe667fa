"""A .gguf base is converted once into a cached save_pretrained folder keyed by the file's
sha256: later loads read the folder (fast) and give the same tokens and logits as the file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from learnforget.base import (
    GGUF_DONE,
    ModelSource,
    gguf_cache_folder,
    load_base,
    load_model,
    load_tokenizer,
)
from learnforget.builtin import builtin_folder
from learnforget.study import BaseModelSpec

torch.set_num_threads(1)
gguf = pytest.importorskip("gguf")

HIDDEN, MLP, LAYERS, HEADS = 32, 64, 2, 2
TEXTS = ["def add(a, b):\n    return a + b\n", "In the beginning God created the heaven."]


def write_small_gguf(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama in float32 GGUF with builtin:micro's byte-level BPE vocabulary."""
    tokenizer = json.loads((builtin_folder("micro", lambda m: None) / "tokenizer.json")
                           .read_text())
    vocab = tokenizer["model"]["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(MLP)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(tokens))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    rng = np.random.default_rng(seed)

    def tensor(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    tensor("token_embd.weight", len(tokens), HIDDEN)
    tensor("output.weight", len(tokens), HIDDEN)
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    for block in range(LAYERS):
        for norm in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{block}.{norm}.weight", np.ones(HIDDEN, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"blk.{block}.{name}.weight", HIDDEN, HIDDEN)
        tensor(f"blk.{block}.ffn_gate.weight", MLP, HIDDEN)
        tensor(f"blk.{block}.ffn_up.weight", MLP, HIDDEN)
        tensor(f"blk.{block}.ffn_down.weight", HIDDEN, MLP)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_is_converted_once_and_loads_the_same_from_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builtin_folder("micro", lambda m: None)  # built in the usual cache before it moves
    monkeypatch.setenv("LEARNFORGET_CACHE", str(tmp_path / "cache"))
    path = write_small_gguf(tmp_path / "small.gguf")
    spec = BaseModelSpec(model=str(path), device="cpu")
    messages: list[str] = []
    first = load_base(spec, log=messages.append)
    folder = gguf_cache_folder(path)
    assert Path(first.source.name_or_path) == folder and first.source.gguf_file is None
    assert (folder / GGUF_DONE).is_file() and any("converting" in m for m in messages)
    start = time.perf_counter()
    again = load_base(spec, log=messages.append)
    assert time.perf_counter() - start <= 2.0
    assert sum("converting" in m for m in messages) == 1  # not converted twice

    direct = ModelSource(str(tmp_path), gguf_file=path.name)
    tokenizer, model = load_tokenizer(direct), load_model(direct, "float32", "cpu")
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert again.tokenizer(text)["input_ids"] == ids
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits
            assert torch.equal(again.model(torch.tensor([ids])).logits, expected)
    assert again.tokenizer.eos_token == tokenizer.eos_token
    assert again.tokenizer.pad_token_id == tokenizer.pad_token_id


def test_another_file_content_gets_another_cache_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builtin_folder("micro", lambda m: None)
    monkeypatch.setenv("LEARNFORGET_CACHE", str(tmp_path / "cache"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write_small_gguf(tmp_path / "a" / "small.gguf", seed=0)
    other = write_small_gguf(tmp_path / "b" / "small.gguf", seed=1)
    assert gguf_cache_folder(one) != gguf_cache_folder(other)
    assert gguf_cache_folder(one).name.startswith("small-")
