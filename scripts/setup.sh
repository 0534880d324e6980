#!/usr/bin/env bash
# Installs what building and testing need, idempotently: the Rust targets and components, the
# aarch64 cross toolchain and qemu (Debian packages), and a Python venv (outside the clone,
# reused across runs) with torch 2.11.0 (libtorch for tch), onnx and onnxruntime from PyPI,
# and the converted EfficientNet-Lite0 weights.
#   scripts/setup.sh               everything
#   scripts/setup.sh --board-only  stops after the cross-building tools
#   scripts/setup.sh --offline     installs and downloads nothing: says what is present and what
#                                  a full run would install (tested on an empty cache by
#                                  scripts/check-fresh.sh)
set -Eeuo pipefail
trap 'echo "error: $0: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
source scripts/env.sh
mode="${1:-all}"
case "$mode" in
  all | --board-only | --offline) ;;
  *)
    echo "error: scripts/setup.sh: unknown option '$mode' (use --board-only or --offline)" >&2
    exit 2
    ;;
esac
offline=false
[ "$mode" = "--offline" ] && offline=true
# In offline mode, say what would be done instead of doing it.
todo() {
  echo "setup: missing: $1 (a full scripts/setup.sh installs it)" >&2
}

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
targets=(thumbv7em-none-eabihf aarch64-unknown-linux-gnu)
if $offline; then
  installed="$(rustup target list --installed 2>/dev/null || true)"
  for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed" || todo "Rust target $t"
  done
else
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
  rustup target add "${targets[@]}" >/dev/null
fi

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  if $offline; then
    todo "Debian packages ${need[*]}"
  else
    echo "setup: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
[ "$mode" = "--board-only" ] && exit 0

stamp="$TRIAGE_VENV/.requirements.sha256"
want="$(sha256sum scripts/requirements.txt | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ ! -x "$TRIAGE_VENV/bin/python" ] || [ "$have" != "$want" ]; then
  if $offline; then
    todo "Python venv at $TRIAGE_VENV (scripts/requirements.txt)"
  else
    echo "setup: creating Python venv at $TRIAGE_VENV (torch 2.11.0, onnx, onnxruntime; about 6 GB, several minutes)" >&2
    mkdir -p "$TRIAGE_CACHE"
    python3 -m venv "$TRIAGE_VENV"
    "$TRIAGE_VENV/bin/python" -m pip install -q --upgrade pip
    "$TRIAGE_VENV/bin/python" -m pip install -q -r scripts/requirements.txt
    echo "$want" >"$stamp"
  fi
fi
if ! $offline; then
  "$TRIAGE_VENV/bin/python" -c "import torch, onnx, onnxruntime; print('setup: torch', torch.__version__, 'onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__)" >&2
fi
weights_stamp="$(cat "$TRIAGE_WEIGHTS/.stamp" 2>/dev/null || true)"
weights_ok=true
for lite in efficientnet-lite0 efficientnet-lite1 efficientnet-lite2; do
  if [ ! -f "$TRIAGE_WEIGHTS/$lite.safetensors" ] || [ ! -f "$TRIAGE_WEIGHTS/$lite.reference.json" ]; then
    weights_ok=false
  fi
done
if ! $weights_ok || [ "$weights_stamp" != "$want" ]; then
  if $offline; then
    todo "EfficientNet-Lite0/1/2 weights in $TRIAGE_WEIGHTS"
  else
    "$TRIAGE_PYTHON" scripts/convert_effnet.py "$TRIAGE_WEIGHTS"
    echo "$want" >"$TRIAGE_WEIGHTS/.stamp"
  fi
fi
$offline && echo "setup: offline check done" >&2
exit 0
