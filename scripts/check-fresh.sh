#!/usr/bin/env bash
# Checks that the project's scripts start on a fresh machine: scripts/env.sh sourced under
# `set -euo pipefail` with an empty cache folder (and with a half-made venv), and
# `scripts/setup.sh --offline` (every part of set-up that needs no download) against an empty
# cache, must succeed; every script must run under `set -Eeuo pipefail` with an ERR trap that
# names the failing line. Run by scripts/test.sh before anything is installed.
set -Eeuo pipefail
trap 'echo "error: $0: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
fail() {
  echo "check-fresh: FAIL: $*" >&2
  exit 1
}
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# A shell as a new user has it: none of the project's variables, an empty cache folder.
fresh() {
  env -u TRIAGE_CACHE -u TRIAGE_VENV -u TRIAGE_PYTHON -u TRIAGE_EFFNET_LITE0 -u TRIAGE_WEIGHTS \
    -u CARGO_TARGET_DIR -u ORT_DYLIB_PATH -u LD_LIBRARY_PATH XDG_CACHE_HOME="$1" \
    bash -euo pipefail -c "$2"
}

# 1. env.sh with an empty cache folder.
out="$(fresh "$scratch/empty" 'source scripts/env.sh; echo "$TRIAGE_CACHE|${ORT_DYLIB_PATH:-}|${LD_LIBRARY_PATH:-}"')" \
  || fail "sourcing scripts/env.sh with an empty cache folder failed"
[ "$out" = "$scratch/empty/rover-triage||" ] || fail "scripts/env.sh on an empty cache set: $out"

# 2. env.sh with a venv that exists but holds neither torch nor onnxruntime (an interrupted
#    install), then with both libraries present.
site="$scratch/half/rover-triage/venv/lib/python3.11/site-packages"
mkdir -p "$site"
out="$(fresh "$scratch/half" 'source scripts/env.sh; echo "${ORT_DYLIB_PATH:-}|${LD_LIBRARY_PATH:-}"')" \
  || fail "sourcing scripts/env.sh with a half-made venv failed"
[ "$out" = "|" ] || fail "scripts/env.sh with a half-made venv set: $out"
mkdir -p "$site/torch/lib" "$site/onnxruntime/capi"
touch "$site/onnxruntime/capi/libonnxruntime.so.1.31.1"
out="$(fresh "$scratch/half" 'source scripts/env.sh; echo "${ORT_DYLIB_PATH:-}|${LD_LIBRARY_PATH:-}"')" \
  || fail "sourcing scripts/env.sh with a complete venv failed"
[ "$out" = "$site/onnxruntime/capi/libonnxruntime.so.1.31.1|$site/torch/lib" ] \
  || fail "scripts/env.sh with a complete venv set: $out"

# 3. The download-free part of set-up on an empty cache.
log="$scratch/setup.log"
fresh "$scratch/setup" 'scripts/setup.sh --offline' 2>"$log" \
  || { cat "$log" >&2; fail "scripts/setup.sh --offline failed on an empty cache"; }
grep -q "missing: Python venv at $scratch/setup/rover-triage/venv" "$log" \
  || { cat "$log" >&2; fail "scripts/setup.sh --offline did not report the missing venv"; }
grep -q "offline check done" "$log" || fail "scripts/setup.sh --offline stopped early"

# 4. Every script: strict mode, an ERR trap, valid syntax.
for f in scripts/*.sh .ci/run; do
  [ "$f" = scripts/env.sh ] && continue # sourced, not run: it must not change the caller's shell
  bash -n "$f" || fail "$f: syntax error"
  grep -q '^set -Eeuo pipefail$' "$f" || fail "$f: lacks 'set -Eeuo pipefail'"
  grep -q "^trap '.*LINENO.*' ERR$" "$f" || fail "$f: lacks an ERR trap naming the line"
done
# The trap names the failing line and command.
probe="$scratch/probe.sh"
{
  echo 'set -Eeuo pipefail'
  grep -m1 "^trap '.*' ERR$" scripts/setup.sh
  echo 'x="$(false)"'
} >"$probe"
if bash "$probe" 2>"$log"; then fail "the ERR trap probe did not fail"; fi
grep -q 'line 3: `x="$(false)"` failed (exit 1)' "$log" || {
  cat "$log" >&2
  fail "the ERR trap does not name the line and command"
}
echo "check-fresh: scripts start on an empty cache (env.sh, setup.sh --offline, ERR traps)" >&2
