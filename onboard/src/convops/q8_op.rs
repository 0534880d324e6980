//! [`ConvQ8`]: the tract op running one of the project's integer convolution kernels on
//! channels-last u8 tensors, built from a tract `Conv` with quantization parameters (ONNX
//! `QLinearConv`).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{AxesMapping, EvalContext, EvalOp, Op, StaticName, TypedOp};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::im2col::{patch_order, patches_strided};
use super::parse::ConvShape;
use super::pool::OutputPool;
use super::q8_kernel::{depthwise_q8, pointwise_q8, DepthwiseQ8, PackedQ8, Requant, GROUP};

/// A `QLinearConv` of a [`ConvShape`]: u8 input, i8 weights with zero point 0, i32 bias,
/// constant scales and zero points.
#[derive(Debug, Clone)]
pub(super) struct QConvNode {
    /// Its shape.
    pub shape: ConvShape,
    /// Weights `[co, ci / group, kh, kw]`.
    pub weights: Vec<i8>,
    /// Bias `[co]`.
    pub bias: Vec<i32>,
    /// Input zero point.
    pub x_zero_point: u8,
    /// The requantization's terms: `x_scale`, `w_scale` (1 or `co`), `y_scale`, and the output
    /// zero point (valid for [`Requant::new`]).
    pub scales: (f32, Vec<f32>, f32, u8),
    /// The output's datum type (u8, possibly carrying its quantization).
    pub output_type: DatumType,
}

impl QConvNode {
    /// Parses `node`; None when it is not a quantized convolution the kernels can take.
    pub fn parse(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Self>> {
        let Some((shape, conv)) = ConvShape::parse(model, node, 9)? else {
            return Ok(None);
        };
        let u8_type = |dt: DatumType| dt.unquantized() == u8::datum_type();
        let output_type = model.outlet_fact(node.id.into())?.datum_type;
        if !conv.q_params.is_some_and(u8_type)
            || !u8_type(model.outlet_fact(node.inputs[0])?.datum_type)
            || !u8_type(output_type)
        {
            return Ok(None);
        }
        // Inputs: x, kernel, bias, x0, x_scale, k0, k_scale, y0, y_scale.
        let mut konst = Vec::with_capacity(8);
        for &i in &node.inputs[1..] {
            match &model.outlet_fact(i)?.konst {
                Some(k) => konst.push(k.clone()),
                None => return Ok(None),
            }
        }
        let [w, b, x0, xs, k0, ks, y0, ys] = &konst[..] else {
            return Ok(None);
        };
        let co = shape.co;
        let scalar_u8 = |t: &Tensor| -> TractResult<Option<u8>> {
            (t.len() == 1).then(|| t.cast_to_scalar::<u8>()).transpose()
        };
        let scalar_f32 = |t: &Tensor| -> TractResult<Option<f32>> {
            (t.len() == 1)
                .then(|| t.cast_to_scalar::<f32>())
                .transpose()
        };
        let (Some(x_zp), Some(x_scale), Some(y_zp), Some(y_scale)) = (
            scalar_u8(x0)?,
            scalar_f32(xs)?,
            scalar_u8(y0)?,
            scalar_f32(ys)?,
        ) else {
            return Ok(None);
        };
        if w.datum_type().unquantized() != i8::datum_type()
            || w.len() != shape.weight_len()
            || !(k0.len() == 1 || k0.len() == co)
            || k0
                .cast_to::<i32>()?
                .try_as_plain_ram()?
                .as_slice::<i32>()?
                .iter()
                .any(|&z| z != 0)
            || !(b.len() == co || b.len() == 1)
        {
            return Ok(None);
        }
        let k_scale = ks
            .cast_to::<f32>()?
            .try_as_plain_ram()?
            .as_slice::<f32>()?
            .to_vec();
        if Requant::new(x_scale, &k_scale, y_scale, y_zp, co).is_none() {
            return Ok(None);
        }
        let scales = (x_scale, k_scale, y_scale, y_zp);
        let b = b.cast_to::<i32>()?;
        let b = b.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
        let bias = if b.len() == co { b } else { vec![b[0]; co] };
        let weights = w.try_as_plain_ram()?.as_slice::<i8>()?.to_vec();
        Ok(Some(Self {
            shape,
            weights,
            bias,
            x_zero_point: x_zp,
            scales,
            output_type,
        }))
    }
}

/// Which kernel a [`ConvQ8`] runs, with its weights prepared at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindQ8 {
    /// [`depthwise_q8`].
    Depthwise(Arc<DepthwiseQ8>),
    /// [`pointwise_q8`]: a 1x1 convolution, one group.
    Pointwise(Arc<PackedQ8>),
    /// [`patches_strided`] (rows padded to whole groups of four) then [`pointwise_q8`]: any
    /// other one-group convolution.
    Im2col {
        /// Shape of the convolution (`channels` = input channels).
        geometry: super::Geometry,
        /// Weights `[co, kh, kw, ci]` with zeros up to the padded row length, packed.
        weights: Arc<PackedQ8>,
    },
}

/// The op: input `[1, h, w, ci]` or `[h, w, ci]` u8, output `[1, ho, wo, co]` or `[ho, wo,
/// co]` u8 (batch axis and datum type as in the replaced convolution). tract's name for it:
/// `DepthwiseQ8`, `PointwiseQ8` or `Im2colQ8`.
#[derive(Debug, Clone)]
pub struct ConvQ8 {
    kind: KindQ8,
    requant: Arc<Requant>,
    x_zero_point: u8,
    /// `[ho, wo, co]`.
    output: [usize; 3],
    batch_axis: bool,
    output_type: DatumType,
    pool: OutputPool,
}

impl PartialEq for ConvQ8 {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.requant == other.requant
            && self.x_zero_point == other.x_zero_point
            && self.output == other.output
            && self.batch_axis == other.batch_axis
            && self.output_type == other.output_type
    }
}

impl Eq for ConvQ8 {}

impl ConvQ8 {
    /// `conv` on the kernel that fits it (depthwise, 1x1, or patch rows), None when none does
    /// (an accumulator could overflow, or groups other than 1 or all channels).
    pub(super) fn new(conv: &QConvNode) -> Option<Self> {
        let s = &conv.shape;
        let zp = conv.x_zero_point;
        let (xs, ws, ys, yzp) = &conv.scales;
        let requant = Requant::new(*xs, ws, *ys, *yzp, s.co)?;
        let kind = if s.group == s.ci && s.co == s.ci {
            KindQ8::Depthwise(Arc::new(DepthwiseQ8::new(
                &conv.weights,
                &conv.bias,
                &s.geometry(),
                zp,
            )?))
        } else if s.group != 1 {
            return None;
        } else if s.kernel == [1, 1] && s.stride == 1 && s.input == s.output {
            KindQ8::Pointwise(Arc::new(PackedQ8::new(
                &conv.weights,
                &conv.bias,
                s.co,
                s.ci,
                zp,
            )?))
        } else {
            let taps = s.kernel[0] * s.kernel[1];
            let w = patch_order(&conv.weights, s.ci, taps);
            // Patch rows padded to whole groups of four (weight 0 past the patch), so the 1x1
            // kernel reads no partial group (the stem: 27 -> 28).
            let (k, row_len) = (s.ci * taps, (s.ci * taps).div_ceil(GROUP) * GROUP);
            let mut padded = vec![0i8; s.co * row_len];
            for (d, from) in padded
                .chunks_exact_mut(row_len)
                .zip(w.chunks_exact(k.max(1)))
            {
                d[..k].copy_from_slice(from);
            }
            KindQ8::Im2col {
                geometry: s.geometry(),
                weights: Arc::new(PackedQ8::new(&padded, &conv.bias, s.co, row_len, zp)?),
            }
        };
        Some(Self {
            kind,
            requant: Arc::new(requant),
            x_zero_point: zp,
            output: [s.output[0], s.output[1], s.co],
            batch_axis: s.batch_axis,
            output_type: conv.output_type,
            pool: OutputPool::default(),
        })
    }

    /// The kernel it runs.
    pub fn kind(&self) -> &KindQ8 {
        &self.kind
    }

    fn output_shape(&self) -> TVec<usize> {
        let mut shape: TVec<usize> = self.output.iter().copied().collect();
        if self.batch_axis {
            shape.insert(0, 1);
        }
        shape
    }

    /// Runs the kernel on channels-last `x`; false when `x` does not fit its shape.
    pub(super) fn run(&self, x: &[u8], out: &mut [u8]) -> bool {
        match &self.kind {
            KindQ8::Depthwise(w) => depthwise_q8(x, w, &self.requant, out),
            KindQ8::Pointwise(w) => pointwise_q8(x, w, &self.requant, out),
            KindQ8::Im2col { geometry, weights } => ROWS.with(|rows| {
                let rows = &mut rows.borrow_mut();
                patches_strided(x, geometry, self.x_zero_point, weights.k, rows)
                    && pointwise_q8(rows, weights, &self.requant, out)
            }),
        }
    }
}

std::thread_local! {
    static ROWS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Op for ConvQ8 {
    fn name(&self) -> StaticName {
        match self.kind {
            KindQ8::Depthwise(_) => "DepthwiseQ8",
            KindQ8::Pointwise(_) => "PointwiseQ8",
            KindQ8::Im2col { .. } => "Im2colQ8",
        }
        .into()
    }

    op_as_typed_op!();
}

impl EvalOp for ConvQ8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let Some(x) = inputs.first() else {
            return Err(TractError::msg(format!("{} takes one input", self.name())));
        };
        let xv = x.try_as_plain_ram()?;
        let x = xv.as_slice::<u8>()?;
        // Every value is written by the kernel.
        let out = self
            .pool
            .output(self.output_type, &self.output_shape(), |out| {
                let mut ov = out.try_as_plain_ram_mut()?;
                if self.run(x, ov.as_slice_mut::<u8>()?) {
                    Ok(())
                } else {
                    Err(TractError::msg(format!(
                        "{}: {} input values do not fit its shape",
                        self.name(),
                        x.len(),
                    )))
                }
            })?;
        Ok(tvec!(out))
    }
}

impl TypedOp for ConvQ8 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output_type.fact(self.output_shape())))
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
