//! How the int8 graphs' fusions are applied: each op that fuses a chain of tract's ops says, at
//! the chain's last node, what replaces it ([`Fusion`]); [`fuse_each`] patches every such chain
//! in evaluation order.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{TypedModelPatch, TypedOp};

/// A chain to replace: the op that computes it, the outlets the op reads (in its input order),
/// and the outlet whose consumers it takes over.
pub(super) struct Fusion {
    pub op: Box<dyn TypedOp>,
    pub inputs: TVec<OutletId>,
    pub replaces: OutletId,
}

/// Finds the fusion rooted at a node, if any.
pub(super) type Parse = fn(&TypedModel, &TypedNode) -> TractResult<Option<Fusion>>;

/// Applies `parse`'s fusions until none is left; returns the model and how many were applied.
/// The replaced nodes that nothing reads any more are dropped.
pub(super) fn fuse_each(mut model: TypedModel, parse: Parse) -> TractResult<(TypedModel, usize)> {
    let mut fused = 0;
    while let Some((id, fusion)) = first(&model, parse)? {
        let mut patch = TypedModelPatch::default();
        let inputs = fusion
            .inputs
            .iter()
            .map(|o| patch.tap_model(&model, *o))
            .collect::<TractResult<TVec<_>>>()?;
        let y = patch.wire_node(&model.node(id).name, fusion.op, &inputs)?[0];
        patch.shunt_outside(&model, fusion.replaces, y)?;
        patch.apply(&mut model)?;
        model = model.into_compact()?;
        fused += 1;
    }
    Ok((model, fused))
}

/// The first node, in evaluation order, at which `parse` finds a fusion.
fn first(model: &TypedModel, parse: Parse) -> TractResult<Option<(usize, Fusion)>> {
    for id in model.eval_order()? {
        if let Some(found) = parse(model, model.node(id))? {
            return Ok(Some((id, found)));
        }
    }
    Ok(None)
}
