#!/usr/bin/env bash
# Regenerates every shipped result computed on data/checkpoints/resnet56.pt, then re-executes notebooks
# 00-04, which read them. Run it after replacing that checkpoint: notebook 04 checks that its results were
# computed on the shipped file (recorded checkpoint accuracy against the file's metadata), so stale results
# fail the tests. The commands repeat the settings recorded in each result file; on this 2-core CPU the
# whole script takes well over an hour (TVSPrune alone about 50 min of CPU time). DEVICE=cuda evaluates
# on a GPU where there is one (DFPC's latencies are always measured on the CPU).
#
# Usage: scripts/refresh_resnet56_results.sh [python]        (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
DEVICE=${DEVICE:-cpu}
step() { echo "== $(date +%H:%M:%S) $*"; }

step "TVSPrune (notebook 04)"
"$PY" scripts/tvsprune_experiments.py --model resnet56 --device "$DEVICE"
step "LDIFF sensitivity (notebook 03)"
"$PY" scripts/ldiff_experiment.py resnet56 resnet20 --out data/results/ldiff_resnet56_resnet20.json
step "DFPC curves (notebook 02)"
DFPC=(scripts/dfpc_experiments.py --model resnet56 --test-subset 2000 --step-fraction 0.04 --device "$DEVICE")
"$PY" "${DFPC[@]}" --stop-drop 25 --finetune-epochs 0 --latency-repeats 10
"$PY" "${DFPC[@]}" --stop-drop 25 --methods "DFPC (coupled),L1" --finetune-epochs 1 --latency-every 100 \
      --latency-repeats 3 --out data/results/dfpc_resnet56_finetune.json
"$PY" "${DFPC[@]}" --stop-drop 10 --methods "DFPC (coupled),L1" --align 8 --finetune-epochs 0 --latency-repeats 5 \
      --out data/results/dfpc_resnet56_align8.json
step "notebooks"
for nb in notebooks/0[0-4]_*.ipynb; do
  step "$nb"
  JUPYTER_PREFER_ENV_PATH=1 PATH="$(dirname "$PY"):$PATH" "$PY" -m jupyter nbconvert --to notebook --execute \
    --ExecutePreprocessor.timeout=-1 --ExecutePreprocessor.kernel_name=python3 --inplace "$nb"
done
step "done: read git diff data/results notebooks, and fix any check or sentence the new numbers change"
