#!/usr/bin/env bash
# Builds the size-optimized, stripped `onboard` for the aarch64 rover-analog board and prints
# its size. Output: $CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release-small/onboard
set -Eeuo pipefail
trap 'echo "error: $0: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh --board-only
cargo build --profile release-small -p onboard --target aarch64-unknown-linux-gnu
bin="$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release-small/onboard"
bytes=$(stat -c %s "$bin")
echo "{\"binary\": \"$bin\", \"bytes\": $bytes, \"mib\": $(python3 -c "print(round($bytes / 1048576, 2))")}"
