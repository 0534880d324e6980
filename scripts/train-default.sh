#!/usr/bin/env bash
# Retrains the committed default bundle (models/default) from the MSL train split.
# usage: MSL_DATA=/path/to/msl-v1 scripts/train-default.sh [--device auto|cpu|cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MSL_DATA:?set MSL_DATA to the MSL dataset root (the folder holding calibrated/ and the split files)}"
source scripts/env.sh
[ -x "$TRIAGE_VENV/bin/python" ] || scripts/setup.sh
cargo build --release -p host-trainer -p onboard
"$CARGO_TARGET_DIR/release/host-trainer" train --data "$MSL_DATA" --config configs/default.json \
  --out models/default --work runs/default "$@"
