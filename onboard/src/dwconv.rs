//! A depthwise 2-D convolution op for tract (f32, batch 1) computed channels-last, so the inner
//! loop runs over contiguous channels and the compiler vectorizes it (SSE on x86, NEON on
//! aarch64, where tract already lays the graph out channels-last); [`substitute`] swaps it in
//! for tract's generic depthwise kernel in a decluttered model.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{
    AxesMapping, EvalContext, EvalOp, Op, StaticName, TypedModelPatch, TypedOp,
};
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Shape of one depthwise convolution: `channels` planes of `input` `[h, w]` to `output`
/// `[h, w]`, kernel `[kh, kw]`, one stride for both axes, zero padding top and left (bottom and
/// right follow from the output size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Channels (= groups).
    pub channels: usize,
    /// Input plane `[h, w]`.
    pub input: [usize; 2],
    /// Output plane `[h, w]`.
    pub output: [usize; 2],
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding `[top, left]`.
    pub pad: [usize; 2],
}

/// `out[c] = bias[c] + sum_{ky, kx} w[c, ky, kx] * x_padded[c, y * s + ky, x * s + kx]`.
/// `x`: `[c, h, w]`, `w_taps`: `[kh, kw, c]` (tap-major: see [`taps_major`]), `bias`: `[c]`,
/// `out`: `[c, ho, wo]`, all row-major. The planes are transposed to channels-last into
/// `scratch` so that the inner loop runs over channels, contiguous and long enough to
/// vectorize however small the planes are. Returns false (leaving `out` unspecified) when a
/// length does not match `g`.
pub fn depthwise(
    x: &[f32],
    w_taps: &[f32],
    bias: &[f32],
    g: &Geometry,
    scratch: &mut Scratch,
    out: &mut [f32],
) -> bool {
    let (c, [h, wd], [ho, wo]) = (g.channels, g.input, g.output);
    if x.len() != c * h * wd || out.len() != c * ho * wo {
        return false;
    }
    for (buf, n) in [
        (&mut scratch.input, x.len()),
        (&mut scratch.output, out.len()),
    ] {
        if buf.len() < n {
            buf.resize(n, 0.0);
        }
    }
    let (input, output) = (
        &mut scratch.input[..x.len()],
        &mut scratch.output[..out.len()],
    );
    transpose(x, c, h * wd, input);
    if !depthwise_hwc(input, w_taps, bias, g, output) {
        return false;
    }
    transpose(output, ho * wo, c, out);
    true
}

/// [`depthwise`] on channels-last planes: `x` `[h, w, c]`, `out` `[ho, wo, c]` (the layout
/// tract itself picks on aarch64), no transposes. Returns false when a length does not match.
pub fn depthwise_hwc(
    x: &[f32],
    w_taps: &[f32],
    bias: &[f32],
    g: &Geometry,
    out: &mut [f32],
) -> bool {
    let (c, [h, wd], [ho, wo], [kh, kw], s) =
        (g.channels, g.input, g.output, g.kernel, g.stride.max(1));
    if x.len() != c * h * wd
        || out.len() != c * ho * wo
        || w_taps.len() != c * kh * kw
        || bias.len() != c
    {
        return false;
    }
    let [pt, pl] = g.pad;
    for y in 0..ho {
        for xo in 0..wo {
            let at = (y * wo + xo) * c;
            let acc = &mut out[at..at + c];
            acc.copy_from_slice(bias);
            for ky in 0..kh {
                let iy = y * s + ky;
                if iy < pt || iy - pt >= h {
                    continue;
                }
                for kx in 0..kw {
                    let ix = xo * s + kx;
                    if ix < pl || ix - pl >= wd {
                        continue;
                    }
                    let from = ((iy - pt) * wd + ix - pl) * c;
                    let tap = (ky * kw + kx) * c;
                    let xs = &x[from..from + c];
                    let ws = &w_taps[tap..tap + c];
                    for ((a, v), w) in acc.iter_mut().zip(xs).zip(ws) {
                        *a += w * v;
                    }
                }
            }
        }
    }
    true
}

/// The same convolution as [`depthwise`] computed plane by plane, the inner loop along output
/// rows: faster than transposing when the planes are wide. `w`: `[c, kh, kw]`.
pub fn depthwise_rows(x: &[f32], w: &[f32], bias: &[f32], g: &Geometry, out: &mut [f32]) -> bool {
    let ([h, wd], [ho, wo], [kh, kw], s) = (g.input, g.output, g.kernel, g.stride.max(1));
    let (plane, oplane, kplane) = (h * wd, ho * wo, kh * kw);
    if x.len() != g.channels * plane
        || out.len() != g.channels * oplane
        || w.len() != g.channels * kplane
        || bias.len() != g.channels
    {
        return false;
    }
    let [pt, pl] = g.pad;
    for c in 0..g.channels {
        let xin = &x[c * plane..(c + 1) * plane];
        let o = &mut out[c * oplane..(c + 1) * oplane];
        o.fill(bias[c]);
        let wc = &w[c * kplane..(c + 1) * kplane];
        for kx in 0..kw {
            // Output columns whose input column x * s + kx - pl lies inside the row.
            let x_lo = pl.saturating_sub(kx).div_ceil(s);
            let x_hi = if wd + pl > kx {
                wo.min((wd + pl - kx - 1) / s + 1)
            } else {
                0
            };
            if x_lo >= x_hi {
                continue;
            }
            let first = x_lo * s + kx - pl;
            for ky in 0..kh {
                let wv = wc[ky * kw + kx];
                for y in 0..ho {
                    let iy = y * s + ky;
                    if iy < pt || iy - pt >= h {
                        continue;
                    }
                    let row = &xin[(iy - pt) * wd..(iy - pt + 1) * wd];
                    let orow = &mut o[y * wo + x_lo..y * wo + x_hi];
                    if s == 1 {
                        let irow = &row[first..first + orow.len()];
                        for (a, v) in orow.iter_mut().zip(irow) {
                            *a += wv * v;
                        }
                    } else {
                        for (a, v) in orow.iter_mut().zip(row[first..].iter().step_by(s)) {
                            *a += wv * v;
                        }
                    }
                }
            }
        }
    }
    true
}

/// `dst[j * rows + i] = src[i * cols + j]` for a row-major `[rows, cols]` `src`, in 16 x 16
/// tiles so that reads and writes both stay within a few cache lines.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const T: usize = 16;
    if src.len() < rows * cols || dst.len() < rows * cols {
        return;
    }
    for i0 in (0..rows).step_by(T) {
        for j0 in (0..cols).step_by(T) {
            for i in i0..(i0 + T).min(rows) {
                let row = &src[i * cols..(i + 1) * cols];
                for j in j0..(j0 + T).min(cols) {
                    dst[j * rows + i] = row[j];
                }
            }
        }
    }
}

/// Depthwise weights `[c, kh, kw]` (ONNX/tract layout) reordered to `[kh, kw, c]`.
pub fn taps_major(w: &[f32], c: usize, taps: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    transpose(w, c, taps, &mut out);
    out
}

/// Buffers [`depthwise`] reuses: the input and output planes, channels-last.
#[derive(Debug, Default)]
pub struct Scratch {
    input: Vec<f32>,
    output: Vec<f32>,
}

/// Stride-1 convolutions with output planes at least this wide run [`depthwise_rows`], the
/// others [`depthwise`] (per-layer timings in `docs/PERFORMANCE.md`).
pub const ROWS_MIN_WIDTH: usize = 24;

/// Whether [`DepthwiseF32`] runs `g` plane by plane ([`depthwise_rows`]).
pub fn uses_rows(g: &Geometry) -> bool {
    g.stride == 1 && g.output[1] >= ROWS_MIN_WIDTH
}

std::thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// The op: [`depthwise_hwc`] when tract's layout is channels-last (aarch64), else
/// [`depthwise_rows`] (wide planes, weights `[c, kh, kw]`) or [`depthwise`] (narrow planes),
/// with its weights (`[kh, kw, c]` for the channels-last kernels) and bias `[c]` baked in. Input
/// and output f32 in tract's layout for the node: `[1, c, h, w]`, `[c, h, w]`, `[1, h, w, c]` or
/// `[h, w, c]` (the batch axis dropped or not, channels first or last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthwiseF32 {
    geometry: Geometry,
    batch_axis: bool,
    channels_last: bool,
    weights: Arc<Tensor>,
    bias: Arc<Tensor>,
}

impl DepthwiseF32 {
    fn output_shape(&self) -> TVec<usize> {
        let g = &self.geometry;
        let mut shape: TVec<usize> = if self.channels_last {
            tvec![g.output[0], g.output[1], g.channels]
        } else {
            tvec![g.channels, g.output[0], g.output[1]]
        };
        if self.batch_axis {
            shape.insert(0, 1);
        }
        shape
    }
}

impl Op for DepthwiseF32 {
    fn name(&self) -> StaticName {
        "DepthwiseF32".into()
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for DepthwiseF32 {
    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(EvalOp::eval(
            self,
            &EvalContext::out_of_plan(),
            inputs,
        )?))
    }

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let g = &self.geometry;
        let Some(x) = inputs.first() else {
            return Err(TractError::msg("DepthwiseF32 takes one input"));
        };
        let mut out = Tensor::zero::<f32>(&self.output_shape())?;
        {
            let xv = x.try_as_plain_ram()?;
            let (wv, bv) = (
                self.weights.try_as_plain_ram()?,
                self.bias.try_as_plain_ram()?,
            );
            let mut ov = out.try_as_plain_ram_mut()?;
            let (x, w, b) = (
                xv.as_slice::<f32>()?,
                wv.as_slice::<f32>()?,
                bv.as_slice::<f32>()?,
            );
            let out = ov.as_slice_mut::<f32>()?;
            let ok = if self.channels_last {
                depthwise_hwc(x, w, b, g, out)
            } else if uses_rows(g) {
                depthwise_rows(x, w, b, g, out)
            } else {
                SCRATCH.with(|s| depthwise(x, w, b, g, &mut s.borrow_mut(), out))
            };
            if !ok {
                return Err(TractError::msg(format!(
                    "DepthwiseF32: {} input values do not match {g:?}",
                    x.len()
                )));
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for DepthwiseF32 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(self.output_shape())))
    }

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        AxesMapping::disconnected(inputs, outputs)
    }

    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }
}

/// The replacement for one tract `Conv` node, when it is an f32 depthwise 2-D convolution in
/// NCHW or NHWC (batch 1), CHW or HWC layout, with constant weights and bias, no dilation and
/// explicit padding.
fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<DepthwiseF32>> {
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    let ps = &conv.pool_spec;
    let c = ps.input_channels;
    if conv.q_params.is_some()
        || conv.group != c
        || ps.output_channels != c
        || !matches!(
            ps.data_format,
            DataFormat::NCHW | DataFormat::CHW | DataFormat::NHWC | DataFormat::HWC
        )
        || ps.kernel_shape.len() != 2
        || conv.kernel_fmt != KernelFormat::OIHW
        || node.inputs.len() != 3
        || ps
            .dilations
            .as_ref()
            .is_some_and(|d| d.iter().any(|&d| d != 1))
    {
        return Ok(None);
    }
    let strides: Vec<usize> = ps.strides.as_ref().map_or(vec![1, 1], |s| s.to_vec());
    if strides.len() != 2 || strides[0] != strides[1] {
        return Ok(None);
    }
    let pad = match &ps.padding {
        PaddingSpec::Explicit(b, _) | PaddingSpec::ExplicitOnnxPool(b, _, false) => [b[0], b[1]],
        PaddingSpec::Valid => [0, 0],
        _ => return Ok(None),
    };
    let fact = model.outlet_fact(node.inputs[0])?;
    let out_fact = model.outlet_fact(node.id.into())?;
    let (Some(ins), Some(outs)) = (
        fact.shape.as_concrete().map(<[usize]>::to_vec),
        out_fact.shape.as_concrete().map(<[usize]>::to_vec),
    ) else {
        return Ok(None);
    };
    let batch_axis = matches!(ps.data_format, DataFormat::NCHW | DataFormat::NHWC);
    let channels_last = matches!(ps.data_format, DataFormat::NHWC | DataFormat::HWC);
    let unbatched = |v: &[usize]| match (batch_axis, v) {
        (true, [1, rest @ ..]) | (false, rest) => <[usize; 3]>::try_from(rest).ok(),
        _ => None,
    };
    let (Some(ins), Some(outs)) = (unbatched(&ins), unbatched(&outs)) else {
        return Ok(None);
    };
    // As `[c, h, w]` whatever the layout.
    let chw = |[a, b, c]: [usize; 3]| if channels_last { [c, a, b] } else { [a, b, c] };
    let (ins, outs) = (chw(ins), chw(outs));
    if fact.datum_type != f32::datum_type() || ins[0] != c || outs[0] != c {
        return Ok(None);
    }
    let konst = |i: usize| model.outlet_fact(node.inputs[i]).map(|f| f.konst.clone());
    let (Some(w), Some(b)) = (konst(1)?, konst(2)?) else {
        return Ok(None);
    };
    let [kh, kw] = [ps.kernel_shape[0], ps.kernel_shape[1]];
    if w.datum_type() != f32::datum_type() || w.len() != c * kh * kw {
        return Ok(None);
    }
    let bias = match b.len() {
        n if n == c => b,
        1 => Arc::new(tensor1(&vec![b.cast_to_scalar::<f32>()?; c])),
        _ => return Ok(None),
    };
    let geometry = Geometry {
        channels: c,
        input: [ins[1], ins[2]],
        output: [outs[1], outs[2]],
        kernel: [kh, kw],
        stride: strides[0],
        pad,
    };
    Ok(Some(DepthwiseF32 {
        geometry,
        batch_axis,
        channels_last,
        weights: if uses_rows(&geometry) && !channels_last {
            w
        } else {
            Arc::new(tensor1(&taps_major(
                w.try_as_plain_ram()?.as_slice::<f32>()?,
                c,
                kh * kw,
            )))
        },
        bias,
    }))
}

/// Replaces every depthwise convolution [`DepthwiseF32`] can run in the decluttered `model`;
/// returns the model and how many nodes were replaced.
pub fn substitute(mut model: TypedModel) -> TractResult<(TypedModel, usize)> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(op) = replacement(&model, node)? else {
            continue;
        };
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(&model, node.inputs[0])?;
        let y = patch.wire_node(&node.name, op, &[x])?;
        patch.shunt_outside(&model, id.into(), y[0])?;
        patch.apply(&mut model)?;
        replaced += 1;
    }
    Ok((model.into_compact()?, replaced))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition with explicit zero padding.
    fn reference(x: &[f32], w: &[f32], b: &[f32], g: &Geometry) -> Vec<f32> {
        let ([h, wd], [ho, wo], [kh, kw]) = (g.input, g.output, g.kernel);
        let mut out = vec![0.0; g.channels * ho * wo];
        for c in 0..g.channels {
            for y in 0..ho {
                for xo in 0..wo {
                    let mut acc = b[c];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (y * g.stride + ky) as isize - g.pad[0] as isize;
                            let ix = (xo * g.stride + kx) as isize - g.pad[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                acc += w[(c * kh + ky) * kw + kx]
                                    * x[(c * h + iy as usize) * wd + ix as usize];
                            }
                        }
                    }
                    out[(c * ho + y) * wo + xo] = acc;
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_for_every_kernel_stride_and_padding_the_backbone_uses() {
        let mut seed = 1u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for &(k, s, pad, h, w) in &[
            (3, 1, [1, 1], 12, 12),
            (3, 2, [0, 0], 13, 12),
            (5, 1, [2, 2], 7, 9),
            (5, 2, [1, 1], 12, 12),
            (3, 2, [1, 1], 3, 3),
            (5, 2, [2, 2], 1, 2),
        ] {
            let ho = (h + 2 * pad[0] - k) / s + 1;
            let wo = (w + 2 * pad[1] - k) / s + 1;
            let g = Geometry {
                channels: 3,
                input: [h, w],
                output: [ho, wo],
                kernel: [k, k],
                stride: s,
                pad,
            };
            let x: Vec<f32> = (0..3 * h * w).map(|_| next()).collect();
            let wt: Vec<f32> = (0..3 * k * k).map(|_| next()).collect();
            let b = [0.1, -0.2, 0.3];
            let mut out = vec![f32::NAN; 3 * ho * wo];
            let taps = taps_major(&wt, 3, k * k);
            let mut scratch = Scratch::default();
            assert!(depthwise(&x, &taps, &b, &g, &mut scratch, &mut out));
            let mut rows = vec![f32::NAN; 3 * ho * wo];
            assert!(depthwise_rows(&x, &wt, &b, &g, &mut rows));
            assert_eq!(out.len(), rows.len());
            let want = reference(&x, &wt, &b, &g);
            for (i, ((a, r), w)) in out.iter().zip(&rows).zip(&want).enumerate() {
                assert!(
                    (a - w).abs() < 1e-5,
                    "k{k} s{s} pad{pad:?} {h}x{w} at {i}: {a} vs {w}"
                );
                assert!(
                    (r - w).abs() < 1e-5,
                    "rows k{k} s{s} {h}x{w} at {i}: {r} vs {w}"
                );
            }
            assert!(!depthwise(&x[1..], &taps, &b, &g, &mut scratch, &mut out));
            // Channels-last in and out: the transposed definition.
            let mut x_hwc = vec![0.0; x.len()];
            transpose(&x, 3, h * w, &mut x_hwc);
            let mut hwc = vec![f32::NAN; out.len()];
            assert!(depthwise_hwc(&x_hwc, &taps, &b, &g, &mut hwc));
            let mut want_hwc = vec![0.0; want.len()];
            transpose(&want, 3, ho * wo, &mut want_hwc);
            for (a, e) in hwc.iter().zip(&want_hwc) {
                assert!((a - e).abs() < 1e-5, "hwc k{k} s{s} {h}x{w}: {a} vs {e}");
            }
            assert!(!depthwise_rows(&x[1..], &wt, &b, &g, &mut rows));
        }
    }
}
