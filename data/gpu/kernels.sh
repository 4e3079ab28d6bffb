#!/usr/bin/env bash
# Issue 17's device check, one command on a lent GPU machine, under 8 minutes (the steps' limits add up to
# 7.3); a failing step does not stop the next. Everything it prints also goes to $OUT:
#   1. the Triton kernels' tests on CUDA (tests/test_flash.py: forward and gradients against the references);
#   2. `rustle bench kernels --device cuda`: Triton against PyTorch's SDPA, prefill and decode, 2K-128K;
#   3. `rustle bench model --device cuda`: the shipped model's shape, decode and prefill on the GPU;
#   4. `rustle complete --device cuda` in data/workspace, with the shipped model (indexing needs tree-sitter,
#      which that machine lacks: its wheel travels in gpu/wheels);
#   5. 20 training steps on CUDA (data/gpu/rustle-base.toml), where the corpus travelled in gpu/ (run.sh).
# Usage (device tool; carry ["gpu"] for step 5 after `rustle gpu-pack --out gpu`): bash data/gpu/kernels.sh "$OUT"
set -uo pipefail
out=${1:?usage: data/gpu/kernels.sh OUT}
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-python3}
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G "gpu/wheels/*.whl" > /dev/null; then      # what that machine lacks (tree-sitter), as run.sh does
  "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/rustle-site gpu/wheels/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/rustle-site"
fi
run() {   # run NAME SECONDS COMMAND…: its output on the terminal and in $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
  echo "== $name: exit ${PIPESTATUS[0]}"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$py" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' | tee -a "$out/gpu.txt"
run tests 120 "$py" -m pytest -q -p no:cacheprovider --noconftest -o addopts= tests/test_flash.py
run kernels 100 "$py" -m assistant.cli bench kernels --device cuda --contexts 2048,8192,32768,131072 --json
run model 60 "$py" -m assistant.cli bench model --device cuda --config model/checkpoints/rustle-small/config.json \
  --contexts 1024,8192,32768,131072 --twin-prefill-limit 32768 --json
run complete 45 "$py" -m assistant.cli complete --device cuda data/workspace/src/lib.rs:10:5
if [ -d gpu ]; then
  run train 110 bash data/gpu/run.sh data/gpu/rustle-base.toml "$out/run" --max-steps 20
else
  echo "== train: skipped (no gpu/ folder: run \`rustle gpu-pack --out gpu\` here and carry it)"
fi
