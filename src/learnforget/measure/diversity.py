"""Generation diversity at a checkpoint: several sampled completions per fixed prompt.

The paper samples HumanEval solutions and counts how many distinct outputs each method keeps
(full finetuning collapses more). Prompts: HumanEval for code studies on real models, held-out
problems / docstring prompts in the tiny world, held-out prompts of custom IFT data.
"""

from __future__ import annotations

from learnforget.measure.diversity_scores import diversity_summary
from learnforget.study import EvaluationSpec, TargetSpec


def diversity_prompts(target: TargetSpec, n: int, benchmark_code: bool = False) -> list[str]:
    """``n`` fixed prompts from the target domain's held-out data."""
    if target.domain == "code" and benchmark_code:
        from learnforget.measure.humaneval import load_humaneval

        return [item.prompt for item in load_humaneval(limit=n, seed=0)]
    if target.domain == "code":
        from learnforget.data.code import code_ift_pairs

        return [p.prompt for p in code_ift_pairs("heldout")[:n]]
    if target.domain == "math":
        from learnforget.data.math import math_ift_pairs

        return [p.prompt for p in math_ift_pairs("test", n, 0)]
    from learnforget.data.target import load_target

    data = load_target(target)
    prompts = [p.prompt for p in data.heldout_pairs] or [d[:400] for d in data.heldout_documents]
    return prompts[:n]


def measure_diversity(model, tokenizer, prompts: list[str], spec: EvaluationSpec
                      ) -> tuple[dict[str, float], list[list[str]]]:
    """(diversity summary, the samples) of ``spec.diversity_samples`` completions per prompt
    at temperature ``spec.diversity_temperature`` (top-p 0.95), seeded."""
    from learnforget.measure.generation import generate

    samples = generate(
        model, tokenizer, prompts, max_new_tokens=spec.diversity_max_new_tokens,
        stop=("\n\n\n", "Question:"), do_sample=True, temperature=spec.diversity_temperature,
        top_p=0.95, num_return_sequences=spec.diversity_samples,
        batch_size=max(1, spec.batch_size // spec.diversity_samples), seed=0,
    )
    return diversity_summary(samples), samples
