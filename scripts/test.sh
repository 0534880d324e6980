#!/usr/bin/env bash
# The project's whole test suite: installs what it needs (scripts/setup.sh), checks formatting
# and lints, builds the no_std decision core for a bare-metal target, runs every test of the
# workspace (tests on the real MSL data need MSL_DATA), and runs the README's main command.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
export TRIAGE_PROGRESS=0

if [ -n "${MSL_DATA:-}" ]; then
  if [ ! -r "$MSL_DATA/train-calibrated-shuffled.txt" ]; then
    echo "error: MSL_DATA=$MSL_DATA is set but $MSL_DATA/train-calibrated-shuffled.txt is not readable" >&2
    exit 1
  fi
  export MSL_DATA="$(cd "$MSL_DATA" && pwd)"
else
  echo "warning: MSL_DATA is not set: tests on the real MSL data will not run" >&2
fi

echo "== fmt" >&2
cargo fmt --all -- --check
echo "== clippy" >&2
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== no_std core (thumbv7em-none-eabihf)" >&2
cargo build -p onboard --no-default-features --target thumbv7em-none-eabihf
echo "== tests" >&2
cargo test --release --workspace
echo "== aarch64: onboard tests under qemu" >&2
qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
ONBOARD_TEST_RUNNER="${qemu[*]}" cargo test --release -p onboard --target aarch64-unknown-linux-gnu
echo "== aarch64: board build, size, and eval predictions equal to x86 (f32 and int8)" >&2
scripts/build-board.sh
if [ -n "${MSL_DATA:-}" ]; then
  tmp="$(mktemp -d)"
  sort "$MSL_DATA/val-calibrated-shuffled.txt" > "$tmp/val-chrono.txt"
  head -n 300 "$tmp/val-chrono.txt" > "$tmp/val300.txt"
  "$CARGO_TARGET_DIR/release/onboard" eval --data "$MSL_DATA" --labels "$tmp/val300.txt" --json > "$tmp/x86.json"
  "${qemu[@]}" "$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release-small/onboard" eval \
    --data "$MSL_DATA" --labels "$tmp/val300.txt" --json > "$tmp/arm.json"
  python3 scripts/compare_eval.py "$tmp/x86.json" "$tmp/arm.json"
  # int8 graphs on the board's integer kernels (i8 NEON) against x86's (slower under qemu: 40 images).
  head -n 40 "$tmp/val-chrono.txt" > "$tmp/val40.txt"
  "$CARGO_TARGET_DIR/release/onboard" eval --data "$MSL_DATA" --labels "$tmp/val40.txt" \
    --precision int8 --json > "$tmp/x86-int8.json"
  "${qemu[@]}" "$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release-small/onboard" eval \
    --data "$MSL_DATA" --labels "$tmp/val40.txt" --precision int8 --json > "$tmp/arm-int8.json"
  python3 scripts/compare_eval.py "$tmp/x86-int8.json" "$tmp/arm-int8.json"
  rm -rf "$tmp"
fi
echo "== README main command" >&2
cargo run --release -p onboard -- prioritize testdata/pass --budget-bytes 60000 >/dev/null
echo "== ONNX Runtime side by side (feature ort, the onnxruntime wheel's library)" >&2
cargo clippy --release -p onboard --features ort --all-targets -- -D warnings
cargo run --release -p onboard --features ort -- bench --data testdata/pass --limit 8 \
  --ort-lib "$ORT_DYLIB_PATH" --json > "${TMPDIR:-/tmp}/bench-ort.json"
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); o = d["onnxruntime"]; assert d["tract_vs_ort_ratio"] > 0 and o["same_class"] == 1.0, d; print("tract_vs_ort_ratio", round(d["tract_vs_ort_ratio"], 2), "ORT", round(o["model_ms"], 2), "ms, tract", round(o["tract_model_ms"], 2), "ms (alternating pass)", file=sys.stderr)' "${TMPDIR:-/tmp}/bench-ort.json"
echo "all checks passed" >&2
