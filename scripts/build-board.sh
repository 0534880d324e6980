#!/usr/bin/env bash
# Builds the size-optimized, stripped `onboard` for the aarch64 rover-analog board and prints
# its size; fails when it is over the board's 8 MiB budget. Output:
# $CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release-small/onboard
set -Eeuo pipefail
trap 'echo "error: $0: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh --board-only
cargo build --profile release-small -p onboard --target aarch64-unknown-linux-gnu
bin="$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release-small/onboard"
bytes=$(stat -c %s "$bin")
echo "{\"binary\": \"$bin\", \"bytes\": $bytes, \"mib\": $(python3 -c "print(round($bytes / 1048576, 2))")}"
budget=$((8 * 1048576))
if [ "$bytes" -gt "$budget" ]; then
  echo "error: $bin is $bytes bytes, over the board's 8 MiB ($budget bytes); see the release-small profile and the tract features in onboard/Cargo.toml" >&2
  exit 1
fi
