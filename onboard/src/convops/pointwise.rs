//! [`PointwiseF32`]: tract op running [`pointwise`] (a 1x1 convolution) on channels-last tensors.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{AxesMapping, EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::depthwise_kernel::Clamp;
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

/// The replacement for one tract `Conv` node, when it is an f32 1x1 convolution (one group,
/// stride 1, no padding) in NCHW, CHW, NHWC or HWC layout (batch 1) with constant weights and
/// bias; with the channel axis move its channels-first input needs.
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(PointwiseF32, Option<ChannelMove>)>> {
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    let ps = &conv.pool_spec;
    let (ci, co) = (ps.input_channels, ps.output_channels);
    let ones = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&d| d == 1));
    let no_pad = match &ps.padding {
        PaddingSpec::Valid => true,
        PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, _) => {
            b.iter().chain(a.iter()).all(|&p| p == 0)
        }
        _ => false,
    };
    if conv.q_params.is_some()
        || conv.group != 1
        || ps.kernel_shape.as_slice() != [1, 1]
        || !ones(&ps.strides)
        || !ones(&ps.dilations)
        || !no_pad
        || conv.kernel_fmt != KernelFormat::OIHW
        || node.inputs.len() != 3
    {
        return Ok(None);
    }
    let fact = model.outlet_fact(node.inputs[0])?;
    let Some(shape) = fact.shape.as_concrete().map(<[usize]>::to_vec) else {
        return Ok(None);
    };
    let batch_axis = matches!(ps.data_format, DataFormat::NCHW | DataFormat::NHWC);
    let channels_last = matches!(ps.data_format, DataFormat::NHWC | DataFormat::HWC);
    let dims = match (batch_axis, shape.as_slice()) {
        (true, [1, rest @ ..]) | (false, rest) => <[usize; 3]>::try_from(rest).ok(),
        _ => None,
    };
    let Some(dims) = dims else {
        return Ok(None);
    };
    let (c, plane) = if channels_last {
        (dims[2], [dims[0], dims[1]])
    } else {
        (dims[0], [dims[1], dims[2]])
    };
    if fact.datum_type != f32::datum_type() || c != ci {
        return Ok(None);
    }
    let konst = |i: usize| model.outlet_fact(node.inputs[i]).map(|f| f.konst.clone());
    let (Some(w), Some(b)) = (konst(1)?, konst(2)?) else {
        return Ok(None);
    };
    if w.datum_type() != f32::datum_type() || b.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let bias = match b.len() {
        n if n == co => b.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
        1 => vec![b.cast_to_scalar::<f32>()?; co],
        _ => return Ok(None),
    };
    let w = w.try_as_plain_ram()?;
    let Some(weights) = Packed::new(w.as_slice::<f32>()?, &bias, co, ci) else {
        return Ok(None);
    };
    let op = PointwiseF32 {
        plane,
        batch_axis,
        weights: Arc::new(weights),
        clamp: Clamp::NONE,
    };
    let rank = usize::from(batch_axis) + 3;
    Ok(Some((op, (!channels_last).then_some((rank - 3, rank - 1)))))
}
