//! [`DequantizeSum`]: the int8 graphs' global average pool starts with a `DequantizeLinearF32`
//! of the head's u8 codes and a `Reduce<Sum>` over the spatial axes; this op does both in one
//! pass, with tract's arithmetic bit for bit: each code dequantized as
//! `(x - zero_point) as f32 * scale`, and each channel's values summed in f32 in the order tract
//! sums them (the spatial axes of `[1, h, w, c]` merged into one, rows added one after the
//! other to a zero start: ndarray's `sum_axis` over a non-contiguous axis).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{AxesMapping, EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};
use tract_onnx::tract_core::ops::quant::DequantizeLinearF32;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::fusion::Fusion;
use super::pool::OutputPool;

/// `out[c] += (x[c] - zero_point) as f32 * scale` for one row of `out.len()` channels.
#[inline(always)]
fn add_row(x: &[u8], scale: f32, zero_point: i32, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o += (i32::from(v) - zero_point) as f32 * scale;
    }
}

/// Every row of `x` (`out.len()` channels each) added to `out` in order.
#[inline(always)]
fn sum_rows(x: &[u8], scale: f32, zero_point: i32, out: &mut [f32]) {
    for row in x.chunks_exact(out.len()) {
        add_row(row, scale, zero_point, out);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_rows_avx512(x: &[u8], scale: f32, zero_point: i32, out: &mut [f32]) {
    sum_rows(x, scale, zero_point, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_rows_avx2(x: &[u8], scale: f32, zero_point: i32, out: &mut [f32]) {
    sum_rows(x, scale, zero_point, out);
}

/// `out[c] = sum over rows p, in order from 0.0, of (x[p * C + c] - zero_point) as f32 * scale`
/// with `C = out.len()`, compiled for the widest vectors the CPU has (the same scalar arithmetic
/// in every lane, so the same values on every path). Returns false unless `x` holds whole rows.
pub fn dequantize_sum(x: &[u8], scale: f32, zero_point: i32, out: &mut [f32]) -> bool {
    if out.is_empty() || !x.len().is_multiple_of(out.len()) {
        return false;
    }
    out.fill(0.0);
    #[cfg(target_arch = "x86_64")]
    {
        if super::x86::has_avx512() {
            // SAFETY: AVX-512F is present.
            #[allow(unsafe_code)]
            unsafe {
                sum_rows_avx512(x, scale, zero_point, out)
            };
            return true;
        }
        if super::x86::has_avx2_fma() {
            // SAFETY: AVX2 is present.
            #[allow(unsafe_code)]
            unsafe {
                sum_rows_avx2(x, scale, zero_point, out)
            };
            return true;
        }
    }
    sum_rows(x, scale, zero_point, out);
    true
}

/// The op replacing `Reduce<Sum>` over every axis but the first and the last of
/// `DequantizeLinearF32(codes)`, codes `[1, .., c]` u8 that nothing else reads. Output
/// `[1, 1, .., c]` f32. tract's name for it: `DequantizeSum`.
#[derive(Debug, Clone, PartialEq)]
pub struct DequantizeSum {
    scale: f32,
    zero_point: i32,
    pool: OutputPool,
}

impl Eq for DequantizeSum {}

impl DequantizeSum {
    /// The fusion rooted at `node` (the `Reduce`), reading the codes.
    pub(super) fn parse(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Fusion>> {
        let Some(reduce) = node.op_as::<Reduce>() else {
            return Ok(None);
        };
        let producer = model.node(node.inputs[0].node);
        let Some(dq) = producer.op_as::<DequantizeLinearF32>() else {
            return Ok(None);
        };
        let codes = model.outlet_fact(producer.inputs[0])?;
        let Some(shape) = codes.shape.as_concrete() else {
            return Ok(None);
        };
        let rank = shape.len();
        let spatial: Vec<usize> = (1..rank.saturating_sub(1)).collect();
        let private = producer.outputs[0].successors.len() == 1
            && !model.output_outlets()?.contains(&node.inputs[0]);
        if reduce.reducer != Reducer::Sum
            || rank < 3
            || shape[0] != 1
            || reduce.axes.as_slice() != spatial.as_slice()
            || codes.datum_type.unquantized() != u8::datum_type()
            || !private
        {
            return Ok(None);
        }
        let op = Self {
            scale: dq.scale,
            zero_point: dq.zero_point,
            pool: OutputPool::default(),
        };
        Ok(Some(Fusion {
            op: Box::new(op),
            inputs: tvec![producer.inputs[0]],
            replaces: OutletId::new(node.id, 0),
        }))
    }
}

impl Op for DequantizeSum {
    fn name(&self) -> StaticName {
        "DequantizeSum".into()
    }

    op_as_typed_op!();
}

impl EvalOp for DequantizeSum {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let Some(x) = inputs.first() else {
            return Err(TractError::msg("DequantizeSum takes one input"));
        };
        let mut shape = x.shape().to_vec();
        let Some(&c) = shape.last() else {
            return Err(TractError::msg("DequantizeSum takes a [1, .., c] input"));
        };
        let rank = shape.len();
        shape[1..rank - 1].fill(1);
        let codes = x.try_as_plain_ram()?.as_slice::<u8>()?;
        let out = self.pool.output(f32::datum_type(), &shape, |out| {
            let mut ov = out.try_as_plain_ram_mut()?;
            let sums = ov.as_slice_mut::<f32>()?;
            if sums.len() == c && dequantize_sum(codes, self.scale, self.zero_point, sums) {
                Ok(())
            } else {
                Err(TractError::msg("DequantizeSum: input is not whole rows"))
            }
        })?;
        Ok(tvec!(out))
    }
}

impl TypedOp for DequantizeSum {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.clone();
        let rank = shape.rank();
        for axis in 1..rank.saturating_sub(1) {
            shape.set(axis, 1.to_dim());
        }
        Ok(tvec!(f32::fact(shape)))
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
