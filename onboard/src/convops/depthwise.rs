//! [`DepthwiseF32`]: tract op running [`depthwise_hwc`] on channels-last tensors.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{AxesMapping, EvalContext, EvalOp, Op, StaticName, TypedOp};

use super::depthwise_kernel::{depthwise_hwc, taps_major, Clamp, Geometry};
use super::parse::ConvNode;
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
    let Some(conv) = ConvNode::parse(model, node)? else {
        return Ok(None);
    };
    let c = conv.ci;
    if conv.group != c || conv.co != c {
        return Ok(None);
    }
    let [kh, kw] = conv.kernel;
    let geometry = Geometry {
        channels: c,
        input: conv.input,
        output: conv.output,
        kernel: conv.kernel,
        stride: conv.stride,
        pad: conv.pad,
    };
    let op = DepthwiseF32 {
        geometry,
        batch_axis: conv.batch_axis,
        weights: Arc::new(tensor1(&taps_major(&conv.weights, c, kh * kw))),
        bias: Arc::new(tensor1(&conv.bias)),
        clamp: Clamp::NONE,
    };
    Ok(Some((op, conv.channel_move())))
}
