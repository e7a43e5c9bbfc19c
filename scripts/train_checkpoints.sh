#!/usr/bin/env bash
# Trains the shipped CIFAR-10 checkpoints one after another, resuming where a previous run stopped.
# Usage: scripts/train_checkpoints.sh [python]   (log: data/runs/train.log)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
mkdir -p data/runs
for spec in "resnet20 80" "resnet56 100"; do
  set -- $spec
  [ -f "data/checkpoints/$1.pt" ] && continue
  "$PY" -m pruning_lib.train --arch "$1" --epochs "$2" --out "data/checkpoints/$1.pt"
done
