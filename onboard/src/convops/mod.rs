//! Convolutions run by the project's own kernels inside tract graphs: depthwise
//! ([`DepthwiseF32`]), pointwise 1x1 ([`PointwiseF32`]) and other dense ones ([`Im2colF32`]),
//! all channels-last with the clamp that follows them (ReLU6) fused. [`substitute`] swaps them in for tract's convolutions and
//! moves the graph around them to channels-last.

mod depthwise;
mod depthwise_kernel;
mod im2col;
mod parse;
mod pointwise;
mod pointwise_kernel;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use depthwise::DepthwiseF32;
pub use depthwise_kernel::{
    depthwise_hwc, depthwise_hwc_portable, taps_major, transpose, Clamp, Geometry,
};
pub use im2col::{patches, Im2colF32};
pub use pointwise::PointwiseF32;
pub use pointwise_kernel::{has_simd, pointwise, pointwise_portable, Packed, PANEL};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{AxisOp, TypedModelPatch, TypedOp};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::optim::Optimizer;

/// The channel axis move `(from, to)` that puts a channels-first tensor channels-last.
type ChannelMove = (usize, usize);

/// Which convolutions [`substitute`] replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    /// f32 depthwise convolutions ([`DepthwiseF32`]).
    pub depthwise: bool,
    /// f32 one-group convolutions: 1x1 ([`PointwiseF32`]) and larger ([`Im2colF32`]), where
    /// [`has_simd`] (elsewhere tract's matrix product is faster).
    pub dense: bool,
}

/// How many nodes [`substitute`] replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replaced {
    /// Depthwise convolutions.
    pub depthwise: usize,
    /// 1x1 convolutions.
    pub pointwise: usize,
    /// Other one-group convolutions.
    pub im2col: usize,
    /// `Max` / `Min` nodes folded into a replacement's clamp.
    pub clamps: usize,
}

/// Replaces the convolutions `kernels` selects in the typed `model` (not yet decluttered:
/// tract's declutter turns 1x1 convolutions into matrix products), moving channels-first inputs
/// to channels-last and back around each, declutters so that those moves cancel between
/// neighbouring ops, and folds the clamps that follow each replacement ([`fuse_clamps`]).
pub fn substitute(mut model: TypedModel, kernels: Kernels) -> TractResult<(TypedModel, Replaced)> {
    let mut replaced = Replaced::default();
    let dense = kernels.dense && has_simd();
    // Fold the casts and reshapes that stand between the ONNX initializers and the convolutions.
    Optimizer::prop_consts().optimize(&mut model)?;
    for id in model.eval_order()? {
        let node = model.node(id);
        let mut found: Option<(Box<dyn TypedOp>, Option<ChannelMove>)> = None;
        if kernels.depthwise {
            if let Some((op, moves)) = depthwise::replacement(&model, node)? {
                replaced.depthwise += 1;
                found = Some((Box::new(op), moves));
            }
        }
        if dense && found.is_none() {
            if let Some((op, moves)) = pointwise::replacement(&model, node)? {
                replaced.pointwise += 1;
                found = Some((Box::new(op), moves));
            } else if let Some((op, moves)) = im2col::replacement(&model, node)? {
                replaced.im2col += 1;
                found = Some((Box::new(op), moves));
            }
        }
        let Some((op, moves)) = found else {
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
    }
    let (model, clamps) = fuse_clamps(model.into_decluttered()?)?;
    replaced.clamps = clamps;
    Ok((model, replaced))
}

/// The clamp of a replaced node.
fn clamp_of(node: &TypedNode) -> Option<Clamp> {
    node.op_as::<DepthwiseF32>()
        .map(DepthwiseF32::clamp)
        .or_else(|| node.op_as::<PointwiseF32>().map(PointwiseF32::clamp))
        .or_else(|| node.op_as::<Im2colF32>().map(Im2colF32::clamp))
}

/// The op of a replaced node with its clamp set to `clamp`.
fn with_clamp(node: &TypedNode, clamp: Clamp) -> Option<Box<dyn TypedOp>> {
    if let Some(op) = node.op_as::<DepthwiseF32>() {
        return Some(Box::new(op.with_clamp(clamp)));
    }
    if let Some(op) = node.op_as::<PointwiseF32>() {
        return Some(Box::new(op.with_clamp(clamp)));
    }
    node.op_as::<Im2colF32>()
        .map(|op| Box::new(op.with_clamp(clamp)) as Box<dyn TypedOp>)
}

/// Folds every `Max` / `Min` by a single constant that is the only consumer of a
/// [`DepthwiseF32`] or [`PointwiseF32`] output (and of the ops folded before it) into that op's
/// [`Clamp`]; returns the model and how many nodes were folded.
pub fn fuse_clamps(mut model: TypedModel) -> TractResult<(TypedModel, usize)> {
    let mut folded = 0;
    while let Some((id, next, op)) = next_clamp(&model)? {
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(&model, model.node(id).inputs[0])?;
        let y = patch.wire_node(&model.node(id).name, op, &[x])?;
        patch.shunt_outside(&model, next.into(), y[0])?;
        patch.apply(&mut model)?;
        model = model.into_compact()?;
        folded += 1;
    }
    Ok((model, folded))
}

/// A replaced node (id), its `Max` / `Min` consumer (id), and the op with that bound folded in.
type ClampFold = (usize, usize, Box<dyn TypedOp>);

/// The first replaced node whose only consumer is a foldable `Max` or `Min`.
fn next_clamp(model: &TypedModel) -> TractResult<Option<ClampFold>> {
    let outputs: Vec<OutletId> = model.output_outlets()?.to_vec();
    for node in model.nodes() {
        let Some(mut clamp) = clamp_of(node) else {
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
        if v.is_nan() {
            continue;
        }
        match bin.0.name() {
            // max(min(max(x, lo), hi), v) is only a clamp while there is no upper bound yet.
            "Max" if clamp.hi == f32::INFINITY => clamp.lo = clamp.lo.max(v),
            "Min" => clamp.hi = clamp.hi.min(v),
            _ => continue,
        }
        if let Some(op) = with_clamp(node, clamp) {
            return Ok(Some((node.id, next.id, op)));
        }
    }
    Ok(None)
}
