"""Multiply-accumulates per image of every graph in a bundle, from the ONNX graphs themselves.

For each graph of BUNDLE/manifest.json (one precision: f32 unless given), ONNX shape inference
gives every tensor's shape; a Conv or QLinearConv costs Cout * (Cin / group) * kh * kw * Hout *
Wout MACs, a Gemm / MatMul / MatMulInteger in * out. Prints one JSON object: per graph the MACs
by op type and in total, and for the convolutions the depthwise share.

usage: python flops.py BUNDLE [PRECISION]
"""
import json
import sys

import onnx
from onnx import shape_inference


def dims(vi):
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


def graph_macs(path):
    model = shape_inference.infer_shapes(onnx.load(path))
    g = model.graph
    shapes = {vi.name: dims(vi) for vi in list(g.value_info) + list(g.input) + list(g.output)}
    inits = {t.name: list(t.dims) for t in g.initializer}
    by_op, depthwise = {}, 0
    for n in g.node:
        macs = 0
        if n.op_type in ("Conv", "QLinearConv"):
            w = inits[n.input[1] if n.op_type == "Conv" else n.input[3]]
            out = shapes[n.output[0]]
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            macs = w[0] * w[1] * w[2] * w[3] * out[2] * out[3]
            if group > 1 and group == w[0]:
                depthwise += macs
        elif n.op_type == "Gemm":
            w = inits[n.input[1]]
            macs = w[0] * w[1]
        elif n.op_type in ("MatMul", "MatMulInteger"):
            w = inits[n.input[1]]
            macs = w[0] * w[1]
        if macs:
            by_op[n.op_type] = by_op.get(n.op_type, 0) + macs
    return {"macs": sum(by_op.values()), "by_op": by_op, "depthwise_conv_macs": depthwise}


def main() -> int:
    bundle = sys.argv[1]
    precision = sys.argv[2] if len(sys.argv) > 2 else "f32"
    manifest = json.load(open(f"{bundle}/manifest.json"))
    out = {}
    for g in manifest["graphs"]:
        if g["precision"] == precision:
            out[g["role"]] = {"file": g["file"], **graph_macs(f"{bundle}/{g['file']}")}
    total = sum(v["macs"] for v in out.values())
    print(json.dumps({"bundle": bundle, "precision": precision, "graphs": out,
                      "macs_per_image": total, "flops_per_image": 2 * total}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
