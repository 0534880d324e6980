"""Op-by-op comparison of ONNX Runtime with tract on a quantized ONNX graph.

DUMP holds tract's value of every tensor of MODEL for one input (`index.json`: name ->
{"dtype", "shape"}, and NAME.bin raw little-endian). Each node of MODEL runs alone in ONNX
Runtime (CPU, one thread) on tract's values of its inputs; its output is compared with tract's.
Prints one JSON object: for each node its op, output dtype and the largest absolute difference
(in codes for integer outputs).

usage: python check_int8_ops.py MODEL DUMP
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

DTYPES = {"u8": (np.uint8, onnx.TensorProto.UINT8), "i8": (np.int8, onnx.TensorProto.INT8),
          "i32": (np.int32, onnx.TensorProto.INT32), "f32": (np.float32, onnx.TensorProto.FLOAT)}


def main() -> int:
    model_path, dump = sys.argv[1], sys.argv[2]
    model = onnx.load(model_path)
    index = json.load(open(f"{dump}/index.json"))
    inits = {t.name: t for t in model.graph.initializer}

    def value(name):
        meta = index[name]
        dt = DTYPES[meta["dtype"]][0]
        return np.fromfile(f"{dump}/{name}.bin", dtype=dt).reshape(meta["shape"])

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    results = []
    for node in model.graph.node:
        feeds, inputs, node_inits = {}, [], []
        for name in node.input:
            if not name:
                continue
            if name in inits:
                node_inits.append(inits[name])
            elif name not in feeds:
                v = value(name)
                feeds[name] = v
                inputs.append(helper.make_tensor_value_info(
                    name, DTYPES[index[name]["dtype"]][1], list(v.shape)))
        out = node.output[0]
        meta = index[out]
        outputs = [helper.make_tensor_value_info(out, DTYPES[meta["dtype"]][1], meta["shape"])]
        graph = helper.make_graph([node], node.name, inputs, outputs, node_inits)
        single = helper.make_model(graph, opset_imports=model.opset_import,
                                   ir_version=model.ir_version)
        sess = ort.InferenceSession(single.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        (got,) = sess.run(None, feeds)
        want = value(out)
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64)).max()
        results.append({"node": node.name, "op": node.op_type, "dtype": meta["dtype"],
                        "max_diff": float(diff)})
    print(json.dumps({"onnxruntime": ort.__version__, "nodes": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
