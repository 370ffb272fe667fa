"""Turn documents and prompt/response pairs into training batches.

- Continued pretraining (CPT): documents are tokenized, joined with an EOS separator and cut
  into fixed-length blocks; every token is a target.
- Instruction finetuning (IFT): prompt + response + EOS, truncated to ``seq_len``; the loss is
  on the response tokens only (prompt labels are -100).

``BatchStream`` gives the batch of any step directly (a seeded permutation per epoch), so a run
resumed at step k sees exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from learnforget.data.types import Pair
from learnforget.errors import UserError

IGNORE_INDEX = -100


SAMPLING_PIECE_CHARS = 4000


def split_for_sampling(
    documents: Sequence[str], max_chars: int = SAMPLING_PIECE_CHARS
) -> list[str]:
    """Each document cut at line breaks into pieces of at most ``max_chars`` characters (a line
    longer than that is a piece of its own).

    A CPT token budget is filled from documents in a shuffled order; with whole documents a
    small budget is a handful of files, dominated by the largest (in the standard library,
    ``tkinter/__init__.py`` alone is 59% of the first 100k tokens). Shuffling pieces instead
    spreads the same budget over many files."""
    pieces: list[str] = []
    for document in documents:
        piece: list[str] = []
        size = 0
        for line in document.splitlines(keepends=True):
            if piece and size + len(line) > max_chars:
                pieces.append("".join(piece))
                piece, size = [], 0
            piece.append(line)
            size += len(line)
        if piece:
            pieces.append("".join(piece))
    return pieces


def pack_documents(
    documents: Sequence[str],
    tokenizer,
    seq_len: int,
    max_tokens: int | None = None,
    batch_chars: int = 200_000,
) -> torch.Tensor:
    """Tokenize ``documents``, join them with EOS and cut the stream into ``[n, seq_len]``
    blocks (the incomplete tail is dropped); stop early once ``max_tokens`` are packed."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no EOS token; CPT packing needs one to separate "
                        "documents (set tokenizer.eos_token)")
    stream: list[int] = []
    chunk: list[str] = []
    size = 0

    def flush() -> None:
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(eos)

    for doc in documents:
        if max_tokens is not None and len(stream) >= max_tokens:
            break
        chunk.append(doc)
        size += len(doc)
        if size >= batch_chars:
            flush()
            chunk, size = [], 0
    if chunk:
        flush()
    n_blocks = len(stream) // seq_len
    if n_blocks == 0:
        raise UserError(
            f"the training text gives {len(stream)} tokens, fewer than one block of "
            f"seq_len={seq_len}; add data or lower training.seq_len"
        )
    return torch.tensor(stream[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)


@dataclass(frozen=True)
class IftExample:
    """Token ids of prompt + response + EOS, with labels -100 on the prompt."""

    input_ids: list[int]
    labels: list[int]


def tokenize_pairs(
    pairs: Sequence[Pair],
    tokenizer,
    seq_len: int,
    render_prompt: Callable[[str], str] = lambda prompt: prompt,
) -> list[IftExample]:
    """Tokenize IFT pairs; prompts are rendered by ``render_prompt`` (e.g. a chat template).

    Prompt and response are tokenized separately so the boundary is exact; pairs whose prompt
    alone fills ``seq_len`` are dropped, longer responses are truncated."""
    eos = tokenizer.eos_token_id
    prompts = tokenizer([render_prompt(p.prompt) for p in pairs])["input_ids"]
    responses = tokenizer([p.response for p in pairs], add_special_tokens=False)["input_ids"]
    examples = []
    for prompt_ids, response_ids in zip(prompts, responses, strict=True):
        response_ids = list(response_ids) + ([eos] if eos is not None else [])
        if len(prompt_ids) >= seq_len - 1:
            continue
        ids = (list(prompt_ids) + response_ids)[:seq_len]
        labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:seq_len]
        examples.append(IftExample(ids, labels))
    if not examples:
        raise UserError(f"no IFT pair fits in seq_len={seq_len}; raise training.seq_len")
    return examples


LENGTH_GROUP_BATCHES = 50  # batches per group of similar lengths (transformers' megabatch)


class BatchStream:
    """Seeded batches over packed blocks (CPT) or IFT examples, addressable by step.

    ``group_by_length`` (IFT): each epoch's shuffled order is cut into groups of
    ``LENGTH_GROUP_BATCHES`` batches, each group sorted by length and cut into batches, as
    ``transformers``' ``LengthGroupedSampler`` does, so that a batch holds examples of similar
    length and pads little; then, unlike it, the group's batches are shuffled: taken longest
    to shortest, the steps of a short run (or between two checkpoints) would see the group's
    longest examples first and its shortest last, a curriculum the study did not ask for."""

    def __init__(
        self,
        data: torch.Tensor | list[IftExample],
        batch_size: int,
        seed: int,
        pad_id: int,
        group_by_length: bool = False,
    ) -> None:
        if len(data) < batch_size:
            raise UserError(
                f"only {len(data)} training sequences for batch_size={batch_size}; "
                "add data or lower training.batch_size"
            )
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.pad_id = pad_id
        self.steps_per_epoch = len(data) // batch_size
        self.group_by_length = group_by_length and not isinstance(data, torch.Tensor)
        self._order: tuple[int, torch.Tensor] | None = None  # (epoch, its order), the last asked

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._order is not None and self._order[0] == epoch:
            return self._order[1]
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.data), generator=generator)
        if self.group_by_length:
            order = self._grouped(order, generator)
        self._order = (epoch, order)
        return order

    def _grouped(self, order: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``order`` cut into groups of ``LENGTH_GROUP_BATCHES`` batches, each group sorted by
        length and its batches shuffled."""
        size = self.batch_size
        lengths = torch.tensor([len(self.data[i].input_ids) for i in order.tolist()])
        pieces = []
        for start in range(0, len(order), LENGTH_GROUP_BATCHES * size):
            end = min(start + LENGTH_GROUP_BATCHES * size, len(order))
            members = order[start:end][lengths[start:end].argsort(descending=True, stable=True)]
            batches = list(members.split(size))
            whole = len(members) // size  # a last partial batch stays last (no step reads it)
            pieces += [batches[i] for i in torch.randperm(whole, generator=generator).tolist()]
            pieces += batches[whole:]
        return torch.cat(pieces)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of optimizer step ``step`` (0-based): input_ids, labels, attention_mask."""
        epoch, index = divmod(step, self.steps_per_epoch)
        rows = self._permutation(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        if isinstance(self.data, torch.Tensor):
            ids = self.data[rows]
            return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
        examples = [self.data[i] for i in rows.tolist()]
        width = max(len(e.input_ids) for e in examples)
        ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example.input_ids)
            ids[row, :n] = torch.tensor(example.input_ids)
            labels[row, :n] = torch.tensor(example.labels)
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    def mean_tokens_per_step(self) -> float:
        """Average number of input tokens per step (exact for CPT)."""
        if isinstance(self.data, torch.Tensor):
            return float(self.batch_size * self.data.shape[1])
        total = sum(len(e.input_ids) for e in self.data)
        return total / len(self.data) * self.batch_size


def split_batch(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    """Cut a batch into ``parts`` micro-batches for gradient accumulation."""
    size = batch["input_ids"].shape[0] // parts
    return [{k: v[i * size : (i + 1) * size] for k, v in batch.items()} for i in range(parts)]
