//! [`QuantizeU8`]: tract's f32 -> u8 `QuantizeLinearU8` (ONNX `QuantizeLinear` as tract
//! translates it: the input times the reciprocal scale, rounded half to even, plus the zero
//! point, saturated) computed bit for bit as tract does, in a loop compiled for the CPU's
//! vector width. tract's own loop rounds with a scalar bit trick per value; in the int8
//! encoder the residual stream's quantizations were 12% of the time.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{
    AxesMapping, AxisChangeConsequence, AxisOp, EvalContext, EvalOp, InOut, Op, StaticName, TypedOp,
};
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::QuantizeLinearU8;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::fusion::Fusion;
use super::pool::OutputPool;

/// `out[i] = clamp(round_half_even(x[i] * scale) + zero_point, 0, 255)` with `scale` the
/// reciprocal of ONNX's `y_scale` as tract holds it (NaN gives the zero point, as a saturating
/// cast of NaN gives 0): tract's values exactly, except that products past i32 saturate (as ONNX
/// defines) where tract's sum wraps. Compiled for AVX-512 or AVX2 where the CPU has them (run-time
/// detection). Returns false when the lengths differ.
pub fn quantize_u8(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) -> bool {
    if x.len() != out.len() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if super::x86::has_avx512() {
            // SAFETY: AVX-512F is present; the lengths are equal (checked above).
            #[allow(unsafe_code)]
            unsafe {
                super::q8_x86::quantize_avx512(x, scale, zero_point, out)
            };
            return true;
        }
        if super::x86::has_avx2_fma() {
            // SAFETY: AVX2 is present.
            #[allow(unsafe_code)]
            unsafe {
                quantize_avx2(x, scale, zero_point, out)
            };
            return true;
        }
    }
    quantize(x, scale, zero_point, out);
    true
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_avx2(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    quantize(x, scale, zero_point, out);
}

#[inline(always)]
pub(super) fn quantize(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    let zp = i32::from(zero_point);
    for (d, v) in out.iter_mut().zip(x) {
        let r = (v * scale).round_ties_even() as i32;
        *d = r.saturating_add(zp).clamp(0, 255) as u8;
    }
}

/// The op replacing an f32-input `QuantizeLinearU8`; input and output of any shape (element
/// by element, so tract moves axes through it freely). tract's name for it: `QuantizeU8`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeU8 {
    scale: f32,
    zero_point: u8,
    output_type: DatumType,
    pool: OutputPool,
}

impl Eq for QuantizeU8 {}

impl QuantizeU8 {
    /// The replacement of `node` when it is tract's `QuantizeLinearU8` on an f32 input.
    pub(super) fn parse(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Self>> {
        let Some(ew) = node.op_as::<ElementWiseOp>() else {
            return Ok(None);
        };
        let Some(q) = ew.0.downcast_ref::<QuantizeLinearU8>() else {
            return Ok(None);
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let output_type = model.outlet_fact(node.id.into())?.datum_type;
        if input.datum_type != f32::datum_type() || output_type.unquantized() != u8::datum_type() {
            return Ok(None);
        }
        Ok(Some(Self {
            scale: q.scale,
            zero_point: q.zero_point,
            output_type,
            pool: OutputPool::default(),
        }))
    }
}

impl QuantizeU8 {
    /// `(scale, zero_point, output_type)`: the reciprocal of ONNX's scale as tract holds it,
    /// the zero point, and the quantized u8 type of the output.
    pub fn parameters(&self) -> (f32, u8, DatumType) {
        (self.scale, self.zero_point, self.output_type)
    }
}

impl Op for QuantizeU8 {
    fn name(&self) -> StaticName {
        "QuantizeU8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizeU8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let Some(x) = inputs.first() else {
            return Err(TractError::msg("QuantizeU8 takes one input"));
        };
        let xv = x.try_as_plain_ram()?;
        let xs = xv.as_slice::<f32>()?;
        let out = self.pool.output(self.output_type, x.shape(), |out| {
            let mut ov = out.try_as_plain_ram_mut()?;
            if quantize_u8(xs, self.scale, self.zero_point, ov.as_slice_mut::<u8>()?) {
                Ok(())
            } else {
                Err(TractError::msg("QuantizeU8: lengths differ"))
            }
        })?;
        Ok(tvec!(out))
    }
}

impl TypedOp for QuantizeU8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output_type.fact(inputs[0].shape.clone())))
    }

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        AxesMapping::natural(inputs, outputs)
    }

    fn change_axes(
        &self,
        model: &TypedModel,
        node: &TypedNode,
        _io: InOut,
        change: &AxisOp,
    ) -> TractResult<Option<AxisChangeConsequence>> {
        Ok(Some(AxisChangeConsequence::new(model, node, None, change)))
    }

    as_op!();
}

/// Most channels [`QuantizeChannelsLast`] takes (its block of codes lives on the stack).
const MAX_CHANNELS: usize = 16;
/// Codes per block of [`quantize_channels_last`]: a whole number of pixels of up to
/// [`MAX_CHANNELS`] channels.
const BLOCK_CODES: usize = 1024;

/// Quantizes `x`, `channels` planes of `x.len() / channels` values (channels-first, one image),
/// into `out` channels-last: `out[p * channels + c] = q(x[c * plane + p])`, `q` as
/// [`quantize_u8`]. Returns false when the lengths differ, `x.len()` is not a whole number of
/// planes, or `channels` is 0 or more than 16.
pub fn quantize_channels_last(
    x: &[f32],
    channels: usize,
    scale: f32,
    zero_point: u8,
    out: &mut [u8],
) -> bool {
    if x.len() != out.len()
        || channels == 0
        || channels > MAX_CHANNELS
        || !x.len().is_multiple_of(channels)
    {
        return false;
    }
    let plane = x.len() / channels;
    let pixels = BLOCK_CODES / channels;
    let mut block = [0u8; BLOCK_CODES];
    for start in (0..plane).step_by(pixels) {
        let n = pixels.min(plane - start);
        for c in 0..channels {
            let src = &x[c * plane + start..c * plane + start + n];
            quantize_u8(src, scale, zero_point, &mut block[c * n..(c + 1) * n]);
        }
        let dst = &mut out[start * channels..(start + n) * channels];
        if channels == 3 {
            let (r, rest) = block[..3 * n].split_at(n);
            let (g, b) = rest.split_at(n);
            for (((d, &r), &g), &b) in dst.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
                d.copy_from_slice(&[r, g, b]);
            }
        } else {
            for (p, d) in dst.chunks_exact_mut(channels).enumerate() {
                for (c, v) in d.iter_mut().enumerate() {
                    *v = block[c * n + p];
                }
            }
        }
    }
    true
}

/// A [`QuantizeU8`] whose only consumer moved the channel axis last, fused: input `[1, C, H, W]`
/// f32, output `[1, H, W, C]` u8 codes, `C` at most 16 (the image input of the int8 encoders,
/// `C = 3`). tract's name for it: `QuantizeChannelsLast`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeChannelsLast {
    quantize: QuantizeU8,
}

impl Eq for QuantizeChannelsLast {}

impl QuantizeChannelsLast {
    /// The fusion of `node`, a [`QuantizeU8`] on a `[1, C, H, W]` input, with its only consumer
    /// when that is the move of axis 1 to axis 3 (whose consumers it takes over).
    pub(super) fn parse(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Fusion>> {
        let Some(q) = node.op_as::<QuantizeU8>() else {
            return Ok(None);
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let Some(shape) = input.shape.as_concrete() else {
            return Ok(None);
        };
        let succ = &node.outputs[0].successors;
        let outlet = OutletId::new(node.id, 0);
        if shape.len() != 4
            || shape[0] != 1
            || !(1..=MAX_CHANNELS).contains(&shape[1])
            || succ.len() != 1
            || model.output_outlets()?.contains(&outlet)
        {
            return Ok(None);
        }
        let next = model.node(succ[0].node);
        if next.op_as::<AxisOp>() != Some(&AxisOp::Move(1, 3)) {
            return Ok(None);
        }
        Ok(Some(Fusion {
            // A clone's output pool starts empty (`OutputPool`'s `Clone`).
            op: Box::new(Self {
                quantize: q.clone(),
            }),
            inputs: tvec![node.inputs[0]],
            replaces: OutletId::new(next.id, 0),
        }))
    }
}

impl Op for QuantizeChannelsLast {
    fn name(&self) -> StaticName {
        "QuantizeChannelsLast".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizeChannelsLast {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let Some(x) = inputs.first() else {
            return Err(TractError::msg("QuantizeChannelsLast takes one input"));
        };
        let &[1, c, h, w] = x.shape() else {
            return Err(TractError::msg(
                "QuantizeChannelsLast takes a [1, C, H, W] input",
            ));
        };
        let xs = x.try_as_plain_ram()?.as_slice::<f32>()?;
        let q = &self.quantize;
        let out = q.pool.output(q.output_type, &[1, h, w, c], |out| {
            let mut ov = out.try_as_plain_ram_mut()?;
            if quantize_channels_last(xs, c, q.scale, q.zero_point, ov.as_slice_mut::<u8>()?) {
                Ok(())
            } else {
                Err(TractError::msg("QuantizeChannelsLast: unsupported shape"))
            }
        })?;
        Ok(tvec!(out))
    }
}

impl TypedOp for QuantizeChannelsLast {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.clone();
        AxisOp::Move(1, 3).change_shape(&mut shape, false)?;
        Ok(tvec!(self.quantize.output_type.fact(shape)))
    }

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        AxesMapping::disconnected(inputs, outputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::quant::quantize_linear_f32_u8;

    #[test]
    fn equals_tracts_quantize_bit_for_bit() {
        let mut x: Vec<f32> = vec![
            0.0,
            -0.0,
            0.5,
            1.5,
            2.5,
            -0.5,
            -1.5,
            127.5,
            128.5,
            -1e30,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            -3e9,
            1e6,
        ];
        let mut seed = 9u32;
        for _ in 0..1000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            x.push((seed >> 8) as f32 / (1 << 16) as f32 - 128.0);
        }
        for (scale, zp) in [(1.0, 0), (1.0, 128), (2.0, 3), (41.7, 255), (0.013, 77)] {
            let mut out = vec![0xAA; x.len()];
            assert!(quantize_u8(&x, scale, zp, &mut out));
            let want: Vec<u8> = x
                .iter()
                .map(|&v| quantize_linear_f32_u8(v, scale, i32::from(zp)))
                .collect();
            assert_eq!(out, want, "scale {scale} zero point {zp}");
            let mut portable = vec![0xAA; x.len()];
            quantize(&x, scale, zp, &mut portable);
            assert_eq!(portable, want);
        }
        assert!(!quantize_u8(&[1.0], 1.0, 0, &mut []));
        // Past i32, tract's `as i32 + zero_point` wraps (release) or panics (debug); ONNX
        // saturates, and so does this op.
        let huge: Vec<f32> = [3e9, 1e30, f32::INFINITY, 2_147_483_648.0, 2_147_483_520.0]
            .into_iter()
            .cycle()
            .take(37)
            .collect();
        let mut out = vec![0u8; huge.len()];
        assert!(quantize_u8(&huge, 1.0, 200, &mut out));
        assert_eq!(out, vec![255; huge.len()]);
    }
}
