//! [`ResidualAdd`]: a skip connection's add in the int8 graphs, with the dequantization of its
//! u8 operands and, where the sum feeds nothing but a quantization, that quantization fused in.
//! tract runs each as its own pass over f32 tensors (`DequantizeLinearF32`, `Add`,
//! `QuantizeU8`); this op computes the same values bit for bit in one pass: each u8 operand
//! `(x - zero_point) as f32 * scale`, the two summed in f32 (no fused multiply-add), and the sum
//! quantized as [`super::quantize_u8`] does.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{
    AxesMapping, AxisChangeConsequence, AxisOp, EvalContext, EvalOp, InOut, Op, StaticName, TypedOp,
};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::quant::DequantizeLinearF32;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::fusion::Fusion;
use super::pool::OutputPool;
use super::quantize_op::{quantize_u8, QuantizeU8};

/// Values summed per block before the block is quantized (a stack buffer of f32s).
const BLOCK: usize = 256;

/// One operand of the add as the op reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Operand {
    /// u8 codes dequantized as tract's `DequantizeLinearF32` does:
    /// `(x as i32 - zero_point) as f32 * scale`.
    U8 {
        /// The operand's scale.
        scale: f32,
        /// The operand's zero point.
        zero_point: i32,
    },
    /// An f32 tensor (the residual stream's sum from the previous add).
    F32,
}

/// The f32 -> u8 quantization of the sum, as [`QuantizeU8`] holds it (reciprocal scale).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Quant {
    scale: f32,
    zero_point: u8,
    output_type: DatumType,
}

/// One operand's values, as [`sum_into`] reads them.
#[derive(Clone, Copy)]
enum Values<'a> {
    U8(&'a [u8], f32, i32),
    F32(&'a [f32]),
}

#[inline(always)]
fn dequantize(x: u8, scale: f32, zero_point: i32) -> f32 {
    (i32::from(x) - zero_point) as f32 * scale
}

/// `out[i] = a[i] + b[i]`, each operand dequantized first where it is u8. Every slice has
/// `out.len()` values (the caller's contract).
#[inline(always)]
fn sum(a: Values, b: Values, out: &mut [f32]) {
    match (a, b) {
        (Values::U8(x, s, z), Values::U8(y, t, w)) => {
            for ((o, &p), &q) in out.iter_mut().zip(x).zip(y) {
                *o = dequantize(p, s, z) + dequantize(q, t, w);
            }
        }
        (Values::U8(x, s, z), Values::F32(y)) | (Values::F32(y), Values::U8(x, s, z)) => {
            // f32 addition is commutative bit for bit, so the operands' order does not matter.
            for ((o, &p), &q) in out.iter_mut().zip(x).zip(y) {
                *o = dequantize(p, s, z) + q;
            }
        }
        (Values::F32(x), Values::F32(y)) => {
            for ((o, &p), &q) in out.iter_mut().zip(x).zip(y) {
                *o = p + q;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_avx512(a: Values, b: Values, out: &mut [f32]) {
    sum(a, b, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_avx2(a: Values, b: Values, out: &mut [f32]) {
    sum(a, b, out);
}

/// [`sum`], compiled for the widest vectors the CPU has (the loops vectorize; same values on
/// every path, as each is the same scalar arithmetic).
fn sum_into(a: Values, b: Values, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if super::x86::has_avx512() {
            // SAFETY: AVX-512F is present.
            #[allow(unsafe_code)]
            unsafe {
                sum_avx512(a, b, out)
            };
            return;
        }
        if super::x86::has_avx2_fma() {
            // SAFETY: AVX2 is present.
            #[allow(unsafe_code)]
            unsafe {
                sum_avx2(a, b, out)
            };
            return;
        }
    }
    sum(a, b, out);
}

impl Values<'_> {
    fn range(self, start: usize, end: usize) -> Self {
        match self {
            Values::U8(x, s, z) => Values::U8(&x[start..end], s, z),
            Values::F32(x) => Values::F32(&x[start..end]),
        }
    }
}

/// The op replacing `Add(Dequantize(a), Dequantize(b))` (either operand may be an f32 tensor
/// instead), optionally followed by its sum's only consumer, a [`QuantizeU8`]. Inputs: the two
/// operands, same shape; output: the sum (f32) or its quantization (u8), same shape. Element by
/// element, so tract moves axes through it freely. tract's name for it: `ResidualAdd`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualAdd {
    operands: [Operand; 2],
    quant: Option<Quant>,
    pool: OutputPool,
}

impl Eq for ResidualAdd {}

impl ResidualAdd {
    /// The fusion rooted at `node` when it is an f32 `Add` of two same-shaped tensors, at least
    /// one of them a `DequantizeLinearF32` of u8 codes that nothing else reads; it takes over
    /// the add's consumers, or the quantization's when that is fused in.
    pub(super) fn parse(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Fusion>> {
        let Some(bin) = node.op_as::<TypedBinOp>() else {
            return Ok(None);
        };
        let fact = model.outlet_fact(node.id.into())?;
        if bin.0.name() != "Add" || node.inputs.len() != 2 || fact.datum_type != f32::datum_type() {
            return Ok(None);
        }
        let outputs = model.output_outlets()?;
        let mut operands = [Operand::F32; 2];
        let mut inputs = [node.inputs[0], node.inputs[1]];
        for (slot, outlet) in node.inputs.iter().enumerate() {
            let input = model.outlet_fact(*outlet)?;
            if input.datum_type != f32::datum_type() || input.shape != fact.shape {
                return Ok(None);
            }
            let producer = model.node(outlet.node);
            let Some(dq) = producer.op_as::<DequantizeLinearF32>() else {
                continue;
            };
            let codes = model.outlet_fact(producer.inputs[0])?;
            let private = producer.outputs[0].successors.len() == 1 && !outputs.contains(outlet);
            if codes.datum_type.unquantized() == u8::datum_type() && private {
                operands[slot] = Operand::U8 {
                    scale: dq.scale,
                    zero_point: dq.zero_point,
                };
                inputs[slot] = producer.inputs[0];
            }
        }
        if operands == [Operand::F32; 2] {
            return Ok(None);
        }
        let mut op = ResidualAdd {
            operands,
            quant: None,
            pool: OutputPool::default(),
        };
        let mut replaces = OutletId::new(node.id, 0);
        let succ = &node.outputs[0].successors;
        if succ.len() == 1 && !outputs.contains(&replaces) {
            let next = model.node(succ[0].node);
            if let Some(q) = next.op_as::<QuantizeU8>() {
                let (scale, zero_point, output_type) = q.parameters();
                op.quant = Some(Quant {
                    scale,
                    zero_point,
                    output_type,
                });
                replaces = OutletId::new(next.id, 0);
            }
        }
        Ok(Some(Fusion {
            op: Box::new(op),
            inputs: inputs.into_iter().collect(),
            replaces,
        }))
    }

    /// Runs the op on its two inputs' plain values; `out` gets what [`Self::eval`] returns.
    fn run(&self, a: Values, b: Values, out: &mut Tensor) -> TractResult<()> {
        let mut ov = out.try_as_plain_ram_mut()?;
        match self.quant {
            None => sum_into(a, b, ov.as_slice_mut::<f32>()?),
            Some(q) => {
                let codes = ov.as_slice_mut::<u8>()?;
                let mut block = [0f32; BLOCK];
                for (i, dst) in codes.chunks_mut(BLOCK).enumerate() {
                    let (start, end) = (i * BLOCK, i * BLOCK + dst.len());
                    let sums = &mut block[..dst.len()];
                    sum_into(a.range(start, end), b.range(start, end), sums);
                    quantize_u8(sums, q.scale, q.zero_point, dst);
                }
            }
        }
        Ok(())
    }
}

/// `t`'s values as `operand` says to read them (u8 codes of any quantized u8 type, or f32).
fn values(operand: Operand, t: &Tensor) -> TractResult<Values<'_>> {
    let view = t.try_as_plain_ram()?;
    Ok(match operand {
        Operand::U8 { scale, zero_point } => Values::U8(view.as_slice::<u8>()?, scale, zero_point),
        Operand::F32 => Values::F32(view.as_slice::<f32>()?),
    })
}

impl Op for ResidualAdd {
    fn name(&self) -> StaticName {
        "ResidualAdd".into()
    }

    op_as_typed_op!();
}

impl EvalOp for ResidualAdd {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let [a, b] = inputs.as_slice() else {
            return Err(TractError::msg("ResidualAdd takes two inputs"));
        };
        if a.shape() != b.shape() {
            return Err(TractError::msg("ResidualAdd: operand shapes differ"));
        }
        let (x, y) = (values(self.operands[0], a)?, values(self.operands[1], b)?);
        let dt = self.quant.map_or(f32::datum_type(), |q| q.output_type);
        let out = self.pool.output(dt, a.shape(), |out| self.run(x, y, out))?;
        Ok(tvec!(out))
    }
}

impl TypedOp for ResidualAdd {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let dt = self.quant.map_or(f32::datum_type(), |q| q.output_type);
        Ok(tvec!(dt.fact(inputs[0].shape.clone())))
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
