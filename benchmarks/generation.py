"""Greedy generation: learnforget's batched ``generate`` against lm-eval's ``generate_until``.

Both sides decode the same prompts with the same model object: HumanEval (stopped at the Codex
stop sequences) and 8-shot GSM8K (stopped at ``Question:`` and blank lines), greedy, with the
task's generation length (``learnforget eval``'s, capped at half the model's context). The
completions must be the same string for string (any that differ are counted: batched greedy
decoding with padding may flip a near-tie); tokens/s counts the tokens of the completions as
each side returns them, median of ``--repeats``, alternating which side goes first.

    python benchmarks/generation.py --model smollm2-135m-instruct-gguf --limit 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import machine, run_and_report  # noqa: E402


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct-gguf")
    parser.add_argument("--tasks", default="humaneval,gsm8k")
    parser.add_argument("--limit", type=int, default=8, help="prompts per task")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="override the task's generation length")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8, help="both sides' batch")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="the model's weights on both sides (bfloat16 on a GPU)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser.parse_args(argv)


def benchmark(args: argparse.Namespace) -> dict:
    """Both sides on every task; completions compared one by one."""
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from learnforget.base import load_for_eval
    from learnforget.measure.evaluate import _max_new_tokens
    from learnforget.measure.generation import generate
    from learnforget.measure.tasks import get_task, load_items
    from learnforget.study import BaseModelSpec

    torch.set_num_threads(args.threads)
    loaded = load_for_eval(BaseModelSpec(model=args.model, device=args.device,
                                          dtype=args.dtype), log=lambda m: None)
    model, tokenizer = loaded.model, loaded.tokenizer
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size,
              max_length=getattr(model.config, "max_position_embeddings", None))
    results: dict = {"machine": machine(), "model": args.model, "limit": args.limit,
                     "device": args.device, "dtype": args.dtype,
                     "threads": args.threads, "repeats": args.repeats, "tasks": {}}
    for name in args.tasks.split(","):
        task = get_task(name)
        items = load_items(name, args.limit, 0)
        prompts, stop = [i.prompt for i in items], list(items[0].stop)
        new_tokens = args.max_new_tokens or _max_new_tokens(model, tokenizer, task, 256)

        def ours(prompts=prompts, stop=stop, new_tokens=new_tokens) -> list[str]:
            return [c[0] for c in generate(model, tokenizer, prompts, new_tokens, stop=stop,
                                           batch_size=args.batch_size)]

        def theirs(prompts=prompts, stop=stop, new_tokens=new_tokens) -> list[str]:
            kwargs = {"until": stop, "max_gen_toks": new_tokens, "do_sample": False}
            requests = [Instance(request_type="generate_until", doc={}, idx=i,
                                 arguments=(prompt, dict(kwargs)))
                        for i, prompt in enumerate(prompts)]
            return lm.generate_until(requests, disable_tqdm=True)

        sides = {"learnforget": ours, "lm-eval": theirs}
        times: dict[str, list[float]] = {side: [] for side in sides}
        outputs: dict[str, list[str]] = {}
        for repeat in range(args.repeats):
            order = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
            for side in order:
                start = time.perf_counter()
                outputs[side] = sides[side]()
                times[side].append(time.perf_counter() - start)
        entry: dict = {"prompts": len(prompts), "max_new_tokens": new_tokens, "sides": {}}
        for side, texts in outputs.items():
            generated = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"])
                            for t in texts)
            seconds = statistics.median(times[side])
            entry["sides"][side] = {"seconds": seconds, "tokens": generated,
                                    "tokens_per_s": generated / seconds}
        entry["differing"] = [i for i, (a, b) in enumerate(zip(
            outputs["learnforget"], outputs["lm-eval"], strict=True)) if a != b]
        entry["ratio"] = (entry["sides"]["lm-eval"]["seconds"]
                          / entry["sides"]["learnforget"]["seconds"])
        results["tasks"][name] = entry
    results["load_average_end"] = os.getloadavg()[0]
    return results


def print_table(results: dict) -> None:
    """One table: per task, both sides' tokens/s and seconds, the speed ratio, differences."""
    print(f"model {results['model']} ({results.get('dtype', 'float32')} on "
          f"{results.get('device', 'cpu')}), {results['limit']} prompts per task, greedy, "
          f"{results['threads']} thread(s), median of {results['repeats']}; {results['machine']}")
    print(f"{'task':<10} {'side':<12} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'ratio':>6} "
          f"{'differ':>6}")
    for name, entry in results["tasks"].items():
        for side, data in entry["sides"].items():
            ratio = f"{entry['ratio']:.2f}×" if side == "learnforget" else ""
            differ = str(len(entry["differing"])) if side == "learnforget" else ""
            print(f"{name:<10} {side:<12} {data['seconds']:>8.2f} {data['tokens']:>7} "
                  f"{data['tokens_per_s']:>9.1f} {ratio:>6} {differ:>6}")
    print(f"load average at the end: {results['load_average_end']:.1f}")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print its table, optionally write JSON."""
    return run_and_report(_parse_args(argv), benchmark, print_table)


if __name__ == "__main__":
    main(sys.argv[1:])
