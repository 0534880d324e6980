//! ONNX writer: turns a sequential inference graph (with nested residual blocks) into an ONNX
//! model (opset 13, standard ops only) with the weights as initializers. Input `input` `[1, 3, H, W]` f32, output `output`
//! `[1, D]` f32.

use prost::Message;
use tract_onnx::pb;

/// ONNX opset written.
pub const OPSET: i64 = 13;
/// ONNX IR version written.
pub const IR_VERSION: i64 = 8;

/// One inference step of a sequential graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// 2-D convolution, square kernel; weight `[out, in / group, k, k]`.
    Conv {
        /// Weights, row-major `shape`.
        weight: Vec<f32>,
        /// `[out, in / group, k, k]`.
        shape: [i64; 4],
        /// Bias, `out` values.
        bias: Vec<f32>,
        /// Stride (both axes).
        stride: i64,
        /// Zero padding `[top, left, bottom, right]`.
        pads: [i64; 4],
        /// Channel groups (1 = dense, `out` = depthwise).
        group: i64,
    },
    /// Elementwise max(0, x).
    Relu,
    /// Elementwise min(max(0, x), 6) (ONNX `Clip`).
    Relu6,
    /// `x + body(x)`; the body keeps the shape.
    Residual(Vec<Op>),
    /// Mean over the spatial axes, keeping `[b, c, 1, 1]`.
    GlobalAveragePool,
    /// `[b, ...]` to `[b, prod(...)]`.
    Flatten,
    /// `y = x W^T + b`; weight `[out_dim, in_dim]`.
    Gemm {
        /// Weights, row-major `[out_dim, in_dim]`.
        weight: Vec<f32>,
        /// Output features.
        out_dim: i64,
        /// Input features.
        in_dim: i64,
        /// Bias, `out_dim` values.
        bias: Vec<f32>,
    },
}

/// An f32 initializer.
pub(crate) fn tensor(name: &str, dims: &[i64], data: &[f32]) -> pb::TensorProto {
    raw_tensor(
        name,
        dims,
        pb::tensor_proto::DataType::Float,
        data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// An initializer of `dtype` from its little-endian bytes.
pub(crate) fn raw_tensor(
    name: &str,
    dims: &[i64],
    dtype: pb::tensor_proto::DataType,
    raw_data: Vec<u8>,
) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: dtype as i32,
        raw_data,
        ..Default::default()
    }
}

pub(crate) fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_string(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_string(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.to_string(),
        name: name.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        attribute: attrs,
        ..Default::default()
    }
}

/// Nodes and initializers being written, with a counter for unique names.
#[derive(Default)]
struct Emitter {
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    next: usize,
}

impl Emitter {
    fn fresh(&mut self) -> usize {
        self.next += 1;
        self.next - 1
    }

    /// Emits `ops` reading `input`; the last op writes `output` (or a fresh name). Returns the
    /// name of the result.
    fn emit(&mut self, ops: &[Op], input: &str, output: Option<&str>) -> anyhow::Result<String> {
        anyhow::ensure!(!ops.is_empty(), "empty graph");
        let mut cur = input.to_string();
        for (k, op) in ops.iter().enumerate() {
            let i = self.fresh();
            let out = match output {
                Some(o) if k + 1 == ops.len() => o.to_string(),
                _ => format!("t{i}"),
            };
            self.op(op, i, &cur, &out)?;
            cur = out;
        }
        Ok(cur)
    }

    fn op(&mut self, op: &Op, i: usize, cur: &str, out: &str) -> anyhow::Result<()> {
        match op {
            Op::Conv {
                weight,
                shape,
                bias,
                stride,
                pads,
                group,
            } => {
                anyhow::ensure!(
                    weight.len() as i64 == shape.iter().product::<i64>(),
                    "conv {i}: weight length"
                );
                anyhow::ensure!(bias.len() as i64 == shape[0], "conv {i}: bias length");
                anyhow::ensure!(
                    *group > 0 && shape[0] % group == 0,
                    "conv {i}: group {group} does not divide {}",
                    shape[0]
                );
                let (w, b) = (format!("conv{i}.weight"), format!("conv{i}.bias"));
                self.inits.push(tensor(&w, shape, weight));
                self.inits.push(tensor(&b, &[shape[0]], bias));
                let attrs = vec![
                    ints("kernel_shape", &[shape[2], shape[3]]),
                    ints("strides", &[*stride, *stride]),
                    ints("pads", pads),
                    ints("dilations", &[1, 1]),
                    int("group", *group),
                ];
                self.nodes.push(node(
                    "Conv",
                    &format!("conv{i}"),
                    &[cur, &w, &b],
                    out,
                    attrs,
                ));
            }
            Op::Relu => self
                .nodes
                .push(node("Relu", &format!("relu{i}"), &[cur], out, vec![])),
            Op::Relu6 => {
                let (lo, hi) = (format!("clip{i}.min"), format!("clip{i}.max"));
                self.inits.push(tensor(&lo, &[], &[0.0]));
                self.inits.push(tensor(&hi, &[], &[6.0]));
                self.nodes.push(node(
                    "Clip",
                    &format!("clip{i}"),
                    &[cur, &lo, &hi],
                    out,
                    vec![],
                ));
            }
            Op::Residual(body) => {
                let y = self.emit(body, cur, None)?;
                self.nodes
                    .push(node("Add", &format!("add{i}"), &[&y, cur], out, vec![]));
            }
            Op::GlobalAveragePool => self.nodes.push(node(
                "GlobalAveragePool",
                &format!("gap{i}"),
                &[cur],
                out,
                vec![],
            )),
            Op::Flatten => self.nodes.push(node(
                "Flatten",
                &format!("flatten{i}"),
                &[cur],
                out,
                vec![int("axis", 1)],
            )),
            Op::Gemm {
                weight,
                out_dim,
                in_dim,
                bias,
            } => {
                anyhow::ensure!(
                    weight.len() as i64 == out_dim * in_dim,
                    "gemm {i}: weight length"
                );
                anyhow::ensure!(bias.len() as i64 == *out_dim, "gemm {i}: bias length");
                let (w, b) = (format!("fc{i}.weight"), format!("fc{i}.bias"));
                self.inits.push(tensor(&w, &[*out_dim, *in_dim], weight));
                self.inits.push(tensor(&b, &[*out_dim], bias));
                self.nodes.push(node(
                    "Gemm",
                    &format!("fc{i}"),
                    &[cur, &w, &b],
                    out,
                    vec![int("transB", 1)],
                ));
            }
        }
        Ok(())
    }
}

/// Builds the ONNX model of `ops` for input `[1, 3, height, width]` and output `[1, out_dim]`.
pub fn build_model(
    graph_name: &str,
    ops: &[Op],
    height: i64,
    width: i64,
    out_dim: i64,
    doc: &str,
) -> anyhow::Result<pb::ModelProto> {
    build_model_for_input(graph_name, ops, &[1, 3, height, width], out_dim, doc)
}

/// Builds the ONNX model of `ops` for an f32 input of shape `input` and output `[1, out_dim]`.
pub fn build_model_for_input(
    graph_name: &str,
    ops: &[Op],
    input: &[i64],
    out_dim: i64,
    doc: &str,
) -> anyhow::Result<pb::ModelProto> {
    let mut e = Emitter::default();
    e.emit(ops, "input", Some("output"))?;
    let graph = pb::GraphProto {
        name: graph_name.to_string(),
        node: e.nodes,
        initializer: e.inits,
        input: vec![value_info("input", input)],
        output: vec![value_info("output", &[1, out_dim])],
        ..Default::default()
    };
    Ok(pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "host-trainer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc.to_string(),
        graph: Some(graph),
        ..Default::default()
    })
}

/// Serializes a model to protobuf bytes.
pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}
