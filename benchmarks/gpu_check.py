"""The checks of ``benchmarks/gpu_check.sh``, one subcommand each, each judged on its own.

``prepare`` makes the two models on the device: the correctness model (``builtin:tiny``,
pretrained here or found in the cache) and the speed model, SmolLM2-135M's architecture with
random weights (seeded) and the correctness model's tokenizer, saved as a model folder; no hub
is reached. Each check then runs the benchmark script that compares learnforget with the tool a
user would otherwise use, writes one JSON file (``<check>_<suffix>.json``: the status, what was
judged, the raw results) and prints one line, ``<check>: PASS|FAIL …``:

- ``train_throughput``: learnforget's loop against ``Trainer`` + PEFT on the speed model,
  bf16-mixed (``train_throughput.py``); goal ≥ 1.2× for every method, same losses.
- ``choice_scoring``: learnforget's scorer against lm-eval's ``HFLM.loglikelihood`` in bfloat16
  (``choice_scoring.py``) on the correctness model (agreement, speed) and the speed model.
- ``generation``: learnforget's greedy ``generate`` against lm-eval's ``generate_until`` in
  bfloat16 (``generation.py``), the same two models.
- ``memory_estimate``: ``learnforget estimate`` against the peak a real ``learnforget run``
  records (``torch.cuda.max_memory_allocated`` on CUDA; ``memory_estimate.py``), speed model.
- ``micro_study``: ``learnforget run`` on a micro study (``base.device: cuda``) end to end:
  every run finished, claims and report written.

``--dry-run`` runs the same code on the CPU at toy sizes (``builtin:micro``, a two-layer model
of SmolLM2's shape): it checks that the check still runs and that both sides agree, and judges
no speed or memory goal (toy sizes on a CPU say nothing about a GPU).

    python benchmarks/gpu_check.py prepare --work DIR [--dry-run]
    python benchmarks/gpu_check.py CHECK --work DIR --results DIR --suffix cuda [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CHECKS = ("train_throughput", "choice_scoring", "generation", "memory_estimate", "micro_study")

TRAIN_GOAL = 1.2  # learnforget's tokens/s over Trainer + PEFT's, every method (issue 27)
LOSS_TOLERANCE = 0.02  # relative difference of the two sides' final losses (bf16 rounding)
CHOICE_AGREEMENT = 0.95  # share of items with the same acc and acc_norm picks (bf16 near-ties)
GENERATION_AGREEMENT = 0.8  # share of identical greedy completions (bf16 near-ties)
MEMORY_TOLERANCE = 0.10  # |recorded / estimated − 1| of every run

# SmolLM2-135M's architecture (its config.json; 134,515,008 parameters); the dry run keeps its
# shape (grouped-query attention 3:1, tied head, the 49,152-entry vocabulary) at two narrow layers.
SMOLLM2_135M = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                "max_position_embeddings": 8192, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
                "tie_word_embeddings": True, "hidden_act": "silu"}
SMOLLM2_TOY = {**SMOLLM2_135M, "hidden_size": 96, "intermediate_size": 256,
               "num_hidden_layers": 2, "num_attention_heads": 3, "num_key_value_heads": 1,
               "max_position_embeddings": 2048}


@dataclass(frozen=True)
class Sizes:
    """Everything a mode (the GPU check or its dry run) sets: models, device, sizes."""

    correctness_model: str
    speed_architecture: dict
    device: str
    dtype: str  # scoring and generation weights
    precision: str  # training
    train: dict = field(default_factory=dict)  # train_throughput.py's options
    choice: dict = field(default_factory=dict)  # choice_scoring.py's
    generation: dict = field(default_factory=dict)  # generation.py's
    memory: dict = field(default_factory=dict)  # memory_estimate.py's
    study: dict = field(default_factory=dict)  # the micro study's settings
    judge_goals: bool = True  # speed and memory goals (never in the dry run)


CUDA = Sizes(
    correctness_model="builtin:tiny", speed_architecture=SMOLLM2_135M, device="cuda",
    dtype="bfloat16", precision="bf16-mixed",
    train={"methods": "full,lora-r8,lora-r64", "steps": 20, "batch_size": 8, "seq_len": 512},
    choice={"tasks": "source_cloze", "limit": 200, "batch_size": 32},
    generation={"tasks": "math_em,humaneval", "limit": 16, "batch_size": 16},
    memory={"methods": "full,lora-r8", "batch_size": 8, "seq_len": 512, "steps": 2},
    study={"steps": [10, 20], "batch_size": 8, "seq_len": 256, "limit": 16})
DRY = Sizes(
    correctness_model="builtin:micro", speed_architecture=SMOLLM2_TOY, device="cpu",
    dtype="float32", precision="bf16-mixed",
    train={"methods": "full,lora-r8", "steps": 3, "batch_size": 2, "seq_len": 32},
    choice={"tasks": "source_cloze", "limit": 4, "batch_size": 8},
    generation={"tasks": "math_em", "limit": 2, "batch_size": 2, "max_new_tokens": 8},
    memory={"methods": "full", "batch_size": 2, "seq_len": 32, "steps": 1},
    study={"steps": [2, 4], "batch_size": 4, "seq_len": 64, "limit": 4}, judge_goals=False)


def speed_model_folder(work: Path) -> Path:
    """Where ``prepare`` saves the speed model."""
    return work / "speed-model"


def make_speed_model(folder: Path, architecture: dict, tokenizer_folder: Path) -> int:
    """A Llama of ``architecture`` with seeded random weights and the tokenizer of
    ``tokenizer_folder``, saved to ``folder`` (float32 safetensors); its parameter count."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    special = tokenizer.eos_token_id
    config = LlamaConfig(**architecture, bos_token_id=special, eos_token_id=special,
                         pad_token_id=special)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def prepare(sizes: Sizes, work: Path) -> str:
    """Both models on this machine, and the built-in corpora the checks read (parsed once into
    the cache here, so that no check's time holds it); the summary line."""
    from learnforget.builtin import BUILTINS, builtin_folder
    from learnforget.data.code import code_documents
    from learnforget.data.english import english_documents
    from learnforget.paths import cache_dir

    start = time.perf_counter()
    name = sizes.correctness_model.split(":", 1)[1]
    cached = cache_dir() / "base" / f"{name}-{BUILTINS[name].key()}"
    if not (cached / "learnforget_pretraining.json").exists():
        print(f"{sizes.correctness_model} is not in the cache ({cached}): pretraining it here "
              "first (minutes on a CPU; carry a cache that holds it, as docs/benchmarks.md "
              "says, or give the step more time with BUDGET_prepare=300)", flush=True)
    correctness = builtin_folder(name, log=lambda message: None)
    parameters = make_speed_model(speed_model_folder(work), sizes.speed_architecture,
                                  correctness)
    code_documents("train")
    english_documents("train")
    return (f"{sizes.correctness_model} ready, speed model of {parameters / 1e6:.1f}M parameters "
            f"(random weights) made, corpora read, in {time.perf_counter() - start:.0f} s")


def _options(values: dict) -> list[str]:
    return [part for key, value in values.items()
            for part in (f"--{key.replace('_', '-')}", str(value))]


def check_train_throughput(sizes: Sizes, work: Path) -> tuple[list[dict], dict]:
    """Training tokens/s, learnforget against Trainer + PEFT on the speed model."""
    import train_throughput

    results = train_throughput.main([
        "--model", str(speed_model_folder(work)), "--device", sizes.device,
        "--precision", sizes.precision, "--repeats", "1", *_options(sizes.train)])
    return judge_train(results, sizes.judge_goals), results


def judge_train(results: dict, judge_goals: bool) -> list[dict]:
    """Per method: the two sides' final losses agree; the speed goal where goals are judged."""
    verdicts = []
    for method, summary in results["methods"].items():
        loss = summary["learnforget"]["final_loss"]
        verdicts.append(_verdict(f"{method} losses agree",
                                 summary["loss_difference"] <= LOSS_TOLERANCE * abs(loss),
                                 f"|Δ final loss| {summary['loss_difference']:.2g}"))
        verdicts.append(_verdict(f"{method} ≥ {TRAIN_GOAL}× Trainer + PEFT",
                                 summary["ratio"] >= TRAIN_GOAL if judge_goals else None,
                                 f"{summary['ratio']:.2f}×"))
    return verdicts


def _scoring_runs(script, sizes: Sizes, work: Path, options: dict) -> dict:
    """The benchmark ``script`` on the correctness model and on the speed model."""
    common = ["--device", sizes.device, "--dtype", sizes.dtype, "--repeats", "1"]
    return {"correctness": script.main(["--model", sizes.correctness_model, *common,
                                        *_options(options)]),
            "speed": script.main(["--model", str(speed_model_folder(work)), *common,
                                  *_options(options)])}


def check_choice_scoring(sizes: Sizes, work: Path) -> tuple[list[dict], dict]:
    """Multiple-choice scoring against lm-eval: agreement and items/s on both models."""
    import choice_scoring

    options = {"threads": 1, "lm_eval_batch_size": sizes.choice["batch_size"], **sizes.choice}
    results = _scoring_runs(choice_scoring, sizes, work, options)
    return judge_choice(results), results


def judge_choice(results: dict) -> list[dict]:
    """On the correctness model, each task's picks agree on ``CHOICE_AGREEMENT`` of the items;
    every ratio is reported (no speed goal is set for a GPU)."""
    verdicts = []
    for model, run in results.items():
        for task, entry in run["tasks"].items():
            same = 1 - len(entry["differing_items"]) / entry["items"]
            ratio = next(iter(entry["threads"].values()))["ratio"]
            verdicts.append(_verdict(
                f"{model} model {task} picks agree",
                same >= CHOICE_AGREEMENT if model == "correctness" else None,
                f"{same:.0%} of {entry['items']} items, max |Δll| "
                f"{entry['max_ll_difference']:.1e}, {ratio:.2f}× lm-eval"))
    return verdicts


def check_generation(sizes: Sizes, work: Path) -> tuple[list[dict], dict]:
    """Greedy generation against lm-eval: identical completions and speed on both models."""
    import generation

    results = _scoring_runs(generation, sizes, work, sizes.generation)
    return judge_generation(results), results


def judge_generation(results: dict) -> list[dict]:
    """On the correctness model, ``GENERATION_AGREEMENT`` of each task's completions are the
    same string; every ratio is reported."""
    verdicts = []
    for model, run in results.items():
        for task, entry in run["tasks"].items():
            same = 1 - len(entry["differing"]) / entry["prompts"]
            verdicts.append(_verdict(
                f"{model} model {task} completions agree",
                same >= GENERATION_AGREEMENT if model == "correctness" else None,
                f"{same:.0%} of {entry['prompts']} prompts, {entry['ratio']:.2f}× lm-eval"))
    return verdicts


def check_memory_estimate(sizes: Sizes, work: Path) -> tuple[list[dict], dict]:
    """``learnforget estimate`` against the peak of a real ``learnforget run``."""
    import memory_estimate

    results = memory_estimate.main([
        "--model", str(speed_model_folder(work)), "--device", sizes.device,
        "--precision", sizes.precision, *_options(sizes.memory)])
    return judge_memory(results, sizes.judge_goals), results


def judge_memory(results: dict, judge_goals: bool) -> list[dict]:
    """Each run recorded a peak; within ``MEMORY_TOLERANCE`` of its estimate where judged."""
    verdicts = []
    for run in results["runs"]:
        verdicts.append(_verdict(f"{run['method']} peak recorded", run["recorded_mb"] > 0,
                                 f"{run['recorded_mb']:.0f} MiB"))
        verdicts.append(_verdict(
            f"{run['method']} estimate within {MEMORY_TOLERANCE:.0%}",
            abs(run["difference"]) <= MEMORY_TOLERANCE if judge_goals else None,
            f"estimated {run['estimated_mb']:.0f} MiB, recorded/estimated "
            f"{run['difference']:+.1%}"))
    return verdicts


def micro_study(sizes: Sizes) -> dict:
    """The micro study: code CPT on the correctness model, full finetuning and LoRA r=8."""
    study = sizes.study
    return {"name": "micro-check", "base": {"model": sizes.correctness_model,
                                            "device": sizes.device},
            "target": {"domain": "code", "regime": "cpt"},
            "methods": [{"kind": "full", "lr": [1e-3]},
                        {"kind": "lora", "r": [8], "targets": ["all"], "lr": [3e-3]}],
            "training": {"batch_size": study["batch_size"], "seq_len": study["seq_len"]},
            "budgets": {"steps": study["steps"]},
            "evaluation": {"limit": study["limit"], "batch_size": 16}, "workers": 1}


def check_micro_study(sizes: Sizes, work: Path) -> tuple[list[dict], dict]:
    """``learnforget run`` on the micro study; its runs, measurements, claims and report."""
    import yaml

    from learnforget.store import Store

    study_file, out = work / "micro-study.yaml", work / "micro-study"
    study_file.write_text(yaml.safe_dump(micro_study(sizes)))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "learnforget", "run", str(study_file),
                           "--out", str(out)], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
    results: dict = {"study": micro_study(sizes), "exit_status": done.returncode,
                     "seconds": seconds, "runs": {}, "measurements": 0}
    store_path = next(out.glob("**/results.sqlite"), None)
    if store_path is not None:
        store = Store(store_path)
        try:
            results["runs"] = {run["run_id"]: run["status"] for run in store.runs()}
            measurements = store.measurements()
        finally:
            store.close()
        results["measurements"] = len(measurements)
        results["peak_memory_mb"] = max((row["value"] for row in measurements
                                         if (row["task"], row["metric"])
                                         == ("train", "peak_memory_mb")), default=0.0)
        folder = store_path.parent
        results["claims"] = (folder / "claims.json").is_file()
        results["report"] = any((folder / "report").glob("*.html"))
    return judge_study(results), results


def judge_study(results: dict) -> list[dict]:
    """The run exited 0, every run finished, the measurements, claims and report exist."""
    runs = results["runs"]
    finished = sum(status == "finished" for status in runs.values())
    return [_verdict("learnforget run exited 0", results["exit_status"] == 0,
                     f"{results['seconds']:.0f} s"),
            _verdict("every run finished", bool(runs) and finished == len(runs),
                     f"{finished} of {len(runs)} runs, {results['measurements']} measurements, "
                     f"peak {results.get('peak_memory_mb', 0):.0f} MiB"),
            _verdict("claims and report written",
                     bool(results.get("claims") and results.get("report")),
                     "claims.json, report/*.html")]


def _verdict(what: str, passed: bool | None, value: str) -> dict:
    """One judged point; ``passed`` None: reported, not judged."""
    return {"what": what, "passed": passed, "value": value}


def status_of(verdicts: list[dict]) -> str:
    """PASS when no judged point failed (and at least one was judged), else FAIL."""
    judged = [v["passed"] for v in verdicts if v["passed"] is not None]
    return "PASS" if judged and all(judged) else "FAIL"


def summary_line(check: str, verdicts: list[dict], seconds: float) -> str:
    """``<check>: PASS|FAIL (N s)`` and every point: ``ok``, ``FAILED`` or ``info``."""
    mark = {True: "ok", False: "FAILED", None: "info"}
    points = "; ".join(f"{v['what']}: {v['value']} [{mark[v['passed']]}]" for v in verdicts)
    return f"{check}: {status_of(verdicts)} ({seconds:.0f} s) {points}"


RUNNERS = {"train_throughput": check_train_throughput, "choice_scoring": check_choice_scoring,
           "generation": check_generation, "memory_estimate": check_memory_estimate,
           "micro_study": check_micro_study}


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("prepare", *CHECKS))
    parser.add_argument("--work", required=True, help="the models and the study go here")
    parser.add_argument("--results", help="the check's JSON goes here")
    parser.add_argument("--suffix", default="cuda", help="the JSON is <check>_<suffix>.json")
    parser.add_argument("--budget", type=float, default=None,
                        help="the check's time limit (recorded; gpu_check.sh enforces it)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, no goals")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one check (or ``prepare``), write its JSON, print its line; 0 when it passed."""
    args = _parse_args(argv)
    sizes = DRY if args.dry_run else CUDA
    work = Path(args.work)
    from learnforget.quiet import quiet_warnings

    quiet_warnings()
    if args.check == "prepare":
        print(f"prepare: {prepare(sizes, work)}")
        return 0
    start = time.perf_counter()
    verdicts, results = RUNNERS[args.check](sizes, work)
    seconds = time.perf_counter() - start
    line = summary_line(args.check, verdicts, seconds)
    if args.results:
        record = {"check": args.check, "status": status_of(verdicts), "seconds": seconds,
                  "budget_s": args.budget, "dry_run": args.dry_run, "verdicts": verdicts,
                  "summary": line, "results": results}
        path = Path(args.results) / f"{args.check}_{args.suffix}.json"
        path.write_text(json.dumps(record, indent=2, default=str))
    print(line)
    return 0 if status_of(verdicts) == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
