# Shared environment for the project's scripts: cache locations outside the clone, the torch
# venv on PATH and its libtorch on the loader path. Source it; it changes nothing on disk.
export TRIAGE_CACHE="${TRIAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rover-triage}"
export TRIAGE_VENV="${TRIAGE_VENV:-$TRIAGE_CACHE/venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TRIAGE_CACHE/target}"
export LIBTORCH_USE_PYTORCH=1
export PATH="$TRIAGE_VENV/bin:$HOME/.cargo/bin:$PATH"
export TRIAGE_PYTHON="$TRIAGE_VENV/bin/python"
_torch_lib="$TRIAGE_VENV/lib/python3.11/site-packages/torch/lib"
if [ -d "$TRIAGE_VENV/lib" ]; then
  _torch_lib="$(ls -d "$TRIAGE_VENV"/lib/python3*/site-packages/torch/lib 2>/dev/null | head -n 1)"
fi
export LD_LIBRARY_PATH="${_torch_lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
unset _torch_lib
# ImageNet EfficientNet-Lite0 weights converted by scripts/setup.sh (scripts/convert_effnet.py).
export TRIAGE_EFFNET_LITE0="${TRIAGE_EFFNET_LITE0:-$TRIAGE_CACHE/weights/efficientnet-lite0.safetensors}"
# The ONNX Runtime shared library of the venv's onnxruntime wheel, for `onboard bench --ort-lib`
# (feature `ort`).
_ort_lib="$(ls "$TRIAGE_VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1)"
if [ -n "$_ort_lib" ]; then
  export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$_ort_lib}"
fi
unset _ort_lib
