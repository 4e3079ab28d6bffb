#!/usr/bin/env bash
# On a lent GPU machine (issue 20; assistant/lab/train/gpu.py says what travels): unpack what gpu/ holds (corpus
# shards, or a run's packed token files), check the Triton kernels against PyTorch's paths on the recipe's starting
# model (PyTorch's paths then, where they disagree or are slower, or where the Triton run fails), train RECIPE
# there, ship the run and write it to OUT as run.tar.000, .001, … (16 MiB at most each), with check.log, train.log
# and metrics.jsonl.
# Here first: rustle train --config RECIPE --pack-only; rustle gpu-pack --tokens RUN/tokens --out gpu
# (or from the corpus: rustle gpu-pack --out gpu);
# the device call carries ["gpu"]; afterwards: rustle gpu-receive /work/.device/…/run.tar.* --to runs/gpu
# TRAIN_SECONDS, where set, is the training's wall-clock budget, a fallback run's included (--max-seconds).
# Usage: data/gpu/run.sh RECIPE OUT [rustle train options, e.g. --max-steps 20 to probe the throughput]
set -euo pipefail
recipe=$1 out=$2
shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-python3}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G "${GPU_DIR:-gpu}/wheels/*.whl" > /dev/null; then   # what the machine lacks (gpu-pack fetched it)
  "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/rustle-site "${GPU_DIR:-gpu}"/wheels/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/rustle-site"
fi
read -r corpus run < <("$py" -c '
import sys, tomllib
recipe = tomllib.load(open(sys.argv[1], "rb"))
print(recipe.get("corpus", "corpus"), recipe["out"])' "$recipe")
"$py" -m assistant.lab.train.gpu unpack "${GPU_DIR:-gpu}" "$corpus" "$run/tokens"
mkdir -p "$run" "$out"
check() { timeout 180 "$py" -m assistant.lab.train.gpu check "$recipe" 2>&1 | tee "$out/check.log"; }
if [ "${RUSTLE_TRITON:-1}" != 0 ] && ! check; then
  echo "the Triton kernels disagree with PyTorch's paths, are slower, or failed: training on PyTorch's paths" | tee -a "$out/check.log"
  export RUSTLE_TRITON=0
fi
started=$SECONDS
train() {   # train [options]: the recipe, within what is left of TRAIN_SECONDS
  local budget=()
  [ -n "${TRAIN_SECONDS:-}" ] && budget=(--max-seconds $((TRAIN_SECONDS - (SECONDS - started))))
  "$py" -m assistant.cli train --config "$recipe" "${budget[@]}" "$@" 2>&1 | tee "$run/train.log"
}
if ! train "$@"; then
  [ "${RUSTLE_TRITON:-1}" != 0 ] || exit 1
  echo "the run failed on the Triton kernels: again on PyTorch's paths"
  rm -rf "$run/checkpoint" "$run/metrics.jsonl"
  RUSTLE_TRITON=0 train "$@"
fi
cp "$run/train.log" "$run/metrics.jsonl" "$out/"
"$py" -m assistant.lab.train.gpu export "$recipe" "$out" --part-bytes "${PART_BYTES:-15728640}"
