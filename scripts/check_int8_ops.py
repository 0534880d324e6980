"""Op-by-op comparison of ONNX Runtime with tract on a quantized ONNX graph.

DUMP holds tract's value of every tensor of MODEL for one input (`index.json`: name ->
{"dtype", "shape"}, and NAME.bin raw little-endian). Each node of MODEL runs alone in ONNX
Runtime (CPU, one thread) on tract's values of its inputs; its output is compared with tract's.
Prints one JSON object: for each node its op, output dtype and the largest absolute difference
(in codes for integer outputs). For QLinearConv and MatMulInteger it also computes the ONNX
definition itself (exact integer accumulation, float rescale, round half to even, saturate) and
gives each runtime's largest difference from it (`tract_vs_definition`, `ort_vs_definition`):
ONNX Runtime's x86 u8 x s8 kernels without VNNI (AVX2) add pairs of products in 16 bits with
saturation (`vpmaddubsw`), so on such a CPU ONNX Runtime itself can depart from the definition.

usage: python check_int8_ops.py MODEL DUMP
"""
import json
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
from onnx import helper

DTYPES = {"u8": (np.uint8, onnx.TensorProto.UINT8), "i8": (np.int8, onnx.TensorProto.INT8),
          "i32": (np.int32, onnx.TensorProto.INT32), "f32": (np.float32, onnx.TensorProto.FLOAT)}


def attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def conv_int(x, w, group, strides, pads, dilations):
    """Integer convolution (NCHW, int64) of zero-point-free `x` with `w` (M, C/group, kh, kw)."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    (sh, sw), (dh, dw) = strides, dilations
    oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, m, oh, ow), dtype=np.int64)
    mg = m // group
    for g in range(group):
        xs = x[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                           j * dw:j * dw + sw * (ow - 1) + 1:sw]
                out[:, g * mg:(g + 1) * mg] += np.einsum(
                    "nchw,mc->nmhw", patch, w[g * mg:(g + 1) * mg, :, i, j])
    return out


def per_channel(v, m):
    """A zero point or scale, scalar or per output channel, shaped to broadcast over NCHW."""
    v = np.asarray(v)
    return v.reshape(-1, 1, 1) if v.size == m and m > 1 else v.reshape(())


def definition(node, arg):
    """The ONNX definition of `node` on argument values `arg(i)` (None: input absent), or None
    for ops without a reference here."""
    if node.op_type == "QLinearConv":
        x, xs, xz, w, ws, wz, ys, yz = (arg(i) for i in range(8))
        b = arg(8) if len(node.input) > 8 and node.input[8] else None
        m = w.shape[0]
        assert w.ndim == 4, "2-d convolutions only"
        wz = np.asarray(wz, dtype=np.int64)
        wz = wz.reshape(-1, 1, 1, 1) if wz.size > 1 else wz.reshape(())
        acc = conv_int(x.astype(np.int64) - np.int64(xz), w.astype(np.int64) - wz,
                       attr(node, "group", 1), attr(node, "strides", [1, 1]),
                       attr(node, "pads", [0, 0, 0, 0]), attr(node, "dilations", [1, 1]))
        if b is not None:
            acc += b.astype(np.int64).reshape(1, -1, 1, 1)
        scale = (np.float32(xs) * per_channel(ws, m).astype(np.float32)) / np.float32(ys)
        y = np.rint(acc.astype(np.float32) * scale) + np.int64(yz)
        info = np.iinfo(yz.dtype)
        return np.clip(y, info.min, info.max).astype(yz.dtype)
    if node.op_type == "MatMulInteger":
        a, b = arg(0), arg(1)
        az = arg(2) if len(node.input) > 2 and node.input[2] else np.int64(0)
        bz = arg(3) if len(node.input) > 3 and node.input[3] else np.int64(0)
        return np.matmul(a.astype(np.int64) - np.asarray(az, dtype=np.int64),
                         b.astype(np.int64) - np.asarray(bz, dtype=np.int64)).astype(np.int32)
    return None


def max_diff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


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

        def arg(i):
            name = node.input[i]
            return onnx.numpy_helper.to_array(inits[name]) if name in inits else feeds[name]

        ref = definition(node, arg)
        results.append({
            "node": node.name, "op": node.op_type, "dtype": meta["dtype"],
            "max_diff": max_diff(got, want),
            "tract_vs_definition": None if ref is None else max_diff(want, ref),
            "ort_vs_definition": None if ref is None else max_diff(got, ref),
        })
    print(json.dumps({"onnxruntime": ort.__version__, "nodes": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
