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
# One feature set for the whole suite (the workspace with onboard's `ort` side-by-side feature),
# so clippy, the tests, the README command and the ONNX Runtime comparison share one build.
features=(--features onboard/ort)
step "clippy"
cargo clippy --release --workspace --all-targets "${features[@]}" -- -D warnings
step "no_std core (thumbv7em-none-eabihf)"
cargo build -p onboard --no-default-features --target thumbv7em-none-eabihf
step "tests: build"
cargo test --release --workspace "${features[@]}" --no-run
step "tests: run"
cargo test --release --workspace "${features[@]}"
step "aarch64: onboard tests under qemu: build"
qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
cargo test --release -p onboard --target aarch64-unknown-linux-gnu --no-run
step "aarch64: onboard tests under qemu: run"
ONBOARD_TEST_RUNNER="${qemu[*]}" cargo test --release -p onboard --target aarch64-unknown-linux-gnu
# qemu's default core has the dot product (the integer 1x1 kernels dispatch to `sdot`); a
# Cortex-A72 has not, so there they dispatch to `smull`/`sadalp`.
step "aarch64: integer kernels on a core without the dot product (qemu -cpu cortex-a72)"
QEMU_CPU=cortex-a72 cargo test --release -p onboard --target aarch64-unknown-linux-gnu --lib -- convops::
step "aarch64: board build, size, and eval predictions equal to x86 (f32 and int8, adaptation on)"
scripts/build-board.sh
if [ -n "${MSL_DATA:-}" ]; then
  # The first validation images in sol order: 48 at f32, 16 at int8. Emulation costs over a
  # second per f32 image; the real-data evaluation on many images runs natively in the tests
  # above.
  tmp="$(mktemp -d)"
  sort "$MSL_DATA/val-calibrated-shuffled.txt" >"$tmp/val-chrono.txt"
  board="$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release-small/onboard"
  for spec in f32:48 int8:16; do
    precision="${spec%%:*}" n="${spec##*:}"
    head -n "$n" "$tmp/val-chrono.txt" >"$tmp/val-$n.txt"
    "$CARGO_TARGET_DIR/release/onboard" eval --data "$MSL_DATA" --labels "$tmp/val-$n.txt" \
      --precision "$precision" --adapt on --json >"$tmp/x86-$precision.json"
    "${qemu[@]}" "$board" eval --data "$MSL_DATA" --labels "$tmp/val-$n.txt" \
      --precision "$precision" --adapt on --json >"$tmp/arm-$precision.json"
    echo "board eval, $precision, $n images:" >&2
    python3 scripts/compare_eval.py "$tmp/x86-$precision.json" "$tmp/arm-$precision.json"
  done
  rm -rf "$tmp"
fi
# The README's `cargo run --release -p onboard -- prioritize ...`, run on the binary the test
# build made: `cargo run -p onboard` alone resolves other features than the workspace build and
# would compile tract and its dependencies a second time (about 4 minutes).
onboard="$CARGO_TARGET_DIR/release/onboard"
step "scripts/get-msl.sh, offline parts"
scripts/test-get-msl.sh
step "README main command"
"$onboard" prioritize testdata/msl-sample/images --budget-bytes 76800 --sheet "${TMPDIR:-/tmp}/plan.png" >/dev/null
step "ONNX Runtime side by side (feature ort, the onnxruntime wheel's library)"
"$onboard" bench --data testdata/pass --limit 8 \
  --ort-lib "$ORT_DYLIB_PATH" --json > "${TMPDIR:-/tmp}/bench-ort.json"
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); o = d["onnxruntime"]; assert d["tract_vs_ort_ratio"] > 0 and o["same_class"] == 1.0, d; print("tract_vs_ort_ratio", round(d["tract_vs_ort_ratio"], 2), "ORT", round(o["model_ms"], 2), "ms, tract", round(o["tract_model_ms"], 2), "ms (alternating pass)", file=sys.stderr)' "${TMPDIR:-/tmp}/bench-ort.json"
step ""
echo "all checks passed in $((SECONDS - suite_start)) s" >&2
