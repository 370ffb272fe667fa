"""A run's checkpoint folders: the weights as transformers / PEFT write them, the state to
resume training from (``STATE_FILE``, kept for the latest checkpoint only), and reading them
back."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

STATE_FILE = "trainer_state.pt"

class CheckpointUnreadable(Exception):
    """A checkpoint to resume from could not be read (truncated, damaged, half written)."""

    def __init__(self, folder: Path, cause: Exception) -> None:
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        super().__init__(f"checkpoint {folder} is unreadable: {first}")
        self.folder = folder


def save_checkpoint(model: torch.nn.Module, tokenizer, folder: Path,
                    state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """LoRA: the adapter in PEFT's format; full: the model as safetensors (+ tokenizer).
    ``state_dict``: the whole model's weights when ``model`` holds only a shard of them (FSDP,
    DeepSpeed: gathered by ``Accelerator.get_state_dict``), so the files are the same as a
    single process writes."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"state_dict": state_dict} if state_dict is not None else {}
    model.save_pretrained(folder, safe_serialization=True, **extra)
    if tokenizer is not None and not hasattr(model, "peft_config"):
        tokenizer.save_pretrained(folder)


CHECKPOINT_CONFIGS = ("config.json", "adapter_config.json", "generation_config.json")


def check_checkpoint_configs(folder: Path) -> None:
    """Raise unless every JSON config a checkpoint holds is a JSON object: resuming loads only
    the weights, so a damaged config would otherwise be carried on silently into a folder that
    no longer loads with transformers or PEFT."""
    for name in CHECKPOINT_CONFIGS:
        path = folder / name
        if not path.exists():
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:  # not JSON, or not UTF-8
            raise ValueError(f"{name} is not JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise ValueError(f"{name} is not a JSON object")


def _take_saved_rank_pattern(model: torch.nn.Module, folder: Path) -> None:
    """AdaLoRA saves its adapters cut to the ranks it allocated (``rank_pattern`` in the saved
    config); the model takes that pattern first so the weights fit (PEFT resizes to it)."""
    path = folder / "adapter_config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text(encoding="utf-8")).get("rank_pattern")
    for config in model.peft_config.values():
        if saved and str(getattr(config, "peft_type", "")).endswith("ADALORA"):
            config.rank_pattern = saved


def load_checkpoint_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load a checkpoint written by ``save_checkpoint`` back into ``model`` (for resuming)."""
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        _take_saved_rank_pattern(model, folder)
        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
        return
    state = {}
    for shard in sorted(folder.glob("model*.safetensors")):
        state.update(load_file(shard))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise RuntimeError(f"checkpoint {folder} does not match the model: {missing} {unexpected}")
