//! [`Im2colF32`]: tract op running a dense (one-group) convolution on channels-last tensors as
//! patch rows through the [`pointwise`] kernel.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{AxesMapping, EvalContext, EvalOp, Op, StaticName, TypedOp};

use super::depthwise_kernel::{transpose, Clamp, Geometry};
use super::parse::ConvNode;
use super::pointwise_kernel::{pointwise, Packed};
use super::ChannelMove;

/// Patch rows of `x` `[h, w, ci]` (channels-last) for a `g.kernel` window at `g.stride` with
/// zero padding `g.pad` (`g.channels` = `ci`): row `y * wo + x` holds the window's values in
/// `[ky, kx, ci]` order, zero outside the plane. `rows` is resized to `ho * wo * kh * kw * ci`.
/// Returns false when `x` does not hold `h * w * ci` values.
pub fn patches(x: &[f32], g: &Geometry, rows: &mut Vec<f32>) -> bool {
    let (ci, [h, w], [ho, wo], [kh, kw], s, [pt, pl]) =
        (g.channels, g.input, g.output, g.kernel, g.stride, g.pad);
    if x.len() != h * w * ci || s == 0 {
        return false;
    }
    let len = kh * kw * ci;
    rows.clear();
    rows.resize(ho * wo * len, 0.0);
    for (p, row) in rows.chunks_exact_mut(len.max(1)).enumerate() {
        let (y, xo) = (p / wo, p % wo);
        // Window columns inside the plane: one contiguous run per window row.
        let kx0 = pl.saturating_sub(xo * s);
        let kx1 = kw.min((w + pl).saturating_sub(xo * s)).max(kx0);
        let run = (kx1 - kx0) * ci;
        if run == 0 {
            continue;
        }
        for ky in 0..kh {
            let iy = y * s + ky;
            if iy < pt || iy - pt >= h {
                continue;
            }
            let from = ((iy - pt) * w + xo * s + kx0 - pl) * ci;
            let to = (ky * kw + kx0) * ci;
            row[to..to + run].copy_from_slice(&x[from..from + run]);
        }
    }
    true
}

std::thread_local! {
    static ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The op: [`patches`] then [`pointwise`] with the weights reordered to `[co, kh, kw, ci]` and
/// packed, and the output [`Clamp`] baked in. Input `[1, h, w, ci]` or `[h, w, ci]` f32, output
/// `[1, ho, wo, co]` or `[ho, wo, co]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Im2colF32 {
    geometry: Geometry,
    batch_axis: bool,
    weights: Arc<Packed>,
    clamp: Clamp,
}

impl Im2colF32 {
    fn output_shape(&self) -> TVec<usize> {
        let [ho, wo] = self.geometry.output;
        let mut shape: TVec<usize> = tvec![ho, wo, self.weights.output_channels()];
        if self.batch_axis {
            shape.insert(0, 1);
        }
        shape
    }

    /// The fused output bounds.
    pub fn clamp(&self) -> Clamp {
        self.clamp
    }

    /// The same op with output bounds `clamp`.
    pub fn with_clamp(&self, clamp: Clamp) -> Self {
        Self {
            clamp,
            ..self.clone()
        }
    }
}

impl Op for Im2colF32 {
    fn name(&self) -> StaticName {
        "Im2colF32".into()
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for Im2colF32 {
    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(EvalOp::eval(
            self,
            &EvalContext::out_of_plan(),
            inputs,
        )?))
    }

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let Some(x) = inputs.first() else {
            return Err(TractError::msg("Im2colF32 takes one input"));
        };
        let mut out = Tensor::zero::<f32>(&self.output_shape())?;
        {
            let xv = x.try_as_plain_ram()?;
            let mut ov = out.try_as_plain_ram_mut()?;
            let (x, o) = (xv.as_slice::<f32>()?, ov.as_slice_mut::<f32>()?);
            let ok = ROWS.with(|rows| {
                let rows = &mut rows.borrow_mut();
                patches(x, &self.geometry, rows) && pointwise(rows, &self.weights, self.clamp, o)
            });
            if !ok {
                return Err(TractError::msg(format!(
                    "Im2colF32: {} input values do not match {:?}",
                    x.len(),
                    self.geometry
                )));
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Im2colF32 {
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

/// Weights `[co, ci, kh, kw]` reordered to `[co, kh, kw, ci]`, the order of a [`patches`] row
/// (`taps` = `kh * kw`).
pub fn patch_order(w: &[f32], ci: usize, taps: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for (src, dst) in w
        .chunks_exact((ci * taps).max(1))
        .zip(out.chunks_exact_mut((ci * taps).max(1)))
    {
        transpose(src, ci, taps, dst);
    }
    out
}

/// The replacement for one tract `Conv` node, when it is a one-group convolution with a kernel
/// larger than 1x1 (or a stride or padding) that [`ConvNode::parse`] accepts; with the channel
/// axis move its channels-first input needs.
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(Im2colF32, Option<ChannelMove>)>> {
    let Some(conv) = ConvNode::parse(model, node)? else {
        return Ok(None);
    };
    if conv.group != 1 {
        return Ok(None);
    }
    let (ci, co, [kh, kw]) = (conv.ci, conv.co, conv.kernel);
    let w = patch_order(&conv.weights, ci, kh * kw);
    let Some(weights) = Packed::new(&w, &conv.bias, co, ci * kh * kw) else {
        return Ok(None);
    };
    let op = Im2colF32 {
        geometry: Geometry {
            channels: ci,
            input: conv.input,
            output: conv.output,
            kernel: conv.kernel,
            stride: conv.stride,
            pad: conv.pad,
        },
        batch_axis: conv.batch_axis,
        weights: Arc::new(weights),
        clamp: Clamp::NONE,
    };
    Ok(Some((op, conv.channel_move())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_through_the_pointwise_kernel_match_the_definition() {
        let mut seed = 3u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        // (ci, co, side, kernel, stride, pad): the stem's shape, and odd ones.
        for (ci, co, side, k, s, pad) in
            [(3, 32, 11, 3, 2, 0), (2, 5, 7, 3, 1, 1), (4, 3, 6, 5, 2, 2)]
        {
            let out_side = (side + 2 * pad - k) / s + 1;
            let g = Geometry {
                channels: ci,
                input: [side, side],
                output: [out_side, out_side],
                kernel: [k, k],
                stride: s,
                pad: [pad, pad],
            };
            let x: Vec<f32> = (0..side * side * ci).map(|_| next()).collect();
            let w: Vec<f32> = (0..co * ci * k * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..co).map(|_| next()).collect();
            let mut rows = Vec::new();
            assert!(patches(&x, &g, &mut rows));
            let packed = Packed::new(&patch_order(&w, ci, k * k), &b, co, ci * k * k)
                .expect("lengths match");
            let mut out = vec![f32::NAN; out_side * out_side * co];
            assert!(pointwise(&rows, &packed, Clamp::NONE, &mut out));
            for y in 0..out_side {
                for xo in 0..out_side {
                    for o in 0..co {
                        let mut want = b[o];
                        for c in 0..ci {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (y * s + ky) as isize - pad as isize;
                                    let ix = (xo * s + kx) as isize - pad as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= side as isize
                                        || ix >= side as isize
                                    {
                                        continue;
                                    }
                                    let v = x[(iy as usize * side + ix as usize) * ci + c];
                                    want += w[((o * ci + c) * k + ky) * k + kx] * v;
                                }
                            }
                        }
                        let got = out[(y * out_side + xo) * co + o];
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{ci}->{co} k{k} s{s}: {got} vs {want}"
                        );
                    }
                }
            }
            assert!(!patches(&x[1..], &g, &mut rows));
        }
    }
}
