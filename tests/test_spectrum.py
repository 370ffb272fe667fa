"""ΔW spectrum and intruder dimensions on planted answers and real tiny PEFT models."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from learnforget.errors import UserError
from learnforget.measure.intruders import count_intruders, intruder_sweep, max_base_similarity
from learnforget.measure.spectrum import (
    random_baseline,
    rank_for_variance,
    spectrum,
    spectrum_between,
    spectrum_json,
)
from learnforget.measure.weight_change import (
    changed_matrices,
    lora_tuned_weights,
    normalize_name,
    parse_layer_and_module,
)

torch.set_num_threads(1)

LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_llama(hidden: int = 64, layers: int = 2, intermediate: int = 128) -> LlamaForCausalLM:
    """A random-init Llama with the given sizes (4 heads, vocab 256)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An independent copy of a model's weights."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_adapters(model: torch.nn.Module, seed: int = 1) -> None:
    """Stand-in for training: add random non-zero values to every LoRA A and B (and DoRA m)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def planted_state(kind: str, seed: int = 0) -> tuple[dict, dict]:
    """Base and tuned states with a 128×128 and a 512×128 weight; ΔW is rank 5 or Gaussian."""
    generator = torch.Generator().manual_seed(seed)
    base, tuned = {}, {}
    for name, (rows, cols) in {
        "model.layers.0.self_attn.q_proj.weight": (128, 128),
        "model.layers.0.mlp.up_proj.weight": (512, 128),
    }.items():
        base[name] = torch.randn(rows, cols, generator=generator)
        if kind == "rank5":
            delta = torch.randn(rows, 5, generator=generator) @ torch.randn(
                5, cols, generator=generator
            )
        else:
            delta = torch.randn(rows, cols, generator=generator)
        tuned[name] = base[name] + 0.01 * delta
    base["model.norm.weight"] = tuned["model.norm.weight"] = torch.ones(128)
    return base, tuned


def test_rank_for_variance_on_known_spectrum() -> None:
    values = torch.tensor([4.0, 3.0, 2.0, 1.0])
    # σ² = 16, 9, 4, 1 (total 30): 90% = 27 is first reached by 16+9+4 = 29 -> k = 3.
    assert rank_for_variance(values, 0.9, power=2) == 3
    # σ = 4, 3, 2, 1 (total 10): 90% = 9 is first reached by 4+3+2 = 9 -> k = 3; 50% -> k = 2.
    assert rank_for_variance(values, 0.9, power=1) == 3
    assert rank_for_variance(values, 0.5, power=1) == 2
    assert rank_for_variance(values, 0.5, power=2) == 1
    assert rank_for_variance(torch.zeros(5)) == 0


def test_planted_rank5_delta_needs_at_most_5() -> None:
    base, tuned = planted_state("rank5")
    pairs = changed_matrices(base, tuned)
    assert set(pairs) == {
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
    }
    for item in spectrum(pairs):
        assert 1 <= item.rank90 <= 5
        assert item.rank90_sigma <= 5
        assert item.random_rank90 > 50


def test_planted_gaussian_delta_matches_random_baseline() -> None:
    base, tuned = planted_state("gaussian")
    for item in spectrum(changed_matrices(base, tuned)):
        assert abs(item.rank90 - item.random_rank90) <= 0.05 * item.random_rank90
        assert abs(item.rank90_sigma - item.random_rank90_sigma) <= 0.05 * item.random_rank90_sigma


def test_random_baseline_is_reproducible_and_scale_free() -> None:
    first = random_baseline((512, 128), fro_norm=1.0, threshold=0.9, seed=3)
    assert random_baseline((512, 128), fro_norm=1.0, threshold=0.9, seed=3) == first
    assert random_baseline((128, 512), fro_norm=50.0, threshold=0.9, seed=3) == first
    rank_sq, rank_abs = first
    assert 0 < rank_sq < rank_abs <= 128


def test_names_layers_and_json() -> None:
    assert normalize_name("base_model.model.model.layers.1.mlp.down_proj.base_layer.weight") == (
        "model.layers.1.mlp.down_proj.weight"
    )
    assert parse_layer_and_module("model.layers.3.mlp.gate_proj.weight") == (3, "gate_proj")
    assert parse_layer_and_module("model.norm_proj.weight") == (None, "norm_proj")
    base, tuned = planted_state("rank5")
    rows = spectrum_json(spectrum(changed_matrices(base, tuned)))
    assert rows[0]["shape"] == [128, 128] and rows[0]["layer"] == 0
    assert {"name", "shape", "rank90", "random_rank90", "intruders"} <= set(rows[0])
    assert len(rows[0]["singular_values"]) == 128


def test_changed_matrices_skips_embeddings_and_matches_backbone_names() -> None:
    base = {
        "model.embed_tokens.weight": torch.zeros(8, 4),
        "model.layers.0.mlp.up_proj.weight": torch.zeros(4, 4),
    }
    tuned = {
        "embed_tokens.weight": torch.ones(8, 4),
        "layers.0.mlp.up_proj.weight": torch.ones(4, 4),
    }
    assert list(changed_matrices(base, tuned)) == ["model.layers.0.mlp.up_proj.weight"]
    assert len(changed_matrices(base, tuned, include_embeddings=True)) == 2
    assert changed_matrices(base, tuned, atol=2.0) == {}
    with pytest.raises(UserError):
        changed_matrices(base, {"x.lora_A.default.weight": torch.ones(2, 2)})


def test_no_intruders_without_change_and_one_for_planted_direction() -> None:
    generator = torch.Generator().manual_seed(0)
    w_base = torch.randn(128, 64, generator=generator)
    assert count_intruders(w_base, w_base.clone()) == 0
    u, s, vh = torch.linalg.svd(w_base, full_matrices=False)
    # A direction orthogonal to every left singular vector of W_base (its column space).
    x = torch.randn(128, generator=generator)
    x = x - u @ (u.T @ x)
    new_direction = x / x.norm()
    w_tuned = w_base + 10 * s[0] * torch.outer(new_direction, vh[0])
    assert count_intruders(w_base, w_tuned) >= 1
    sweep = intruder_sweep(w_base, w_tuned, k=10)
    assert sweep[0.5] >= 1 and sweep[0.1] <= sweep[0.5] <= sweep[0.9]
    item = spectrum({"m.layers.0.q_proj.weight": (w_base, w_tuned)})[0]
    assert item.intruders == count_intruders(w_base, w_tuned) and item.rank90 == 1
    assert item.intruders == sum(v < 0.5 for v in item.max_similarity)
    assert len(item.max_similarity) == 10
    torch.testing.assert_close(torch.tensor(item.base_singular_values), s, atol=1e-4, rtol=1e-5)
    skipped = spectrum({"m.layers.0.q_proj.weight": (w_base, w_tuned)}, intruder_k=0)[0]
    assert skipped.intruders is None and skipped.max_similarity == []
    assert skipped.rank90 == item.rank90


@pytest.mark.parametrize("shape", [(96, 48), (48, 96), (64, 64)])
def test_intruder_similarity_matches_direct_svd(shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(1)
    w_base = torch.randn(shape, generator=generator)
    w_tuned = w_base + 0.7 * torch.randn(shape, generator=generator)
    # Reference as in PEFT's intruder mitigation: |U_tunedᵀ U_base| maxed over base vectors.
    u_base = torch.linalg.svd(w_base, full_matrices=False)[0]
    u_tuned = torch.linalg.svd(w_tuned, full_matrices=False)[0][:, :10]
    reference = (u_tuned.T @ u_base).abs().max(dim=1).values
    torch.testing.assert_close(
        max_base_similarity(w_base, w_tuned, k=10), reference, atol=1e-4, rtol=0
    )
    assert count_intruders(w_base, w_tuned, eps=0.5) == int((reference < 0.5).sum())


@pytest.mark.parametrize("shape", [(96, 48), (48, 96), (64, 64)])
def test_gram_solver_agrees_with_svd(shape: tuple[int, int]) -> None:
    """The GPU default (float64 eigensolver on the Gram matrix) gives the SVD's numbers."""
    generator = torch.Generator().manual_seed(2)
    w_base = torch.randn(shape, generator=generator)
    rows, cols = shape
    planted = torch.randn(rows, 5, generator=generator) @ torch.randn(5, cols, generator=generator)
    noise = torch.randn(shape, generator=generator)
    pairs = {
        "m.layers.0.q_proj.weight": (w_base, w_base + 0.7 * noise),
        "m.layers.1.q_proj.weight": (w_base, w_base + 0.5 * planted),
        "m.layers.2.q_proj.weight": (w_base, w_base.clone()),
    }
    by_svd = spectrum(pairs, solver="svd")
    by_gram = spectrum(pairs, solver="gram")
    for svd_item, gram_item in zip(by_svd, by_gram, strict=True):
        assert gram_item.rank90 == svd_item.rank90
        assert gram_item.rank90_sigma == svd_item.rank90_sigma
        assert gram_item.intruders == svd_item.intruders
        torch.testing.assert_close(
            torch.tensor(gram_item.max_similarity),
            torch.tensor(svd_item.max_similarity),
            atol=1e-3,
            rtol=0,
        )
        torch.testing.assert_close(
            torch.tensor(gram_item.base_singular_values),
            torch.tensor(svd_item.base_singular_values),
            atol=1e-4,
            rtol=1e-4,
        )
    assert by_gram[1].rank90 <= 5 and by_gram[2].intruders == 0
    with pytest.raises(ValueError, match="solver must be one of"):
        spectrum(pairs, solver="qr")


@pytest.mark.parametrize("use_rslora", [False, True])
def test_lora_delta_rank_and_merge_equivalence(use_rslora: bool) -> None:
    model = tiny_llama()
    base_state = snapshot(model)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=LINEAR_MODULES,
        init_lora_weights=False,
        use_rslora=use_rslora,
    )
    peft_model = get_peft_model(model, config)
    pairs = lora_tuned_weights(peft_model, base_state)
    assert len(pairs) == 2 * len(LINEAR_MODULES)
    merged = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    for name, (original, tuned) in pairs.items():
        assert torch.equal(original, base_state[name])
        torch.testing.assert_close(tuned, merged[name], atol=1e-6, rtol=0)
    spectra = spectrum(pairs)
    assert {s.module for s in spectra} == set(LINEAR_MODULES)
    assert all(s.rank90 <= 8 for s in spectra)
    # the PEFT model is left untouched
    assert not any(getattr(m, "merged", False) for m in peft_model.modules())


def test_dora_matches_merge_and_unload() -> None:
    model = tiny_llama()
    base_state = snapshot(model)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=LINEAR_MODULES, use_dora=True)
    peft_model = get_peft_model(model, config)
    train_adapters(peft_model)
    pairs = lora_tuned_weights(peft_model, base_state)
    merged = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert len(pairs) == 2 * len(LINEAR_MODULES)
    for name, (_, tuned) in pairs.items():
        torch.testing.assert_close(tuned, merged[name], atol=1e-6, rtol=0)
        # DoRA rescales rows, so the merged weight is not the plain base + scaled B·A
        layer = peft_model.get_submodule("base_model.model." + name.removesuffix(".weight"))
        plain = base_state[name] + layer.get_delta_weight("default")
        assert (tuned - plain).abs().max() > 1e-4


def test_pissa_delta_is_measured_against_original_weights() -> None:
    model = tiny_llama()
    base_state = snapshot(model)
    config = LoraConfig(r=8, lora_alpha=8, target_modules=LINEAR_MODULES, init_lora_weights="pissa")
    peft_model = get_peft_model(model, config)
    initial = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" in n}
    # at initialisation the effective weights are the original ones
    untrained = spectrum(lora_tuned_weights(peft_model, base_state), intruder_k=0)
    assert all(s.relative_change < 1e-5 for s in untrained)
    train_adapters(peft_model)
    pairs = lora_tuned_weights(peft_model, base_state)
    merged = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    for name, (original, tuned) in pairs.items():
        torch.testing.assert_close(tuned, merged[name], atol=1e-6, rtol=0)
        # ΔW = scale·(B·A − B₀·A₀) (scale = α/r = 1): the change from the original weight
        prefix = "base_model.model." + name.removesuffix(".weight")
        a0, b0 = (
            initial[f"{prefix}.lora_A.default.weight"],
            initial[f"{prefix}.lora_B.default.weight"],
        )
        layer = peft_model.get_submodule(prefix)
        expected = layer.get_delta_weight("default") - b0 @ a0
        torch.testing.assert_close(tuned - original, expected, atol=1e-5, rtol=0)
    # B·A − B₀·A₀ has rank at most 2r
    assert all(s.rank90 <= 16 for s in spectrum(pairs, intruder_k=0))
    # the adapter's own (residual) base weights are refused as "original"
    with pytest.raises(UserError, match="ORIGINAL"):
        lora_tuned_weights(peft_model, peft_model.state_dict())


def test_spectrum_between_full_and_peft() -> None:
    model = tiny_llama()
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        tuned.model.layers[1].mlp.down_proj.weight.add_(0.1)
    spectra = spectrum_between(model, tuned)
    assert [s.name for s in spectra] == ["model.layers.1.mlp.down_proj.weight"]
    assert spectra[0].rank90 == 1 and spectra[0].shape == (64, 128)
    base_state = snapshot(model)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)
    )
    assert len(spectrum_between(base_state, peft_model)) == 2
    with pytest.raises(UserError):
        spectrum_between(base_state)


def test_spectrum_of_small_model_covers_every_changed_matrix() -> None:
    """Every attention and MLP matrix of a 4-layer model is measured (its speed against the bare
    decompositions: benchmarks/spectrum_small_model.py)."""
    model = tiny_llama(hidden=128, layers=4, intermediate=512)
    generator = torch.Generator().manual_seed(0)
    tuned = {
        k: v + 0.01 * torch.randn(v.shape, generator=generator)
        for k, v in model.state_dict().items()
    }
    pairs = changed_matrices(model.state_dict(), tuned)
    assert len(pairs) == 4 * len(LINEAR_MODULES)
    spectra = spectrum(pairs)
    assert [s.name for s in spectra] == list(pairs)
