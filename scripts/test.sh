#!/usr/bin/env bash
# The project's whole test suite: installs what it needs (scripts/setup.sh), checks formatting
# and lints, builds the no_std decision core for a bare-metal target, runs every test of the
# workspace (tests on the real MSL data need MSL_DATA), and runs the README's main command.
set -Eeuo pipefail
trap 'echo "error: $0: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."

# Each step prints its name when it starts and its duration when the next one starts (and at
# exit, also after a failure), so a slow step shows in the log.
suite_start=$SECONDS
step_name=""
step_start=$SECONDS
step() {
  if [ -n "$step_name" ]; then
    echo "== done: $step_name ($((SECONDS - step_start)) s; $((SECONDS - suite_start)) s in all)" >&2
  fi
  step_name="$1"
  step_start=$SECONDS
  [ -z "$step_name" ] || echo "== $step_name" >&2
}
trap 'step ""' EXIT

step "scripts start on a fresh machine (no download)"
scripts/check-fresh.sh
step "set-up (scripts/setup.sh)"
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

step "fmt"
cargo fmt --all -- --check
step "clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
step "no_std core (thumbv7em-none-eabihf)"
cargo build -p onboard --no-default-features --target thumbv7em-none-eabihf
step "tests: build"
cargo test --release --workspace --no-run
step "tests: run"
cargo test --release --workspace
step "aarch64: onboard tests under qemu: build"
qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
cargo test --release -p onboard --target aarch64-unknown-linux-gnu --no-run
step "aarch64: onboard tests under qemu: run"
ONBOARD_TEST_RUNNER="${qemu[*]}" cargo test --release -p onboard --target aarch64-unknown-linux-gnu
step "aarch64: board build, size, and eval predictions equal to x86 (f32 and int8)"
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
step "README main command"
cargo run --release -p onboard -- prioritize testdata/pass --budget-bytes 60000 >/dev/null
step "ONNX Runtime side by side (feature ort, the onnxruntime wheel's library)"
cargo clippy --release -p onboard --features ort --all-targets -- -D warnings
cargo run --release -p onboard --features ort -- bench --data testdata/pass --limit 8 \
  --ort-lib "$ORT_DYLIB_PATH" --json > "${TMPDIR:-/tmp}/bench-ort.json"
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); o = d["onnxruntime"]; assert d["tract_vs_ort_ratio"] > 0 and o["same_class"] == 1.0, d; print("tract_vs_ort_ratio", round(d["tract_vs_ort_ratio"], 2), "ORT", round(o["model_ms"], 2), "ms, tract", round(o["tract_model_ms"], 2), "ms (alternating pass)", file=sys.stderr)' "${TMPDIR:-/tmp}/bench-ort.json"
step ""
echo "all checks passed in $((SECONDS - suite_start)) s" >&2
