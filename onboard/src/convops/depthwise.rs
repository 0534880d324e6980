//! [`DepthwiseF32`]: tract op running [`depthwise_hwc`] on channels-last tensors.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{AxesMapping, EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::depthwise_kernel::{depthwise_hwc, taps_major, Clamp, Geometry};
use super::ChannelMove;

/// The op: [`depthwise_hwc`] with its weights `[kh, kw, c]`, bias `[c]` and output [`Clamp`]
/// baked in. Input `[1, h, w, c]` or `[h, w, c]` f32 (with or without the batch axis), output
/// likewise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthwiseF32 {
    geometry: Geometry,
    batch_axis: bool,
    weights: Arc<Tensor>,
    bias: Arc<Tensor>,
    clamp: Clamp,
}

impl DepthwiseF32 {
    fn output_shape(&self) -> TVec<usize> {
        let g = &self.geometry;
        let mut shape: TVec<usize> = tvec![g.output[0], g.output[1], g.channels];
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
        // Every value is written by the kernel.
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
            if !depthwise_hwc(x, w, b, g, self.clamp, ov.as_slice_mut::<f32>()?) {
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
/// NCHW, CHW, NHWC or HWC layout (batch 1) with constant weights and bias, no dilation and
/// explicit padding; with the channel axis move `(from, to)` its channels-first input needs.
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(DepthwiseF32, Option<ChannelMove>)>> {
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
    let weights = taps_major(w.try_as_plain_ram()?.as_slice::<f32>()?, c, kh * kw);
    let op = DepthwiseF32 {
        geometry,
        batch_axis,
        weights: Arc::new(tensor1(&weights)),
        bias,
        clamp: Clamp::NONE,
    };
    let rank = usize::from(batch_axis) + 3;
    let moves = (!channels_last).then_some((rank - 3, rank - 1));
    Ok(Some((op, moves)))
}
