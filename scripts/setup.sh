#!/usr/bin/env bash
# Installs what building and testing need, idempotently: the Rust targets and components, the
# aarch64 cross toolchain and qemu (Debian packages), and a Python venv (outside the clone,
# reused across runs) with torch 2.11.0 (libtorch for tch), onnx and onnxruntime from PyPI.
# `--board-only` stops after the cross-building tools.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add thumbv7em-none-eabihf aarch64-unknown-linux-gnu >/dev/null

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ "${1:-}" = "--board-only" ] && exit 0

stamp="$TRIAGE_VENV/.requirements.sha256"
want="$(sha256sum scripts/requirements.txt | cut -d' ' -f1)"
if [ ! -x "$TRIAGE_VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating Python venv at $TRIAGE_VENV (torch 2.11.0, onnx, onnxruntime; several GB, a few minutes)" >&2
  mkdir -p "$TRIAGE_CACHE"
  python3 -m venv "$TRIAGE_VENV"
  "$TRIAGE_VENV/bin/python" -m pip install -q --upgrade pip
  "$TRIAGE_VENV/bin/python" -m pip install -q -r scripts/requirements.txt
  echo "$want" > "$stamp"
fi
"$TRIAGE_VENV/bin/python" -c "import torch, onnx, onnxruntime; print('setup: torch', torch.__version__, 'onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__)" >&2
if [ ! -f "$TRIAGE_EFFNET_LITE0" ] || [ ! -f "${TRIAGE_EFFNET_LITE0%.safetensors}.reference.json" ] \
  || [ "$(cat "$TRIAGE_EFFNET_LITE0.stamp" 2>/dev/null)" != "$want" ]; then
  "$TRIAGE_PYTHON" scripts/convert_effnet.py "$(dirname "$TRIAGE_EFFNET_LITE0")"
  echo "$want" > "$TRIAGE_EFFNET_LITE0.stamp"
fi
