//! Static calibration: the value range of every tensor of an f32 ONNX graph over real inputs,
//! measured with tract on the graph as exported.

use std::collections::HashMap;

use anyhow::Context;
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// Observed `[min, max]` of each named tensor (the graph input and every node output).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranges(pub HashMap<String, (f32, f32)>);

impl Ranges {
    /// The range of `name`, or an error naming the tensor.
    pub fn get(&self, name: &str) -> anyhow::Result<(f32, f32)> {
        self.0
            .get(name)
            .copied()
            .with_context(|| format!("tensor {name}: no calibration range"))
    }
}

/// `model` optimized by tract for one f32 input of shape `input_shape`, with every node output
/// exposed as a model output; returns those tensor names, in node order, and the plan.
pub fn every_tensor_plan(
    model: &pb::ModelProto,
    input_shape: &[usize],
) -> anyhow::Result<(Vec<String>, std::sync::Arc<TypedSimplePlan>)> {
    let graph = model.graph.as_ref().context("model has no graph")?;
    let names: Vec<String> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .collect();
    let plan = onboard::tract_isa::onnx()
        .model_for_proto_model(model)
        .and_then(|m| m.with_input_fact(0, f32::fact(input_shape).into()))
        .and_then(|m| m.with_outputs_by_name(&names))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    Ok((names, plan))
}

/// Runs `model` (one f32 input of shape `input_shape`) on every input of `inputs` (row-major,
/// `prod(input_shape)` values each) and records the range of the graph input and of every node
/// output. Fails when no input is given or a range is not finite.
pub fn calibrate<'a>(
    model: &pb::ModelProto,
    input_shape: &[usize],
    inputs: impl IntoIterator<Item = &'a [f32]>,
) -> anyhow::Result<Ranges> {
    let graph = model.graph.as_ref().context("model has no graph")?;
    let input_name = graph
        .input
        .first()
        .map(|i| i.name.clone())
        .context("graph has no input")?;
    let (names, plan) = every_tensor_plan(model, input_shape)
        .context("tract cannot load the graph for calibration")?;
    let mut ranges: HashMap<String, (f32, f32)> = HashMap::new();
    let mut observe = |name: &str, values: &[f32]| {
        let r = ranges
            .entry(name.to_string())
            .or_insert((f32::MAX, f32::MIN));
        for &v in values {
            r.0 = r.0.min(v);
            r.1 = r.1.max(v);
        }
    };
    let mut count = 0usize;
    for x in inputs {
        let t = Tensor::from_shape(input_shape, x).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        observe(&input_name, x);
        let outs = plan
            .run(tvec![t.into()])
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("calibration run failed")?;
        for (name, out) in names.iter().zip(&outs) {
            let view = out
                .try_as_plain_ram()
                .map_err(|e| anyhow::anyhow!("{e:#}"))
                .with_context(|| format!("tensor {name} is not in memory"))?;
            let v = view
                .as_slice::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:#}"))
                .with_context(|| format!("tensor {name} is not f32"))?;
            observe(name, v);
        }
        count += 1;
    }
    anyhow::ensure!(count > 0, "calibration needs at least one input");
    for (name, (lo, hi)) in &ranges {
        anyhow::ensure!(
            lo.is_finite() && hi.is_finite(),
            "tensor {name}: non-finite calibration range [{lo}, {hi}]"
        );
    }
    Ok(Ranges(ranges))
}
