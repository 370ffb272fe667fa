"""Multiple-choice scoring: learnforget against lm-evaluation-harness's ``HFLM``.

Both sides score the same model object (loaded once) on the same items of ARC-Challenge,
HellaSwag and WinoGrande, or of any choice task of the registry (``--tasks source_cloze``: the
built-in cloze, no data package needed), the seeded subsets ``learnforget eval --limit N``
takes: learnforget
with ``choice_loglikelihoods`` (the scorer behind ``eval``: shared contexts scored once), lm-eval
with ``HFLM.loglikelihood`` on the (context, continuation) requests its task configs build
(``choice_requests`` / ``winogrande_requests`` restate them). Per item, acc (argmax of the
log-likelihood) and acc_norm (argmax per character of the choice) must be the same on both
sides; any item that differs is listed. Timing: items/s, median of ``--repeats``, alternating
which side goes first, at each thread count of ``--threads``.

    python benchmarks/choice_scoring.py --model smollm2-135m-instruct-gguf --limit 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profiling import print_profiles, profile_call  # noqa: E402
from train_throughput import machine, run_and_report  # noqa: E402

TASKS = ("arc_challenge", "hellaswag", "winogrande")


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct-gguf")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--limit", type=int, default=40, help="items per task")
    parser.add_argument("--threads", default="1,2", help="torch thread counts to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8, help="learnforget's batch")
    parser.add_argument("--lm-eval-batch-size", type=int, default=8, help="HFLM's batch")
    parser.add_argument("--profile", action="store_true",
                        help="also run each side once under torch.profiler at the first thread "
                             "count: the work each does (GFLOP) and where its time goes")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="the model's weights on both sides (bfloat16 on a GPU)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser.parse_args(argv)


def _requests(task: str, items: list) -> tuple[list[tuple[str, str]], list[tuple[int, int]]]:
    """Every item's (context, continuation) requests, flat, and each item's (start, count)."""
    from learnforget.measure.benchmarks import choice_requests, winogrande_requests

    flat, spans = [], []
    for item in items:
        requests = winogrande_requests(item) if task == "winogrande" else choice_requests(item)
        spans.append((len(flat), len(requests)))
        flat.extend(requests)
    return flat, spans


def _predictions(task: str, items: list, lls: list[float], spans) -> list[tuple[int, int]]:
    """Per item (acc prediction, acc_norm prediction); WinoGrande's acc_norm is its acc."""
    out = []
    for item, (start, count) in zip(items, spans, strict=True):
        scores = lls[start:start + count]
        acc = scores.index(max(scores))
        if task == "winogrande":
            out.append((acc, acc))
            continue
        normed = [s / len(choice) for s, choice in zip(scores, item.choices, strict=True)]
        out.append((acc, normed.index(max(normed))))
    return out


def score_learnforget(model, tokenizer, task: str, items: list, batch_size: int) -> list[float]:
    """Log-likelihood of every request with learnforget's scorer (an item's requests grouped,
    as ``learnforget eval`` groups them)."""
    from learnforget.measure.multiple_choice import request_loglikelihoods

    flat, spans = _requests(task, items)
    groups = [list(range(start, start + count)) for start, count in spans]
    return [ll for ll, _ in request_loglikelihoods(model, tokenizer, flat, groups, batch_size)]


def score_lm_eval(lm, task: str, items: list) -> list[float]:
    """Log-likelihood of every request with lm-eval's ``HFLM.loglikelihood``."""
    from lm_eval.api.instance import Instance

    flat, _ = _requests(task, items)
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
                for i, pair in enumerate(flat)]
    return [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]


def benchmark(args: argparse.Namespace) -> dict:
    """Both sides on every task and thread count; predictions compared item by item."""
    import torch
    from lm_eval.models.huggingface import HFLM

    from learnforget.base import load_for_eval
    from learnforget.measure.inference import context_length
    from learnforget.measure.multiple_choice import encode_requests
    from learnforget.measure.shared_context import positions_fed
    from learnforget.measure.tasks import load_items
    from learnforget.study import BaseModelSpec

    loaded = load_for_eval(BaseModelSpec(model=args.model, device=args.device,
                                          dtype=args.dtype), log=lambda m: None)
    model, tokenizer = loaded.model, loaded.tokenizer
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.lm_eval_batch_size,
              max_length=getattr(model.config, "max_position_embeddings", None))
    results: dict = {"machine": machine(), "model": args.model, "limit": args.limit,
                     "device": args.device, "dtype": args.dtype,
                     "repeats": args.repeats, "tasks": {},
                     "profile_threads": int(args.threads.split(",")[0])}
    for task in args.tasks.split(","):
        items = load_items(task, args.limit, 0)
        _, spans = _requests(task, items)
        sides = {"learnforget": lambda t=task, it=items: score_learnforget(
                     model, tokenizer, t, it, args.batch_size),
                 "lm-eval": lambda t=task, it=items: score_lm_eval(lm, t, it)}
        loglikelihoods = {}
        entry: dict = {"items": len(items), "threads": {}}
        plain, grouped = positions_fed(encode_requests(tokenizer, _requests(task, items)[0]),
                                       [list(range(start, start + count))
                                        for start, count in spans],
                                       context_length(model, tokenizer))
        entry["positions"] = {"lm-eval": plain, "learnforget": grouped}
        predictions = {}
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            times: dict[str, list[float]] = {name: [] for name in sides}
            for repeat in range(args.repeats):
                order = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
                for name in order:
                    start = time.perf_counter()
                    lls = sides[name]()
                    times[name].append(time.perf_counter() - start)
                    predictions[name] = _predictions(task, items, lls, spans)
                    loglikelihoods[name] = lls
            rate = {name: len(items) / statistics.median(t) for name, t in times.items()}
            entry["threads"][threads] = {"items_per_s": rate,
                                         "ratio": rate["learnforget"] / rate["lm-eval"]}
        if args.profile:
            torch.set_num_threads(int(args.threads.split(",")[0]))
            entry["profile"] = {name: profile_call(side) for name, side in sides.items()}
        entry["max_ll_difference"] = max(abs(a - b) for a, b in zip(
            loglikelihoods["learnforget"], loglikelihoods["lm-eval"], strict=True))
        ours, theirs = predictions["learnforget"], predictions["lm-eval"]
        entry["differing_items"] = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
                                    if a != b]
        for side, preds in predictions.items():
            entry[side] = {"acc": sum(p[0] == it.label for p, it in zip(preds, items,
                                                                          strict=True))
                           / len(items),
                           "acc_norm": sum(p[1] == it.label for p, it in zip(preds, items,
                                                                               strict=True))
                           / len(items)}
        results["tasks"][task] = entry
    import os

    results["load_average_end"] = os.getloadavg()[0]
    return results


def print_table(results: dict) -> None:
    """One table: per task and thread count, both sides' items/s and scores, the ratio, the
    ratio of token positions each side feeds the model (what sharing the context can gain at
    most, padding aside) and, when profiled, the ratio of the arithmetic each side does; then
    the profiles."""
    print(f"model {results['model']} ({results.get('dtype', 'float32')} on "
          f"{results.get('device', 'cpu')}), {results['limit']} items per task, median of "
          f"{results['repeats']}; {results['machine']}")
    print(f"{'task':<14} {'threads':>7} {'learnforget/s':>13} {'lm-eval/s':>10} {'ratio':>6} "
          f"{'positions':>9} {'work':>6} {'acc (both)':>10} {'acc_norm':>9} {'differ':>6} "
          f"{'max |Δll|':>9}")
    for task, entry in results["tasks"].items():
        fed = entry["positions"]["lm-eval"] / entry["positions"]["learnforget"]
        profiled = entry.get("profile")
        work = (f"{profiled['lm-eval']['gflop'] / profiled['learnforget']['gflop']:.2f}×"
                if profiled else "–")
        for threads, timing in entry["threads"].items():
            rate = timing["items_per_s"]
            same = "same" if entry["learnforget"] == entry["lm-eval"] else "DIFFER"
            print(f"{task:<14} {threads:>7} {rate['learnforget']:>13.2f} {rate['lm-eval']:>10.2f} "
                  f"{timing['ratio']:>5.2f}× {fed:>8.2f}× {work:>6} "
                  f"{entry['learnforget']['acc']:>10.3f} "
                  f"{entry['learnforget']['acc_norm']:>9.3f} "
                  f"{len(entry['differing_items']) or same:>6} "
                  f"{entry['max_ll_difference']:>9.1e}")
    for task, entry in results["tasks"].items():
        if "profile" in entry:
            print_profiles(f"{task}, one pass per side under the profiler "
                           f"({results.get('profile_threads', 1)} thread):", entry["profile"])
    print(f"load average at the end: {results['load_average_end']:.1f}")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print its table, optionally write JSON."""
    return run_and_report(_parse_args(argv), benchmark, print_table)


if __name__ == "__main__":
    main(sys.argv[1:])
