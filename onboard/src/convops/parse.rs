//! What the replacements need to know of one tract `Conv` node.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::depthwise_kernel::Geometry;
use super::ChannelMove;

/// The shape of a 2-D convolution: batch 1, no dilation, one stride for both axes and explicit
/// (or no) padding, in any of tract's four layouts.
#[derive(Debug, Clone)]
pub(super) struct ConvShape {
    /// Groups.
    pub group: usize,
    /// Input channels.
    pub ci: usize,
    /// Output channels.
    pub co: usize,
    /// Input plane `[h, w]`.
    pub input: [usize; 2],
    /// Output plane `[h, w]`.
    pub output: [usize; 2],
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride.
    pub stride: usize,
    /// Zero padding `[top, left]`.
    pub pad: [usize; 2],
    /// Whether the tensors carry the batch axis.
    pub batch_axis: bool,
    /// Whether the channel axis is last.
    pub channels_last: bool,
}

/// An f32 convolution of a [`ConvShape`] with constant weights and bias.
#[derive(Debug, Clone)]
pub(super) struct ConvNode {
    /// Its shape.
    pub shape: ConvShape,
    /// Weights `[co, ci / group, kh, kw]`, row-major.
    pub weights: Vec<f32>,
    /// Bias `[co]`.
    pub bias: Vec<f32>,
}

impl ConvShape {
    /// The move that puts a channels-first input channels-last (None when it already is).
    pub fn channel_move(&self) -> Option<ChannelMove> {
        let rank = usize::from(self.batch_axis) + 3;
        (!self.channels_last).then_some((rank - 3, rank - 1))
    }

    /// The kernels' view of its shape (`channels` = input channels).
    pub fn geometry(&self) -> Geometry {
        Geometry {
            channels: self.ci,
            input: self.input,
            output: self.output,
            kernel: self.kernel,
            stride: self.stride,
            pad: self.pad,
        }
    }

    /// The shape of `node` when it is a tract `Conv` the kernels can take (with `inputs`
    /// inputs), with its op.
    pub fn parse<'a>(
        model: &TypedModel,
        node: &'a TypedNode,
        inputs: usize,
    ) -> TractResult<Option<(Self, &'a Conv)>> {
        let Some(conv) = node.op_as::<Conv>() else {
            return Ok(None);
        };
        let ps = &conv.pool_spec;
        if ps.kernel_shape.len() != 2
            || conv.kernel_fmt != KernelFormat::OIHW
            || node.inputs.len() != inputs
            || conv.group == 0
            || ps
                .dilations
                .as_ref()
                .is_some_and(|d| d.iter().any(|&d| d != 1))
        {
            return Ok(None);
        }
        let strides: Vec<usize> = ps.strides.as_ref().map_or(vec![1, 1], |s| s.to_vec());
        if strides.len() != 2 || strides[0] != strides[1] || strides[0] == 0 {
            return Ok(None);
        }
        let pad = match &ps.padding {
            PaddingSpec::Explicit(b, _) | PaddingSpec::ExplicitOnnxPool(b, _, false)
                if b.len() == 2 =>
            {
                [b[0], b[1]]
            }
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
        let (ci, co) = (ps.input_channels, ps.output_channels);
        if ins[0] != ci || outs[0] != co || ci % conv.group != 0 {
            return Ok(None);
        }
        let shape = Self {
            group: conv.group,
            ci,
            co,
            input: [ins[1], ins[2]],
            output: [outs[1], outs[2]],
            kernel: [ps.kernel_shape[0], ps.kernel_shape[1]],
            stride: strides[0],
            pad,
            batch_axis,
            channels_last,
        };
        Ok(Some((shape, conv)))
    }

    /// Weight values: `co * ci / group * kh * kw`.
    pub fn weight_len(&self) -> usize {
        self.co * self.ci / self.group * self.kernel[0] * self.kernel[1]
    }
}

impl ConvNode {
    /// Parses `node`; None when it is not an f32 convolution the kernels can take.
    pub fn parse(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Self>> {
        let Some((shape, conv)) = ConvShape::parse(model, node, 3)? else {
            return Ok(None);
        };
        if conv.q_params.is_some()
            || model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type()
        {
            return Ok(None);
        }
        let konst = |i: usize| model.outlet_fact(node.inputs[i]).map(|f| f.konst.clone());
        let (Some(w), Some(b)) = (konst(1)?, konst(2)?) else {
            return Ok(None);
        };
        if w.datum_type() != f32::datum_type()
            || b.datum_type() != f32::datum_type()
            || w.len() != shape.weight_len()
        {
            return Ok(None);
        }
        let bias = match b.len() {
            n if n == shape.co => b.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
            1 => vec![b.cast_to_scalar::<f32>()?; shape.co],
            _ => return Ok(None),
        };
        Ok(Some(Self {
            shape,
            weights: w.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
            bias,
        }))
    }
}
