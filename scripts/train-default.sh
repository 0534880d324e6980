#!/usr/bin/env bash
# Retrains the committed default bundle (models/default) on the MSL train and validation splits
# with the probe recipe (configs/probe.json: frozen ImageNet EfficientNet-Lite0 at 128 px and a
# logit-adjusted linear probe; chosen on the development protocol, docs/RESULTS.md), with the
# recipe's protocol figures (docs/protocol/lite0-128.json) in the model card, then adds its int8
# graphs.
# usage: MSL_DATA=/path/to/msl-v1 scripts/train-default.sh [--device auto|cpu|cuda]
set -Eeuo pipefail
trap 'echo "error: $0: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
: "${MSL_DATA:?set MSL_DATA to the MSL dataset root (the folder holding calibrated/ and the split files)}"
source scripts/env.sh  # also sets TRIAGE_WEIGHTS, the ImageNet weights --pretrained reads
[ -x "$TRIAGE_VENV/bin/python" ] || scripts/setup.sh
cargo build --release -p host-trainer -p onboard
"$CARGO_TARGET_DIR/release/host-trainer" train --data "$MSL_DATA" --config configs/probe.json \
  --protocol docs/protocol/lite0-128.json \
  --train-split train-calibrated-shuffled.txt --train-split val-calibrated-shuffled.txt \
  --val-split none --out models/default --work runs/default "$@"
# Int8 graphs (calibrated on the first 256 training images), every precision measured on the
# validation split (which this bundle was trained on: the card says so) and the default chosen.
"$CARGO_TARGET_DIR/release/host-trainer" quantize --bundle models/default --data "$MSL_DATA"
