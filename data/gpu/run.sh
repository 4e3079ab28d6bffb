#!/usr/bin/env bash
# On a lent GPU machine (issue 20; assistant/lab/train/gpu.py says what travels): unpack the corpus shards
# from gpu/, train RECIPE there, ship the run and write it to OUT as run.tar.000, .001, … (16 MiB at most each).
# Here first: rustle gpu-pack --out gpu   (then the device call carries ["gpu"]), and afterwards:
#   rustle gpu-receive /work/.device/…/run.tar.* --to runs/gpu
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
"$py" -m assistant.lab.train.gpu unpack "${GPU_DIR:-gpu}" "$corpus"
mkdir -p "$run" "$out"
"$py" -m assistant.cli train --config "$recipe" "$@" 2>&1 | tee "$run/train.log"
"$py" -m assistant.lab.train.gpu export "$recipe" "$out" --part-bytes "${PART_BYTES:-15728640}"
