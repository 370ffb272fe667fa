#!/usr/bin/env bash
# Every speed benchmark at full size, one after another, each table written to
# benchmarks/results/ with the load average before and after (run it on an otherwise idle
# machine: the load is part of the result).
#
#   PATH=.venv/bin:$PATH benchmarks/run_all.sh [SUFFIX]     # SUFFIX names the machine, e.g. cpu
set -uo pipefail
cd "$(dirname "$0")/.."
suffix="${1:-cpu}"
results=benchmarks/results
mkdir -p "$results"
load() { cut -d' ' -f1-3 /proc/loadavg; }

measure() {  # measure NAME COMMAND…: run COMMAND, its table to $results/NAME.txt
    local name="$1"; shift
    echo "$(date +%T) $name: $*"
    # (the profiler's own start/stop lines, "USDT:…", are left out)
    { echo "# $*"; echo "# load at the start: $(load)"
      "$@" 2>&1 | grep -v '^USDT:'; echo "# exit status ${PIPESTATUS[0]}; load at the end: $(load)"
    } > "$results/$name.txt" 2>&1
}

measure "choice_scoring_smollm2_$suffix" python benchmarks/choice_scoring.py \
    --model smollm2-135m-instruct-gguf --limit 16 --threads 1,2 --repeats 3 --profile \
    --json "$results/choice_scoring_smollm2_$suffix.json"
measure "train_throughput_smollm2_$suffix" python benchmarks/train_throughput.py \
    --model smollm2-135m-instruct-gguf --steps 3 --batch-size 2 --seq-len 128 --repeats 3 --profile \
    --json "$results/train_throughput_smollm2_$suffix.json"
measure "train_throughput_tiny_$suffix" python benchmarks/train_throughput.py \
    --model builtin:tiny --repeats 3 --profile --json "$results/train_throughput_tiny_$suffix.json"
measure "memory_estimate_tiny_$suffix" python benchmarks/memory_estimate.py \
    --model builtin:tiny --json "$results/memory_estimate_tiny_$suffix.json"
measure "memory_estimate_smollm2_$suffix" python benchmarks/memory_estimate.py \
    --model smollm2-135m-instruct-gguf --batch-size 4 --seq-len 128 \
    --json "$results/memory_estimate_smollm2_$suffix.json"
measure "generation_smollm2_$suffix" python benchmarks/generation.py \
    --model smollm2-135m-instruct-gguf --limit 8 --repeats 3 \
    --json "$results/generation_smollm2_$suffix.json"
measure "adamw_step_$suffix" python benchmarks/adamw_step.py --threads 1 --repeats 5
measure "spectrum_small_model_$suffix" python benchmarks/spectrum_small_model.py --threads 1 --repeats 3
out="$(mktemp -d)/demo"  # the demo's own output (progress, findings) goes to $out.log
echo "$(date +%T) demo_time_$suffix: benchmarks/demo_time.sh $out"
{ echo "# benchmarks/demo_time.sh $out (the demo's output: $out.log)"
  echo "# load at the start: $(load)"
  benchmarks/demo_time.sh "$out" > "$out.log" 2>&1; status=$?
  grep -E "^(machine|python|load|demo wall time|runs:|claims:|verdict:)" "$out.log"
  echo "# exit status $status; load at the end: $(load)"; } > "$results/demo_time_$suffix.txt"
echo "$(date +%T) done"
