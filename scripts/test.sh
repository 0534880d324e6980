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
echo "== README main command" >&2
cargo run --release -p onboard -- prioritize testdata/pass --budget-bytes 60000 >/dev/null
echo "all checks passed" >&2
