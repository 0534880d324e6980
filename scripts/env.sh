# Shared environment for the project's scripts: cache locations outside the clone, the torch
# venv on PATH and its libtorch on the loader path. Source it; it changes nothing on disk.
# It must succeed on a fresh machine (no cache folder, no venv, no cross tools) under
# `set -euo pipefail`: no command here may fail, so it uses globs, not `ls | head`.
export TRIAGE_CACHE="${TRIAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rover-triage}"
export TRIAGE_VENV="${TRIAGE_VENV:-$TRIAGE_CACHE/venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TRIAGE_CACHE/target}"
export LIBTORCH_USE_PYTORCH=1
export PATH="$TRIAGE_VENV/bin:$HOME/.cargo/bin:$PATH"
export TRIAGE_PYTHON="$TRIAGE_VENV/bin/python"
# The first existing match of a glob (empty when none): the pattern stays literal when nothing
# matches, so `-e` tells the two apart.
_triage_first() {
  local p
  for p in "$@"; do
    if [ -e "$p" ]; then
      printf '%s' "$p"
      return 0
    fi
  done
  return 0
}
_torch_lib="$(_triage_first "$TRIAGE_VENV"/lib/python3*/site-packages/torch/lib)"
if [ -n "$_torch_lib" ]; then
  export LD_LIBRARY_PATH="${_torch_lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# ImageNet EfficientNet-Lite0/1/2 weights converted by scripts/setup.sh
# (scripts/convert_effnet.py): the folder, and Lite0's file in it.
export TRIAGE_WEIGHTS="${TRIAGE_WEIGHTS:-$TRIAGE_CACHE/weights}"
export TRIAGE_EFFNET_LITE0="${TRIAGE_EFFNET_LITE0:-$TRIAGE_WEIGHTS/efficientnet-lite0.safetensors}"
# The ONNX Runtime shared library of the venv's onnxruntime wheel, for `onboard bench --ort-lib`
# (feature `ort`).
_ort_lib="$(_triage_first "$TRIAGE_VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*)"
if [ -n "$_ort_lib" ]; then
  export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$_ort_lib}"
fi
unset _torch_lib _ort_lib
unset -f _triage_first
