//! A depthwise 2-D convolution op for tract (f32, batch 1) run channels-last, with the clamp
//! that follows it (ReLU6) fused; [`substitute`] swaps it in for tract's depthwise convolutions
//! in a decluttered model and moves the graph around it to channels-last.

mod kernel;

use std::sync::Arc;

pub use kernel::{depthwise_hwc, depthwise_hwc_portable, taps_major, transpose, Clamp, Geometry};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{
    AxesMapping, AxisOp, EvalContext, EvalOp, Op, StaticName, TypedModelPatch, TypedOp,
};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

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

/// The channel axis move `(from, to)` that puts a channels-first tensor channels-last.
type ChannelMove = (usize, usize);

/// The replacement for one tract `Conv` node, when it is an f32 depthwise 2-D convolution in
/// NCHW, CHW, NHWC or HWC layout (batch 1) with constant weights and bias, no dilation and
/// explicit padding; with the channel axis move `(from, to)` its channels-first input needs.
fn replacement(
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

/// Replaces every depthwise convolution [`DepthwiseF32`] can run in the decluttered `model`,
/// moving channels-first inputs to channels-last and back around it, declutters again so that
/// those moves cancel between neighbouring ops, and fuses the clamps that follow each
/// replacement ([`fuse_clamps`]). Returns the model and how many nodes were replaced.
pub fn substitute(mut model: TypedModel) -> TractResult<(TypedModel, usize)> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some((op, moves)) = replacement(&model, node)? else {
            continue;
        };
        let mut patch = TypedModelPatch::default();
        let mut x = patch.tap_model(&model, node.inputs[0])?;
        if let Some((from, to)) = moves {
            let name = format!("{}.channels_last", node.name);
            x = patch.wire_node(name, AxisOp::Move(from, to), &[x])?[0];
        }
        let mut y = patch.wire_node(&node.name, op, &[x])?[0];
        if let Some((from, to)) = moves {
            let name = format!("{}.channels_first", node.name);
            y = patch.wire_node(name, AxisOp::Move(to, from), &[y])?[0];
        }
        patch.shunt_outside(&model, id.into(), y)?;
        patch.apply(&mut model)?;
        replaced += 1;
    }
    if replaced == 0 {
        return Ok((model, 0));
    }
    let model = fuse_clamps(model.into_decluttered()?)?;
    Ok((model, replaced))
}

/// Folds every `Max` / `Min` by a single constant that is the only consumer of a
/// [`DepthwiseF32`] output (and of the ops folded before it) into that op's [`Clamp`].
pub fn fuse_clamps(mut model: TypedModel) -> TractResult<TypedModel> {
    while let Some((id, next, op)) = next_clamp(&model)? {
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(&model, model.node(id).inputs[0])?;
        let y = patch.wire_node(&model.node(id).name, op, &[x])?;
        patch.shunt_outside(&model, next.into(), y[0])?;
        patch.apply(&mut model)?;
        model = model.into_compact()?;
    }
    Ok(model)
}

/// The first [`DepthwiseF32`] node whose only consumer is a foldable `Max` or `Min`: its id,
/// the consumer's id, and the op with the bound folded in.
fn next_clamp(model: &TypedModel) -> TractResult<Option<(usize, usize, DepthwiseF32)>> {
    let outputs: Vec<OutletId> = model.output_outlets()?.to_vec();
    for node in model.nodes() {
        let Some(dw) = node.op_as::<DepthwiseF32>() else {
            continue;
        };
        let succ = &node.outputs[0].successors;
        if succ.len() != 1 || outputs.contains(&OutletId::new(node.id, 0)) {
            continue;
        }
        let next = model.node(succ[0].node);
        let Some(bin) = next.op_as::<TypedBinOp>() else {
            continue;
        };
        let fact = model.outlet_fact(OutletId::new(next.id, 0))?;
        if next.inputs.len() != 2
            || fact.datum_type != f32::datum_type()
            || fact.shape != model.outlet_fact(OutletId::new(node.id, 0))?.shape
        {
            continue;
        }
        let other = next.inputs[1 - succ[0].slot];
        let Some(k) = model.outlet_fact(other)?.konst.clone() else {
            continue;
        };
        if k.len() != 1 || k.datum_type() != f32::datum_type() {
            continue;
        }
        let v = k.cast_to_scalar::<f32>()?;
        let mut clamp = dw.clamp;
        match bin.0.name() {
            // max(min(max(x, lo), hi), v) is only a clamp while there is no upper bound yet.
            "Max" if clamp.hi == f32::INFINITY => clamp.lo = clamp.lo.max(v),
            "Min" => clamp.hi = clamp.hi.min(v),
            _ => continue,
        }
        if v.is_nan() {
            continue;
        }
        let op = DepthwiseF32 {
            clamp,
            ..dw.clone()
        };
        return Ok(Some((node.id, next.id, op)));
    }
    Ok(None)
}
