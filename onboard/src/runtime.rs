//! tract runtime for the bundle's ONNX graphs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::bundle::{Bundle, BundleError, GraphRole, Precision};

use tract_onnx::prelude::*;

/// Why a graph could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// tract refused the graph (bad file, unsupported op, or input shape mismatch).
    #[error("{path}: cannot load graph for input {shape:?}: {message}; re-export the bundle for this input")]
    Load {
        /// Graph file.
        path: PathBuf,
        /// Expected input shape.
        shape: Vec<usize>,
        /// tract's message, whole cause chain.
        message: String,
    },
    /// The graph's output length differs from the manifest.
    #[error("{path}: output has {found} values, the manifest says {expected}; the bundle is mismatched: re-export it")]
    OutputShape {
        /// Graph file.
        path: PathBuf,
        /// Length in the manifest.
        expected: usize,
        /// Length produced.
        found: usize,
    },
    /// The bundle has no graph of the requested role and precision.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// Running the graph failed.
    #[error("{path}: inference failed: {message}")]
    Run {
        /// Graph file.
        path: PathBuf,
        /// tract's message.
        message: String,
    },
}

/// One loaded, optimized graph taking one f32 input of a fixed shape (`[1, 3, height, width]`
/// for an image, `[1, d]` for a vector) and producing a flat output of `output_dim` f32 values.
/// Holds its run state across calls.
#[derive(Debug)]
pub struct Graph {
    path: PathBuf,
    shape: Vec<usize>,
    output_dim: usize,
    state: TypedSimpleState,
    /// Input tensor reused from run to run (refilled in place once tract has released it).
    input: Arc<Tensor>,
    replaced: crate::convops::Replaced,
}

/// How a graph is prepared for tract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Which convolutions run on the project's kernels ([`crate::convops`]) instead of tract's
    /// (default: depthwise and pointwise).
    pub kernels: crate::convops::Kernels,
}

impl LoadOptions {
    /// Every convolution on tract's own kernels.
    pub const TRACT_ONLY: Self = Self {
        kernels: crate::convops::Kernels {
            depthwise: false,
            dense: false,
            int8: false,
        },
    };
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            kernels: crate::convops::Kernels {
                depthwise: true,
                dense: true,
                int8: true,
            },
        }
    }
}

/// The graph at `path` as the runtime runs it: input fixed to `shape` (which must match the
/// shape the graph declares, if any), the convolutions `options` selects replaced by the
/// project's kernels ([`crate::convops::substitute`]), then optimized by tract.
pub fn optimized_model(
    path: &Path,
    shape: &[usize],
    options: LoadOptions,
) -> Result<(TypedModel, crate::convops::Replaced), RuntimeError> {
    let load_err = |e: TractError| RuntimeError::Load {
        path: path.to_path_buf(),
        shape: shape.to_vec(),
        message: format!("{e:#}"),
    };
    let model = crate::tract_isa::onnx()
        .model_for_path(path)
        .map_err(load_err)?;
    let declared = model
        .input_fact(0)
        .and_then(|f| f.shape.as_concrete_finite())
        .map_err(load_err)?;
    if let Some(d) = declared.filter(|d| d.as_slice() != shape) {
        return Err(RuntimeError::Load {
            path: path.to_path_buf(),
            shape: shape.to_vec(),
            message: format!("the graph declares input {:?}", d.as_slice()),
        });
    }
    let typed = model
        .with_input_fact(0, f32::fact(shape).into())
        .and_then(|m| m.into_typed())
        .map_err(load_err)?;
    let (typed, replaced) = crate::convops::substitute(typed, options.kernels).map_err(load_err)?;
    let optimized = typed.into_optimized().map_err(load_err)?;
    Ok((optimized, replaced))
}

impl Graph {
    /// Loads an image graph: input `[1, 3, height, width]` (see [`Self::load_shaped`]).
    pub fn load(
        path: &Path,
        height: usize,
        width: usize,
        output_dim: usize,
    ) -> Result<Self, RuntimeError> {
        Self::load_shaped(path, &[1, 3, height, width], output_dim)
    }

    /// Loads the bundle's graph of `role` at its default precision, with the input shape its
    /// manifest entry declares.
    pub fn load_role(bundle: &Bundle, role: GraphRole) -> Result<Self, RuntimeError> {
        Self::load_at(bundle, role, bundle.manifest.default_precision)
    }

    /// Loads the bundle's graph of `role` at `precision`, with the input shape its manifest
    /// entry declares.
    pub fn load_at(
        bundle: &Bundle,
        role: GraphRole,
        precision: Precision,
    ) -> Result<Self, RuntimeError> {
        let (entry, path) = bundle.graph_at(role, precision)?;
        Self::load_shaped(&path, &bundle.manifest.input_shape(entry), entry.output_dim)
    }

    /// Loads `path`, fixes its input to `shape`, optimizes it with the default
    /// [`LoadOptions`], and checks with one zero input that it yields `output_dim` values.
    pub fn load_shaped(
        path: &Path,
        shape: &[usize],
        output_dim: usize,
    ) -> Result<Self, RuntimeError> {
        Self::load_shaped_with(path, shape, output_dim, LoadOptions::default())
    }

    /// [`Self::load_shaped`] with explicit options.
    pub fn load_shaped_with(
        path: &Path,
        shape: &[usize],
        output_dim: usize,
        options: LoadOptions,
    ) -> Result<Self, RuntimeError> {
        let load_err = |e: TractError| RuntimeError::Load {
            path: path.to_path_buf(),
            shape: shape.to_vec(),
            message: format!("{e:#}"),
        };
        let (optimized, replaced) = optimized_model(path, shape, options)?;
        let plan = optimized.into_runnable().map_err(load_err)?;
        let state = plan.spawn().map_err(load_err)?;
        let input = Arc::new(Tensor::zero::<f32>(shape).map_err(load_err)?);
        let mut g = Self {
            path: path.to_path_buf(),
            shape: shape.to_vec(),
            output_dim,
            state,
            input,
            replaced,
        };
        let zeros = vec![0.0f32; shape.iter().product()];
        let mut out = vec![0.0f32; output_dim];
        g.run_into(&zeros, &mut out)?;
        Ok(g)
    }

    /// Runs the graph on one input of the loaded shape (row-major), writing `output_dim` values.
    pub fn run_into(&mut self, input: &[f32], out: &mut [f32]) -> Result<(), RuntimeError> {
        self.run_with(input, out, None)
    }

    /// Runs like [`Self::run_into`] and adds each op's wall time in milliseconds to `times`,
    /// keyed by tract's op name (`DepthWiseConv`, `OptMatMul`, ...).
    pub fn run_profiled(
        &mut self,
        input: &[f32],
        out: &mut [f32],
        times: &mut std::collections::BTreeMap<String, f64>,
    ) -> Result<(), RuntimeError> {
        self.run_with(input, out, Some(times))
    }

    fn run_with(
        &mut self,
        input: &[f32],
        out: &mut [f32],
        times: Option<&mut std::collections::BTreeMap<String, f64>>,
    ) -> Result<(), RuntimeError> {
        let run_err = |message: String| RuntimeError::Run {
            path: self.path.clone(),
            message,
        };
        match Arc::get_mut(&mut self.input) {
            Some(t) if t.len() == input.len() => t
                .try_as_plain_ram_mut()
                .and_then(|mut v| {
                    v.as_slice_mut::<f32>()?.copy_from_slice(input);
                    Ok(())
                })
                .map_err(|e| run_err(format!("{e:#}")))?,
            _ => {
                let t = Tensor::from_shape(&self.shape, input)
                    .map_err(|e| run_err(format!("{e:#}")))?;
                self.input = Arc::new(t);
            }
        }
        let inputs = tvec!(self.input.clone().into_tvalue());
        let outputs = match times {
            None => self.state.run(inputs),
            Some(times) => self
                .state
                .run_plan_with_eval(inputs, |ctx, state, node, input| {
                    let t = std::time::Instant::now();
                    let r = tract_onnx::tract_core::plan::eval(ctx, state, node, input);
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    *times.entry(node.op().name().to_string()).or_insert(0.0) += ms;
                    r
                }),
        }
        .map_err(|e| run_err(format!("{e:#}")))?;
        let first = outputs
            .first()
            .ok_or_else(|| run_err("graph produced no output".into()))?;
        let view = first
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(|e| run_err(format!("{e:#}")))?;
        if view.len() != self.output_dim || out.len() != self.output_dim {
            return Err(RuntimeError::OutputShape {
                path: self.path.clone(),
                expected: self.output_dim,
                found: view.len(),
            });
        }
        out.copy_from_slice(view);
        Ok(())
    }

    /// How many convolutions run on the project's kernels, and how many clamps they fused.
    pub fn replaced(&self) -> crate::convops::Replaced {
        self.replaced
    }

    /// The graph's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
