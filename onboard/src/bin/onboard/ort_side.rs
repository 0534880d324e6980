//! ONNX Runtime on the bundle's graphs, side by side with tract in `onboard bench` (feature
//! `ort`): the `libonnxruntime` shared library is loaded at run time from a path, one intra-op
//! and one inter-op thread, every graph optimization on.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use onboard::bundle::{Bundle, GraphInput, GraphRole, Precision};
use ort::session::Session;
use ort::value::TensorRef;

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// One graph in an ONNX Runtime session with its input shape.
struct OrtGraph {
    session: Session,
    shape: Vec<i64>,
    input: GraphInput,
}

impl OrtGraph {
    fn load(
        env: &ort::environment::Environment,
        bundle: &Bundle,
        role: GraphRole,
        precision: Precision,
    ) -> anyhow::Result<Self> {
        let (entry, path) = bundle.graph_at(role, precision)?;
        let session = Session::builder(env)
            .map_err(err)?
            .with_intra_threads(1)
            .map_err(err)?
            .with_inter_threads(1)
            .map_err(err)?
            .commit_from_file(&path)
            .map_err(err)
            .with_context(|| format!("{}: ONNX Runtime cannot load it", path.display()))?;
        Ok(Self {
            session,
            shape: bundle
                .manifest
                .input_shape(entry)
                .iter()
                .map(|&d| d as i64)
                .collect(),
            input: entry.input,
        })
    }

    /// Runs on `x`, writes the output into `out`; returns the milliseconds.
    fn run(&mut self, x: &[f32], out: &mut [f32]) -> anyhow::Result<f64> {
        let t = Instant::now();
        let input = TensorRef::from_array_view((self.shape.as_slice(), x)).map_err(err)?;
        let outputs = self.session.run(ort::inputs![input]).map_err(err)?;
        let (_, y) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        anyhow::ensure!(
            y.len() == out.len(),
            "ONNX Runtime output length {}",
            y.len()
        );
        out.copy_from_slice(y);
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

/// Both graphs of a bundle at one precision in ONNX Runtime.
pub struct OrtPipeline {
    encoder: OrtGraph,
    classifier: OrtGraph,
    latent: Vec<f32>,
    /// The ONNX Runtime library loaded.
    pub library: String,
}

impl OrtPipeline {
    /// Loads `lib` (a `libonnxruntime` shared library) and both graphs of `bundle` at
    /// `precision`.
    pub fn load(lib: &Path, bundle: &Bundle, precision: Precision) -> anyhow::Result<Self> {
        let env = ort::init_from(lib)
            .map_err(err)
            .with_context(|| format!("{}: cannot load ONNX Runtime (pass --ort-lib PATH to a libonnxruntime.so, e.g. the one in the onnxruntime wheel)", lib.display()))?
            .with_name("onboard-bench")
            .build()
            .map_err(err)?;
        Ok(Self {
            encoder: OrtGraph::load(&env, bundle, GraphRole::Encoder, precision)?,
            classifier: OrtGraph::load(&env, bundle, GraphRole::Classifier, precision)?,
            latent: vec![0.0; bundle.manifest.latent_dim],
            library: lib.display().to_string(),
        })
    }

    /// Runs the encoder on `image` and the classifier on the image or the encoder's output, as
    /// the manifest says; writes the logits; returns the milliseconds of each graph.
    pub fn run(&mut self, image: &[f32], logits: &mut [f32]) -> anyhow::Result<(f64, f64)> {
        let enc = self.encoder.run(image, &mut self.latent)?;
        let cls = match self.classifier.input {
            GraphInput::Image => self.classifier.run(image, logits)?,
            GraphInput::Latent => self.classifier.run(&self.latent, logits)?,
        };
        Ok((enc, cls))
    }
}
