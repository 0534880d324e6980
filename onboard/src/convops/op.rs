//! [`ConvF32`]: the tract op running one of the project's convolution kernels on
//! channels-last tensors, built from a parsed `Conv` node.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{AxesMapping, EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::depthwise_kernel::{depthwise_hwc, taps_major, Clamp, Geometry};
use super::im2col::{im2col, patch_order};
use super::parse::ConvNode;
use super::pointwise_kernel::{pointwise, Packed};

/// Which kernel a [`ConvF32`] runs, with its weights prepared at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// [`depthwise_hwc`]: taps `[kh, kw, c]`, bias `[c]`.
    Depthwise {
        /// Shape of the convolution.
        geometry: Geometry,
        /// Taps `[kh, kw, c]`.
        taps: Arc<Tensor>,
        /// Bias `[c]`.
        bias: Arc<Tensor>,
    },
    /// [`pointwise`]: a 1x1 convolution, one group.
    Pointwise(Arc<Packed>),
    /// [`im2col`]: any other one-group convolution as patch rows through [`pointwise`].
    Im2col {
        /// Shape of the convolution (`channels` = input channels).
        geometry: Geometry,
        /// Weights `[co, kh, kw, ci]`, packed.
        weights: Arc<Packed>,
    },
}

/// The op: a [`Kind`] of kernel with its output [`Clamp`] baked in. Input `[1, h, w, ci]` or
/// `[h, w, ci]` f32, output `[1, ho, wo, co]` or `[ho, wo, co]` (the batch axis as in the
/// replaced convolution). tract's name for it: `DepthwiseF32`, `PointwiseF32` or `Im2colF32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvF32 {
    kind: Kind,
    /// `[ho, wo, co]`.
    output: [usize; 3],
    batch_axis: bool,
    clamp: Clamp,
}

impl ConvF32 {
    /// `conv` on [`depthwise_hwc`], when it is depthwise (groups = input = output channels).
    pub(super) fn depthwise(conv: &ConvNode) -> Option<Self> {
        let c = conv.shape.ci;
        if conv.shape.group != c || conv.shape.co != c {
            return None;
        }
        let taps = taps_major(
            &conv.weights,
            c,
            conv.shape.kernel[0] * conv.shape.kernel[1],
        );
        let kind = Kind::Depthwise {
            geometry: conv.shape.geometry(),
            taps: Arc::new(tensor1(&taps)),
            bias: Arc::new(tensor1(&conv.bias)),
        };
        Some(Self::new(kind, conv))
    }

    /// `conv` on [`pointwise`], when it is a 1x1 convolution (one group, stride 1, no padding).
    pub(super) fn pointwise(conv: &ConvNode) -> Option<Self> {
        if conv.shape.group != 1
            || conv.shape.kernel != [1, 1]
            || conv.shape.stride != 1
            || conv.shape.input != conv.shape.output
        {
            return None;
        }
        let weights = Packed::new(&conv.weights, &conv.bias, conv.shape.co, conv.shape.ci)?;
        Some(Self::new(Kind::Pointwise(Arc::new(weights)), conv))
    }

    /// `conv` on [`im2col`], when it has one group.
    pub(super) fn im2col(conv: &ConvNode) -> Option<Self> {
        if conv.shape.group != 1 {
            return None;
        }
        let taps = conv.shape.kernel[0] * conv.shape.kernel[1];
        let w = patch_order(&conv.weights, conv.shape.ci, taps);
        let weights = Packed::new(&w, &conv.bias, conv.shape.co, conv.shape.ci * taps)?;
        let kind = Kind::Im2col {
            geometry: conv.shape.geometry(),
            weights: Arc::new(weights),
        };
        Some(Self::new(kind, conv))
    }

    fn new(kind: Kind, conv: &ConvNode) -> Self {
        Self {
            kind,
            output: [conv.shape.output[0], conv.shape.output[1], conv.shape.co],
            batch_axis: conv.shape.batch_axis,
            clamp: Clamp::NONE,
        }
    }

    /// The kernel it runs.
    pub fn kind(&self) -> &Kind {
        &self.kind
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

    fn output_shape(&self) -> TVec<usize> {
        let mut shape: TVec<usize> = self.output.iter().copied().collect();
        if self.batch_axis {
            shape.insert(0, 1);
        }
        shape
    }

    /// Values of one input tensor.
    fn input_len(&self) -> usize {
        match &self.kind {
            Kind::Depthwise { geometry: g, .. } | Kind::Im2col { geometry: g, .. } => {
                g.input[0] * g.input[1] * g.channels
            }
            Kind::Pointwise(w) => self.output[0] * self.output[1] * w.input_channels(),
        }
    }

    /// Runs the kernel; false when `x` does not fit its shape.
    fn run(&self, x: &[f32], out: &mut [f32]) -> TractResult<bool> {
        Ok(match &self.kind {
            Kind::Depthwise {
                geometry,
                taps,
                bias,
            } => {
                let (t, b) = (taps.try_as_plain_ram()?, bias.try_as_plain_ram()?);
                let (t, b) = (t.as_slice::<f32>()?, b.as_slice::<f32>()?);
                depthwise_hwc(x, t, b, geometry, self.clamp, out)
            }
            Kind::Pointwise(w) => pointwise(x, w, self.clamp, out),
            Kind::Im2col { geometry, weights } => im2col(x, geometry, weights, self.clamp, out),
        })
    }
}

impl Op for ConvF32 {
    fn name(&self) -> StaticName {
        match self.kind {
            Kind::Depthwise { .. } => "DepthwiseF32",
            Kind::Pointwise(_) => "PointwiseF32",
            Kind::Im2col { .. } => "Im2colF32",
        }
        .into()
    }

    op_as_typed_op!();
}

impl EvalOp for ConvF32 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let Some(x) = inputs.first() else {
            return Err(TractError::msg(format!("{} takes one input", self.name())));
        };
        // Every value is written by the kernel.
        let mut out = Tensor::zero::<f32>(&self.output_shape())?;
        {
            let xv = x.try_as_plain_ram()?;
            let mut ov = out.try_as_plain_ram_mut()?;
            let x = xv.as_slice::<f32>()?;
            if !self.run(x, ov.as_slice_mut::<f32>()?)? {
                return Err(TractError::msg(format!(
                    "{}: {} input values, expected {}",
                    self.name(),
                    x.len(),
                    self.input_len()
                )));
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for ConvF32 {
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

    as_op!();
}
