//! [`PointwiseF32`]: tract op running [`pointwise`] (a 1x1 convolution) on channels-last tensors.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{AxesMapping, EvalContext, EvalOp, Op, StaticName, TypedOp};

use super::depthwise_kernel::Clamp;
use super::parse::ConvNode;
use super::pointwise_kernel::{pointwise, Packed};
use super::ChannelMove;

/// The op: [`pointwise`] with its packed weights and bias and its output [`Clamp`] baked in.
/// Input `[1, h, w, ci]` or `[h, w, ci]` f32, output `[1, h, w, co]` or `[h, w, co]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointwiseF32 {
    plane: [usize; 2],
    batch_axis: bool,
    weights: Arc<Packed>,
    clamp: Clamp,
}

impl PointwiseF32 {
    fn output_shape(&self) -> TVec<usize> {
        let mut shape: TVec<usize> =
            tvec![self.plane[0], self.plane[1], self.weights.output_channels()];
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

impl Op for PointwiseF32 {
    fn name(&self) -> StaticName {
        "PointwiseF32".into()
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for PointwiseF32 {
    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(EvalOp::eval(
            self,
            &EvalContext::out_of_plan(),
            inputs,
        )?))
    }

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let Some(x) = inputs.first() else {
            return Err(TractError::msg("PointwiseF32 takes one input"));
        };
        // Every value is written by the kernel.
        let mut out = Tensor::zero::<f32>(&self.output_shape())?;
        {
            let xv = x.try_as_plain_ram()?;
            let mut ov = out.try_as_plain_ram_mut()?;
            let x = xv.as_slice::<f32>()?;
            if !pointwise(x, &self.weights, self.clamp, ov.as_slice_mut::<f32>()?) {
                return Err(TractError::msg(format!(
                    "PointwiseF32: {} input values for {} input channels and plane {:?}",
                    x.len(),
                    self.weights.input_channels(),
                    self.plane
                )));
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for PointwiseF32 {
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

/// The replacement for one tract `Conv` node, when it is a 1x1 convolution (one group, stride
/// 1, no padding) [`ConvNode::parse`] accepts; with the channel axis move its channels-first
/// input needs.
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(PointwiseF32, Option<ChannelMove>)>> {
    let Some(conv) = ConvNode::parse(model, node)? else {
        return Ok(None);
    };
    if conv.group != 1 || conv.kernel != [1, 1] || conv.stride != 1 || conv.input != conv.output {
        return Ok(None);
    }
    let Some(weights) = Packed::new(&conv.weights, &conv.bias, conv.co, conv.ci) else {
        return Ok(None);
    };
    let op = PointwiseF32 {
        plane: conv.input,
        batch_axis: conv.batch_axis,
        weights: Arc::new(weights),
        clamp: Clamp::NONE,
    };
    Ok(Some((op, conv.channel_move())))
}
