//! Per-image analysis: preprocess -> encoder -> nearest centroid -> classifier.

use std::path::Path;

use crate::adapt::StreamAdapter;
use crate::bundle::{Bundle, GraphInput, GraphRole, Precision};
use crate::decide::{self, ClusterStats};
use crate::preprocess::{self, ImageError, QualityFlags};
use crate::runtime::{Graph, RuntimeError};

pub use crate::analysis::Analysis;

/// Why one image produced no analysis.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// The image could not be read or decoded.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A graph failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The model produced non-finite numbers.
    #[error("model output is not finite")]
    NonFinite,
    /// The stream adaptation refused the image's numbers.
    #[error("adaptation: {0}")]
    Adapt(#[from] decide::DecideError),
}

/// The loaded bundle with both graphs and buffers reused from image to image.
#[derive(Debug)]
pub struct Analyzer {
    /// The bundle.
    pub bundle: Bundle,
    /// Precision of the loaded graphs.
    pub precision: Precision,
    encoder: Graph,
    classifier: Graph,
    decode: preprocess::DecodeBuffers,
    classifier_input: GraphInput,
    input: Vec<f32>,
    latent: Vec<f32>,
    raw_latent: Vec<f32>,
    logits: Vec<f32>,
    temperature: f32,
    adapter: Option<StreamAdapter>,
}

/// Where the current image's latent falls: nearest cluster, distance and novelty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Nearest cluster.
    pub cluster: usize,
    /// Distance to its centroid.
    pub distance: f32,
    /// Novelty relative to the cluster's spread.
    pub novelty: f32,
}

impl Analyzer {
    /// Loads both graphs of a validated bundle at its default precision.
    pub fn new(bundle: Bundle) -> Result<Self, RuntimeError> {
        let p = bundle.manifest.default_precision;
        Self::with_precision(bundle, p)
    }

    /// Loads both graphs of a validated bundle at `precision`.
    pub fn with_precision(bundle: Bundle, precision: Precision) -> Result<Self, RuntimeError> {
        let m = &bundle.manifest;
        let (h, w) = (m.input.height as usize, m.input.width as usize);
        let (cls, _) = bundle.graph_at(GraphRole::Classifier, precision)?;
        let encoder = Graph::load_at(&bundle, GraphRole::Encoder, precision)?;
        let classifier = Graph::load_at(&bundle, GraphRole::Classifier, precision)?;
        let raw = if cls.input == GraphInput::Latent {
            m.latent_dim
        } else {
            0
        };
        Ok(Self {
            input: vec![0.0; 3 * h * w],
            latent: vec![0.0; m.latent_dim],
            raw_latent: vec![0.0; raw],
            logits: vec![0.0; cls.output_dim],
            classifier_input: cls.input,
            temperature: m.calibration.as_ref().map_or(1.0, |c| c.temperature),
            adapter: None,
            precision,
            decode: preprocess::DecodeBuffers::default(),
            encoder,
            classifier,
            bundle,
        })
    }

    /// Analyses one image file: [`Self::load_input`], [`Self::encode`], [`Self::place`],
    /// [`Self::classify`].
    /// With adaptation on ([`Self::set_adapter`]) the placement is against the adapted
    /// centroids and the probabilities are adapted to the stream's class prior, and both then
    /// adapt to this image.
    pub fn analyze_file(&mut self, path: &Path) -> Result<Analysis, AnalyzeError> {
        let quality = self.load_input(path)?;
        self.encode()?;
        // Everything that can fail runs before the adapter changes, so an image either
        // adapts fully (and its analysis says so) or not at all.
        let (mut class, mut confidence) = self.classify()?;
        let (p, calibrated_probs) = match self.adapter.as_mut() {
            Some(adapter) => {
                let calibrated = self.logits.clone();
                let a = adapter.arrive(&self.latent)?;
                adapter.adapt_probs(&mut self.logits)?;
                (class, confidence) =
                    decide::argmax(&self.logits).ok_or(AnalyzeError::NonFinite)?;
                let p = Placement {
                    cluster: a.cluster,
                    distance: a.distance,
                    novelty: a.novelty,
                };
                (p, Some(calibrated))
            }
            None => (self.place()?, None),
        };
        Ok(Analysis {
            latent: self.latent.clone(),
            cluster: p.cluster,
            distance: p.distance,
            novelty: p.novelty,
            class,
            confidence,
            probs: self.logits.clone(),
            calibrated_probs,
            quality,
            content_hash: Some(self.decode.last_file_hash()),
        })
    }

    /// Decodes, resizes and normalizes `path` into the input buffer; returns its quality flags.
    pub fn load_input(&mut self, path: &Path) -> Result<QualityFlags, AnalyzeError> {
        let rgb = self
            .decode
            .load_resized(path, &self.bundle.manifest.input)?;
        preprocess::normalize_into(&rgb, &self.bundle.manifest.input, &mut self.input);
        Ok(preprocess::quality_flags(&rgb))
    }

    /// The input buffer: the current preprocessed image, `[3, height, width]` values.
    pub fn input(&self) -> &[f32] {
        &self.input
    }

    /// The logits buffer: raw logits after [`Self::run_classifier`], class probabilities after
    /// [`Self::softmax`].
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Copies an already preprocessed image (`[3, height, width]` values) into the input buffer;
    /// returns false (leaving the buffer unchanged) when the length differs.
    pub fn set_input(&mut self, x: &[f32]) -> bool {
        if x.len() != self.input.len() {
            return false;
        }
        self.input.copy_from_slice(x);
        true
    }

    /// Runs the encoder on the input buffer into the latent buffer (normalized per the bundle).
    pub fn encode(&mut self) -> Result<(), AnalyzeError> {
        self.encoder.run_into(&self.input, &mut self.latent)?;
        if self.latent.iter().any(|v| !v.is_finite()) {
            return Err(AnalyzeError::NonFinite);
        }
        if self.classifier_input == GraphInput::Latent {
            self.raw_latent.copy_from_slice(&self.latent);
        }
        if self.bundle.manifest.clustering.l2_normalize {
            l2_normalize(&mut self.latent);
        }
        Ok(())
    }

    /// Nearest centroid and novelty of the latent buffer (decision core; allocation-free).
    pub fn place(&self) -> Result<Placement, AnalyzeError> {
        let near = decide::nearest_centroid(&self.latent, &self.bundle.centroids_flat)
            .map_err(|_| AnalyzeError::NonFinite)?;
        let s = self.bundle.manifest.clustering.distance_stats[near.cluster];
        let novelty = decide::novelty(
            near.distance,
            ClusterStats {
                mean: s.mean,
                std: s.std,
            },
        );
        Ok(Placement {
            cluster: near.cluster,
            distance: near.distance,
            novelty,
        })
    }

    /// Runs the classifier (on the input buffer, or on the encoder's output when the bundle's
    /// classifier reads the latent: call [`Self::encode`] first); returns the arg-max class and
    /// its probability, leaving every class probability in the logits buffer.
    pub fn classify(&mut self) -> Result<(usize, f32), AnalyzeError> {
        self.run_classifier()?;
        self.softmax()
    }

    /// The latent buffer (after [`Self::encode`]; normalized as the bundle says).
    pub fn latent(&self) -> &[f32] {
        &self.latent
    }

    /// Runs the classifier graph into the logits buffer (raw logits).
    pub fn run_classifier(&mut self) -> Result<(), AnalyzeError> {
        let input = match self.classifier_input {
            GraphInput::Image => &self.input,
            GraphInput::Latent => &self.raw_latent,
        };
        Ok(self.classifier.run_into(input, &mut self.logits)?)
    }

    /// Softmax of the logits buffer divided by the bundle's temperature, in place (decision
    /// core; allocation-free).
    pub fn softmax(&mut self) -> Result<(usize, f32), AnalyzeError> {
        if self.temperature != 1.0 {
            let t = self.temperature;
            self.logits.iter_mut().for_each(|v| *v /= t);
        }
        decide::softmax_argmax(&mut self.logits).ok_or(AnalyzeError::NonFinite)
    }

    /// Sets the stream adapter (adaptation on, from the adapter's state) or removes it (off).
    pub fn set_adapter(&mut self, adapter: Option<StreamAdapter>) {
        self.adapter = adapter;
    }

    /// The stream adapter, when adaptation is on.
    pub fn adapter(&self) -> Option<&StreamAdapter> {
        self.adapter.as_ref()
    }

    /// Names the bundle and precision this analyzer runs: `PRECISION:` and the first 16 hex
    /// digits of the sha256 of the manifest as loaded (graph hashes, centroids, calibration and
    /// adaptation settings included). A saved adaptation state is only valid for the same one.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let manifest = serde_json::to_vec(&self.bundle.manifest).unwrap_or_default();
        let digest = Sha256::digest(&manifest);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:{hex}", self.precision.name())
    }
}

/// Scales `v` to unit Euclidean norm (left unchanged when its norm is 0).
pub fn l2_normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}
