#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/fuzz_targets: decode, manifest, journal) for a bounded time
# each.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
# Installs cargo-fuzz if missing. The fuzzing flags need unstable rustc options, enabled on the
# stable toolchain with RUSTC_BOOTSTRAP=1. Corpora start from testdata/, the default bundle's
# manifest and a journal written by `onboard prioritize` over the fixtures; findings land in fuzz/artifacts/<target>/ and make this script fail.
set -Eeuo pipefail
trap 'echo "error: $0: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
source scripts/env.sh
secs="${1:-60}"
mkdir -p fuzz/corpus/journal
if [ ! -s fuzz/corpus/journal/fixtures.jsonl ]; then
  tmp="$(mktemp -d)"
  cp testdata/pass/00*.jpg testdata/bad/truncated.JPG "$tmp/"
  cargo run --release -q -p onboard -- prioritize "$tmp" --journal "$tmp/j.jsonl" \
    --backlog-capacity 6 --mark-sent >/dev/null
  cp "$tmp/j.jsonl" fuzz/corpus/journal/fixtures.jsonl
  rm -rf "$tmp"
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$TRIAGE_CACHE/fuzz-target"
mkdir -p fuzz/corpus/decode fuzz/corpus/manifest fuzz/corpus/journal
cp testdata/pass/*.jpg testdata/bad/*.JPG testdata/bad/*.png fuzz/corpus/decode/
cp models/default/manifest.json fuzz/corpus/manifest/default.json
for target in decode manifest journal; do
  echo "fuzz: $target for ${secs}s" >&2
  cargo fuzz run --fuzz-dir fuzz --sanitizer address "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=3072 -max_len=1048576 -timeout=10
done
echo "fuzz: no crash, leak or timeout found" >&2
