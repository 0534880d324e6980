//! Convolutions run by the project's own kernels inside tract graphs ([`ConvF32`]): depthwise,
//! pointwise 1x1 and other dense ones, all channels-last with the clamp that follows them
//! (ReLU6) fused. [`substitute`] swaps them in for tract's convolutions and moves the graph
//! around them to channels-last.

mod average_pool_op;
mod depthwise_kernel;
mod fusion;
#[cfg(test)]
mod fusion_tests;
mod im2col;
mod op;
mod parse;
mod pointwise_kernel;
mod pool;
mod q8_kernel;
#[cfg(target_arch = "aarch64")]
mod q8_neon;
mod q8_op;
mod q8_paths;
#[cfg(test)]
mod q8_tests;
#[cfg(target_arch = "x86_64")]
mod q8_x86;
#[cfg(target_arch = "x86_64")]
mod q8_x86_dw;
mod quantize_op;
mod residual_op;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use average_pool_op::{dequantize_sum, DequantizeSum};
pub use depthwise_kernel::{
    depthwise_hwc, depthwise_hwc_portable, taps_major, transpose, Clamp, Geometry,
};
pub use im2col::{im2col, patch_order, patches, patches_padded, patches_strided};
pub use op::{ConvF32, Kind};
use parse::ConvNode;
pub use pointwise_kernel::{has_simd, pointwise, pointwise_portable, Packed, PANEL};
pub use q8_kernel::{
    depthwise_q8, depthwise_q8_portable, pointwise_q8, pointwise_q8_portable, DepthwiseQ8,
    PackedQ8, Requant, GROUP, PANEL_Q8,
};
use q8_op::QConvNode;
pub use q8_op::{ConvQ8, KindQ8};
pub use q8_paths::{depthwise_q8_paths, DepthwiseFn};
pub use quantize_op::{quantize_channels_last, quantize_u8, QuantizeChannelsLast, QuantizeU8};
pub use residual_op::ResidualAdd;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{AxisOp, TypedModelPatch, TypedOp};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::optim::Optimizer;

/// The channel axis move `(from, to)` that puts a channels-first tensor channels-last.
type ChannelMove = (usize, usize);

/// Which convolutions [`substitute`] replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    /// f32 depthwise convolutions ([`Kind::Depthwise`]).
    pub depthwise: bool,
    /// f32 one-group convolutions: 1x1 ([`Kind::Pointwise`]) and larger ([`Kind::Im2col`]),
    /// where [`has_simd`] (elsewhere tract's matrix product is faster).
    pub dense: bool,
    /// Quantized convolutions (ONNX `QLinearConv`, u8 activations, i8 weights): depthwise, 1x1
    /// and other one-group ones ([`ConvQ8`]).
    pub int8: bool,
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
    /// Quantized convolutions (all kinds).
    pub int8: usize,
    /// f32 -> u8 quantizations ([`QuantizeU8`]).
    pub quantize: usize,
    /// Skip connections' dequantize-add(-quantize) chains fused into one op ([`ResidualAdd`]).
    pub residual: usize,
    /// Quantizations fused with the move of their output's channels last
    /// ([`QuantizeChannelsLast`]).
    pub quantize_channels_last: usize,
    /// Global average pools' dequantize-sum chains fused into one op ([`DequantizeSum`]).
    pub dequantize_sum: usize,
    /// `Max` / `Min` nodes folded into a replacement's clamp.
    pub clamps: usize,
}

/// Replaces the convolutions `kernels` selects in the typed `model` (not yet decluttered:
/// tract's declutter turns 1x1 convolutions into matrix products), moving channels-first inputs
/// to channels-last and back around each, declutters so that those moves cancel between
/// neighbouring ops, and folds the clamps that follow each replacement ([`fuse_clamps`]).
pub fn substitute(model: TypedModel, kernels: Kernels) -> TractResult<(TypedModel, Replaced)> {
    let (model, mut replaced) = substitute_convolutions(model, kernels)?;
    if !kernels.int8 {
        return Ok((model, replaced));
    }
    let (model, residual) = fusion::fuse_each(model, ResidualAdd::parse)?;
    let (model, moved) = fusion::fuse_each(model, QuantizeChannelsLast::parse)?;
    let (model, pooled) = fusion::fuse_each(model, DequantizeSum::parse)?;
    replaced.residual = residual;
    replaced.quantize_channels_last = moved;
    replaced.dequantize_sum = pooled;
    Ok((model, replaced))
}

/// [`substitute`] without the int8 graphs' fusions ([`ResidualAdd`], [`QuantizeChannelsLast`],
/// [`DequantizeSum`]): the replaced convolutions and quantizations, the moves around them,
/// decluttered, clamps folded.
pub(crate) fn substitute_convolutions(
    mut model: TypedModel,
    kernels: Kernels,
) -> TractResult<(TypedModel, Replaced)> {
    let mut replaced = Replaced::default();
    let dense = kernels.dense && has_simd();
    // Fold the casts and reshapes that stand between the ONNX initializers and the convolutions.
    Optimizer::prop_consts().optimize(&mut model)?;
    let ids = if kernels.depthwise || dense || kernels.int8 {
        model.eval_order()?
    } else {
        Vec::new()
    };
    for id in ids {
        let node = model.node(id);
        let (op, moves): (Box<dyn TypedOp>, _) = if let Some(conv) = ConvNode::parse(&model, node)?
        {
            let op = kernels
                .depthwise
                .then(|| ConvF32::depthwise(&conv))
                .flatten()
                .or_else(|| {
                    dense
                        .then(|| ConvF32::pointwise(&conv).or_else(|| ConvF32::im2col(&conv)))
                        .flatten()
                });
            let Some(op) = op else {
                continue;
            };
            *match op.kind() {
                Kind::Depthwise { .. } => &mut replaced.depthwise,
                Kind::Pointwise(_) => &mut replaced.pointwise,
                Kind::Im2col { .. } => &mut replaced.im2col,
            } += 1;
            (Box::new(op), conv.shape.channel_move())
        } else if let Some(conv) = kernels
            .int8
            .then(|| QConvNode::parse(&model, node))
            .transpose()?
            .flatten()
        {
            let Some(op) = ConvQ8::new(&conv) else {
                continue;
            };
            replaced.int8 += 1;
            (Box::new(op), conv.shape.channel_move())
        } else if let Some(op) = kernels
            .int8
            .then(|| QuantizeU8::parse(&model, node))
            .transpose()?
            .flatten()
        {
            replaced.quantize += 1;
            (Box::new(op), None)
        } else {
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

/// Folds every `Max` / `Min` by a single constant that is the only consumer of a [`ConvF32`]
/// output (and of the ops folded before it) into that op's [`Clamp`]; returns the model and how
/// many nodes were folded.
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
type ClampFold = (usize, usize, ConvF32);

/// The first replaced node whose only consumer is a foldable `Max` or `Min`.
fn next_clamp(model: &TypedModel) -> TractResult<Option<ClampFold>> {
    let outputs: Vec<OutletId> = model.output_outlets()?.to_vec();
    for node in model.nodes() {
        let Some(op) = node.op_as::<ConvF32>() else {
            continue;
        };
        let mut clamp = op.clamp();
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
        return Ok(Some((node.id, next.id, op.with_clamp(clamp))));
    }
    Ok(None)
}
