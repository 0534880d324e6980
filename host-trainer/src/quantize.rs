//! Post-training int8 quantization of the exporter's f32 ONNX graphs, written with standard
//! ONNX ops only (opset 13, no `com.microsoft` domain).
//!
//! [`integer`] rewrites a graph for integer compute: every `Conv` becomes `QLinearConv` (u8
//! activations, one scale and zero point per tensor from calibration; i8 weights, symmetric,
//! one scale per output channel; i32 bias), a `Relu` or `Clip` right after a conv is fused into
//! the conv's output range, every `Gemm` becomes `MatMulInteger` followed by a float rescale
//! and bias, and the remaining ops (residual `Add`, pooling, flatten, unfused activations) run
//! in f32 between `DequantizeLinear` and `QuantizeLinear`. [`weights_only`] stores the conv and
//! dense weights as i8 with per-channel scales and dequantizes them once at load: a 4x smaller
//! file with f32 compute.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use crate::calibrate::Ranges;
use crate::export::{int, node, raw_tensor, tensor};

/// Per-tensor asymmetric u8 quantization of an activation: `x ≈ scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQuant {
    /// Step between two codes (> 0).
    pub scale: f32,
    /// Code of 0.0.
    pub zero_point: u8,
}

impl ActQuant {
    /// Parameters covering `[lo, hi]` widened to include 0 (so 0 is exact); a constant-zero range
    /// gets scale 1.
    pub fn from_range(lo: f32, hi: f32) -> Self {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        Self { scale, zero_point }
    }
}

/// Symmetric per-row int8 quantization of `w` (`rows` rows): codes in `-127..=127` and one scale
/// per row (`max|w_row| / 127`, 1 for an all-zero row).
pub fn quantize_rows(w: &[f32], rows: usize) -> (Vec<i8>, Vec<f32>) {
    quantize_rows_at_least(w, rows, &[])
}

/// [`quantize_rows`] with each row's scale raised to at least `min[row]` (rows past the end of
/// `min` have no floor).
pub fn quantize_rows_at_least(w: &[f32], rows: usize, min: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let cols = w.len() / rows.max(1);
    let mut codes = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(rows);
    for (r, row) in w.chunks(cols.max(1)).take(rows).enumerate() {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = if max > 0.0 { max / 127.0 } else { 1.0 };
        let s = s.max(min.get(r).copied().unwrap_or(0.0));
        scales.push(s);
        codes.extend(
            row.iter()
                .map(|v| (v / s).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (codes, scales)
}

/// The smallest weight scale of each output channel for which its i32 bias code `b / (x_scale *
/// s)` plus any accumulator value (at most `products` products of a u8 code offset by its zero
/// point, |x - zp| <= 255, and an i8 weight code, |w| <= 127) stays within `i32`. Without it, a
/// channel whose weights are all near zero (a dead channel) gets a tiny weight scale, its bias
/// code saturates at `i32::MIN`/`MAX`, and the int32 accumulation wraps: ONNX Runtime and tract
/// then output garbage codes for that channel (seen: 14 codes off the ONNX definition).
pub fn bias_safe_scales(bias: &[f32], x_scale: f32, products: usize) -> anyhow::Result<Vec<f32>> {
    let acc_max = products as f64 * 255.0 * 127.0;
    anyhow::ensure!(
        acc_max <= f64::from(i32::MAX) / 2.0,
        "{products} products per output can overflow the int32 accumulator"
    );
    // Half of what is left, so the f32 rounding of the scale cannot push the code past it.
    let room = (f64::from(i32::MAX) - acc_max) / 2.0;
    anyhow::ensure!(
        x_scale.is_finite() && x_scale > 0.0,
        "activation scale {x_scale} must be finite and > 0"
    );
    Ok(bias
        .iter()
        .map(|b| (f64::from(b.abs()) / (f64::from(x_scale) * room)) as f32)
        .collect())
}

fn floats(t: &pb::TensorProto) -> anyhow::Result<Vec<f32>> {
    anyhow::ensure!(
        t.data_type == DataType::Float as i32,
        "initializer {} is not f32",
        t.name
    );
    if !t.float_data.is_empty() {
        return Ok(t.float_data.clone());
    }
    anyhow::ensure!(
        t.raw_data.len().is_multiple_of(4),
        "initializer {}: raw data length",
        t.name
    );
    Ok(t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn i8_tensor(name: &str, dims: &[i64], v: &[i8]) -> pb::TensorProto {
    raw_tensor(
        name,
        dims,
        DataType::Int8,
        v.iter().map(|&x| x as u8).collect(),
    )
}

fn attr<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

/// Checks that a `Gemm` computes `x W^T + b` (the only form the exporter writes).
fn check_gemm(n: &pb::NodeProto) -> anyhow::Result<()> {
    let ok = n.input.len() == 3
        && attr(n, "transB").is_some_and(|a| a.i == 1)
        && n.attribute.iter().all(|a| a.name == "transB");
    anyhow::ensure!(
        ok,
        "{}: only Gemm(x, W, b) with transB=1 is supported",
        n.name
    );
    Ok(())
}

/// The graph being rewritten, with the float and quantized forms of each activation.
struct Rewriter<'a> {
    inits: HashMap<&'a str, &'a pb::TensorProto>,
    ranges: &'a Ranges,
    nodes: Vec<pb::NodeProto>,
    out_inits: Vec<pb::TensorProto>,
    float: HashSet<String>,
    quant: HashMap<String, ActQuant>,
}

impl<'a> Rewriter<'a> {
    fn init(&self, name: &str) -> anyhow::Result<&'a pb::TensorProto> {
        self.inits
            .get(name)
            .copied()
            .with_context(|| format!("{name}: expected an initializer"))
    }

    fn add_act_params(&mut self, q_name: &str, p: ActQuant) -> (String, String) {
        let (s, z) = (format!("{q_name}.scale"), format!("{q_name}.zero_point"));
        self.out_inits.push(tensor(&s, &[], &[p.scale]));
        self.out_inits
            .push(raw_tensor(&z, &[], DataType::Uint8, vec![p.zero_point]));
        (s, z)
    }

    /// The quantized form of activation `name` (`{name}_q`), inserting a `QuantizeLinear`
    /// with the calibrated range when only the float form exists.
    fn need_quant(&mut self, name: &str) -> anyhow::Result<(String, ActQuant)> {
        let q = format!("{name}_q");
        if let Some(p) = self.quant.get(name) {
            return Ok((q, *p));
        }
        anyhow::ensure!(
            self.float.contains(name),
            "{name}: used before it is computed"
        );
        let (lo, hi) = self.ranges.get(name)?;
        let p = ActQuant::from_range(lo, hi);
        let (s, z) = self.add_act_params(&q, p);
        self.nodes.push(node(
            "QuantizeLinear",
            &format!("{name}.quantize"),
            &[name, &s, &z],
            &q,
            vec![],
        ));
        self.quant.insert(name.to_string(), p);
        Ok((q, p))
    }

    /// The float form of activation `name`, inserting a `DequantizeLinear` when only the
    /// quantized form exists.
    fn need_float(&mut self, name: &str) -> anyhow::Result<String> {
        if self.float.contains(name) {
            return Ok(name.to_string());
        }
        anyhow::ensure!(
            self.quant.contains_key(name),
            "{name}: used before it is computed"
        );
        let q = format!("{name}_q");
        let (s, z) = (format!("{q}.scale"), format!("{q}.zero_point"));
        self.nodes.push(node(
            "DequantizeLinear",
            &format!("{name}.dequantize"),
            &[&q, &s, &z],
            name,
            vec![],
        ));
        self.float.insert(name.to_string());
        Ok(name.to_string())
    }

    /// `QLinearConv` for `conv`, writing the quantized form of `out` with range `range`.
    fn conv(&mut self, conv: &pb::NodeProto, out: &str, range: (f32, f32)) -> anyhow::Result<()> {
        anyhow::ensure!(conv.input.len() == 3, "{}: conv without bias", conv.name);
        let (xq, xp) = self.need_quant(&conv.input[0])?;
        let w_init = self.init(&conv.input[1])?;
        let w = floats(w_init)?;
        let b = floats(self.init(&conv.input[2])?)?;
        let cout = *w_init.dims.first().context("conv weight without dims")? as usize;
        anyhow::ensure!(b.len() == cout, "{}: bias length", conv.name);
        let products = w.len() / cout.max(1);
        let min = bias_safe_scales(&b, xp.scale, products)
            .with_context(|| format!("{}: bias scales", conv.name))?;
        let (codes, scales) = quantize_rows_at_least(&w, cout, &min);
        let bias: Vec<u8> = b
            .iter()
            .zip(&scales)
            .flat_map(|(&b, &s)| {
                let q = (b as f64 / (xp.scale as f64 * s as f64)).round();
                (q.clamp(i32::MIN as f64, i32::MAX as f64) as i32).to_le_bytes()
            })
            .collect();
        let wn = format!("{}_q", conv.input[1]);
        let (ws, wz, bn) = (
            format!("{wn}.scale"),
            format!("{wn}.zero_point"),
            format!("{}_q", conv.input[2]),
        );
        self.out_inits.push(i8_tensor(&wn, &w_init.dims, &codes));
        self.out_inits.push(tensor(&ws, &[cout as i64], &scales));
        self.out_inits
            .push(i8_tensor(&wz, &[cout as i64], &vec![0; cout]));
        self.out_inits
            .push(raw_tensor(&bn, &[cout as i64], DataType::Int32, bias));
        let yp = ActQuant::from_range(range.0, range.1);
        let yq = format!("{out}_q");
        let (ys, yz) = self.add_act_params(&yq, yp);
        let (xs, xz) = (format!("{xq}.scale"), format!("{xq}.zero_point"));
        let mut n = node(
            "QLinearConv",
            &conv.name,
            &[&xq, &xs, &xz, &wn, &ws, &wz, &ys, &yz, &bn],
            &yq,
            vec![],
        );
        n.attribute = conv.attribute.clone();
        self.nodes.push(n);
        self.quant.insert(out.to_string(), yp);
        Ok(())
    }

    /// `MatMulInteger` + rescale + bias for `x W^T + b`, writing the float form of the output.
    fn gemm(&mut self, g: &pb::NodeProto) -> anyhow::Result<()> {
        check_gemm(g)?;
        let (xq, xp) = self.need_quant(&g.input[0])?;
        let w_init = self.init(&g.input[1])?;
        let w = floats(w_init)?;
        let b = floats(self.init(&g.input[2])?)?;
        anyhow::ensure!(w_init.dims.len() == 2, "{}: weight is not 2-D", g.name);
        let (out_dim, in_dim) = (w_init.dims[0] as usize, w_init.dims[1] as usize);
        anyhow::ensure!(
            b.len() == out_dim && w.len() == out_dim * in_dim,
            "{}: shapes",
            g.name
        );
        let (codes, scales) = quantize_rows(&w, out_dim);
        let mut transposed = vec![0i8; codes.len()];
        for o in 0..out_dim {
            for i in 0..in_dim {
                transposed[i * out_dim + o] = codes[o * in_dim + i];
            }
        }
        let out = &g.output[0];
        let wn = format!("{}_q", g.input[1]);
        let rescale = format!("{wn}.rescale");
        let bias = g.input[2].clone();
        self.out_inits.push(i8_tensor(
            &wn,
            &[in_dim as i64, out_dim as i64],
            &transposed,
        ));
        let rs: Vec<f32> = scales.iter().map(|s| s * xp.scale).collect();
        self.out_inits
            .push(tensor(&rescale, &[out_dim as i64], &rs));
        self.out_inits.push(tensor(&bias, &[out_dim as i64], &b));
        let xz = format!("{xq}.zero_point");
        let (acc, accf, scaled) = (
            format!("{out}.acc"),
            format!("{out}.acc_f32"),
            format!("{out}.scaled"),
        );
        self.nodes.push(node(
            "MatMulInteger",
            &g.name,
            &[&xq, &wn, &xz],
            &acc,
            vec![],
        ));
        self.nodes.push(node(
            "Cast",
            &format!("{}.cast", g.name),
            &[&acc],
            &accf,
            vec![int("to", DataType::Float as i64)],
        ));
        self.nodes.push(node(
            "Mul",
            &format!("{}.rescale", g.name),
            &[&accf, &rescale],
            &scaled,
            vec![],
        ));
        self.nodes.push(node(
            "Add",
            &format!("{}.add_bias", g.name),
            &[&scaled, &bias],
            out,
            vec![],
        ));
        self.float.insert(out.clone());
        Ok(())
    }

    /// Keeps `n` in f32: activation inputs are dequantized, constant inputs copied.
    fn float_op(&mut self, n: &pb::NodeProto) -> anyhow::Result<()> {
        let mut m = n.clone();
        for (k, input) in n.input.iter().enumerate() {
            if let Some(t) = self.inits.get(input.as_str()) {
                if !self.out_inits.iter().any(|o| o.name == t.name) {
                    self.out_inits.push((*t).clone());
                }
            } else {
                m.input[k] = self.need_float(input)?;
            }
        }
        self.nodes.push(m);
        for o in &n.output {
            self.float.insert(o.clone());
        }
        Ok(())
    }
}

/// The range an activation node clamps to (`Relu`: `[0, inf)`, `Clip`: its constant bounds).
fn activation_bounds(
    n: &pb::NodeProto,
    inits: &HashMap<&str, &pb::TensorProto>,
) -> anyhow::Result<Option<(f32, f32)>> {
    let bound = |k: usize, default: f32| -> anyhow::Result<f32> {
        match n.input.get(k).filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(name) => {
                let t = inits
                    .get(name.as_str())
                    .with_context(|| format!("{}: bound {name} is not constant", n.name))?;
                floats(t)?
                    .first()
                    .copied()
                    .with_context(|| format!("{}: empty bound {name}", n.name))
            }
        }
    };
    Ok(match n.op_type.as_str() {
        "Relu" => Some((0.0, f32::INFINITY)),
        "Clip" => Some((bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)),
        _ => None,
    })
}

fn graph_of(model: &pb::ModelProto) -> anyhow::Result<&pb::GraphProto> {
    model.graph.as_ref().context("model has no graph")
}

fn with_graph(
    model: &pb::ModelProto,
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    doc: &str,
) -> anyhow::Result<pb::ModelProto> {
    let g = graph_of(model)?;
    let mut out = model.clone();
    out.doc_string = format!("{} {doc}", model.doc_string).trim().to_string();
    out.graph = Some(pb::GraphProto {
        node: nodes,
        initializer: inits,
        ..g.clone()
    });
    Ok(out)
}

/// Rewrites `model` (the exporter's f32 graph: Conv, Relu, Clip, Add, GlobalAveragePool,
/// Flatten, Gemm) for integer compute using the activation ranges `ranges` (from
/// [`crate::calibrate::calibrate`] on the same graph). Input and output stay f32.
pub fn integer(model: &pb::ModelProto, ranges: &Ranges) -> anyhow::Result<pb::ModelProto> {
    let g = graph_of(model)?;
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in &g.node {
        for i in &n.input {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &g.output {
        *uses.entry(o.name.as_str()).or_default() += 1;
    }
    let mut r = Rewriter {
        inits: g.initializer.iter().map(|t| (t.name.as_str(), t)).collect(),
        ranges,
        nodes: Vec::new(),
        out_inits: Vec::new(),
        float: g.input.iter().map(|i| i.name.clone()).collect(),
        quant: HashMap::new(),
    };
    let mut i = 0;
    while i < g.node.len() {
        let n = &g.node[i];
        match n.op_type.as_str() {
            "Conv" => {
                let out = &n.output[0];
                let fused = g
                    .node
                    .get(i + 1)
                    .filter(|a| uses.get(out.as_str()) == Some(&1) && a.input.first() == Some(out));
                match fused.map(|a| (a, activation_bounds(a, &r.inits))) {
                    Some((a, Ok(Some((lo, hi))))) => {
                        let (clo, chi) = r.ranges.get(&a.output[0])?;
                        r.conv(n, &a.output[0], (clo.max(lo), chi.min(hi)))?;
                        i += 2;
                    }
                    Some((_, Err(e))) => return Err(e),
                    _ => {
                        let range = r.ranges.get(out)?;
                        r.conv(n, out, range)?;
                        i += 1;
                    }
                }
            }
            "Gemm" => {
                r.gemm(n)?;
                i += 1;
            }
            "Relu" | "Clip" | "Add" | "GlobalAveragePool" | "Flatten" => {
                r.float_op(n)?;
                i += 1;
            }
            other => anyhow::bail!("{}: op {other} is not supported by the quantizer", n.name),
        }
    }
    for o in &g.output {
        r.need_float(&o.name)?;
    }
    with_graph(
        model,
        r.nodes,
        r.out_inits,
        "Int8: QLinearConv/MatMulInteger, u8 activations (static calibration), i8 per-channel weights.",
    )
}

/// Stores every `Conv` and `Gemm` weight of `model` as i8 with one scale per output channel,
/// dequantized by a `DequantizeLinear` (axis 0) in front of the graph; compute stays f32.
pub fn weights_only(model: &pb::ModelProto) -> anyhow::Result<pb::ModelProto> {
    let g = graph_of(model)?;
    let weights: HashSet<&str> = g
        .node
        .iter()
        .filter(|n| matches!(n.op_type.as_str(), "Conv" | "Gemm"))
        .filter_map(|n| n.input.get(1).map(String::as_str))
        .collect();
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    for t in &g.initializer {
        if !weights.contains(t.name.as_str()) {
            inits.push(t.clone());
            continue;
        }
        let rows = *t.dims.first().context("weight without dims")? as usize;
        let (codes, scales) = quantize_rows(&floats(t)?, rows);
        let q = format!("{}_q", t.name);
        let (s, z) = (format!("{q}.scale"), format!("{q}.zero_point"));
        inits.push(i8_tensor(&q, &t.dims, &codes));
        inits.push(tensor(&s, &[rows as i64], &scales));
        inits.push(i8_tensor(&z, &[rows as i64], &vec![0; rows]));
        nodes.push(node(
            "DequantizeLinear",
            &format!("{}.dequantize", t.name),
            &[&q, &s, &z],
            &t.name,
            vec![int("axis", 0)],
        ));
    }
    nodes.extend(g.node.iter().cloned());
    with_graph(
        model,
        nodes,
        inits,
        "Int8 weights (per-channel, dequantized at load), f32 compute.",
    )
}

/// One quantization step of the output of a graph written by [`integer`]: the output change
/// caused by one code of the last quantized tensor. Output fed by `DequantizeLinear` (possibly
/// through pooling or flatten): that tensor's scale. Output of a dense layer: one input code
/// through the layer, `max_c rescale_c * max_i |w_ic|`.
pub fn one_step(model: &pb::ModelProto) -> anyhow::Result<f32> {
    let g = graph_of(model)?;
    let inits: HashMap<&str, &pb::TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let producer = |name: &str| g.node.iter().find(|n| n.output.iter().any(|o| o == name));
    let mut cur = g
        .output
        .first()
        .context("graph has no output")?
        .name
        .clone();
    loop {
        let n = producer(&cur).with_context(|| format!("{cur}: no producer"))?;
        match n.op_type.as_str() {
            "GlobalAveragePool" | "Flatten" => cur = n.input[0].clone(),
            "DequantizeLinear" => {
                let s = inits.get(n.input[1].as_str()).context("dequantize scale")?;
                return floats(s)?.first().copied().context("empty scale");
            }
            "Mul" | "Cast" => cur = n.input[0].clone(),
            "Add" if n.name.ends_with(".add_bias") => cur = n.input[0].clone(),
            "MatMulInteger" => {
                let w = inits.get(n.input[1].as_str()).context("matmul weight")?;
                let out_dim = *w.dims.get(1).context("weight dims")? as usize;
                let mul = g
                    .node
                    .iter()
                    .find(|m| m.op_type == "Mul" && m.name == format!("{}.rescale", n.name))
                    .context("rescale node")?;
                let rescale = floats(inits.get(mul.input[1].as_str()).context("rescale")?)?;
                let mut max_w = vec![0f32; out_dim];
                for (k, &b) in w.raw_data.iter().enumerate() {
                    let c = k % out_dim;
                    max_w[c] = max_w[c].max((b as i8 as f32).abs());
                }
                return Ok(rescale
                    .iter()
                    .zip(&max_w)
                    .fold(0f32, |m, (r, w)| m.max(r * w)));
            }
            other => anyhow::bail!("{cur}: produced by {other}, not an int8 output path"),
        }
    }
}
