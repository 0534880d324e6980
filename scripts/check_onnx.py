"""Third-party checks of a model bundle's ONNX graphs.

For every graph in BUNDLE/manifest.json (every precision): onnx.checker.check_model(full_check=True),
then one run in ONNX Runtime (CPU, one thread) on the input tensor stored in INPUT (raw
little-endian float32, shape [1, 3, H, W]). A graph whose manifest `input` is `latent` gets the
vector stored in LATENT (raw float32, [1, latent_dim]) when given, else the output of the
encoder of the same precision. Prints one JSON object with every graph's output values so the
caller can compare them with tract.

usage: python check_onnx.py BUNDLE INPUT [LATENT]
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> int:
    bundle, input_path = sys.argv[1], sys.argv[2]
    manifest = json.load(open(f"{bundle}/manifest.json"))
    h, w = manifest["input"]["height"], manifest["input"]["width"]
    x = np.fromfile(input_path, dtype="<f4").reshape(1, 3, h, w)
    given = None
    if len(sys.argv) > 3:
        given = np.fromfile(sys.argv[3], dtype="<f4").reshape(1, manifest["latent_dim"])
    results = []
    latents = {}
    graphs = sorted(manifest["graphs"], key=lambda g: g.get("input", "image") == "latent")
    for g in graphs:
        path = f"{bundle}/{g['file']}"
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        if g.get("input", "image") == "latent":
            feed = given if given is not None else latents[g["precision"]]
        else:
            feed = x
        (y,) = sess.run(None, {sess.get_inputs()[0].name: feed})
        if g["role"] == "encoder":
            latents[g["precision"]] = y.astype(np.float32)
        results.append({"file": g["file"], "role": g["role"], "precision": g["precision"],
                        "shape": list(y.shape),
                        "output": y.reshape(-1).astype(float).tolist()})
    print(json.dumps({"onnx": onnx.__version__, "onnxruntime": ort.__version__, "graphs": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
