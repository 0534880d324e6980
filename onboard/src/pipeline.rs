//! Per-image analysis: preprocess -> encoder -> nearest centroid -> classifier.

use std::path::Path;

use crate::bundle::{Bundle, GraphRole};
use crate::decide::{self, ClusterStats};
use crate::preprocess::{self, ImageError, QualityFlags};
use crate::runtime::{Graph, RuntimeError};

/// What the pipeline concluded about one image.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Analysis {
    /// Encoder latent (after the bundle's normalization), `latent_dim` values.
    pub latent: Vec<f32>,
    /// Nearest cluster.
    pub cluster: usize,
    /// Distance to the nearest centroid.
    pub distance: f32,
    /// Novelty relative to the cluster's distance statistics (see [`decide::novelty`]).
    pub novelty: f32,
    /// Predicted class id.
    pub class: usize,
    /// Softmax probability of the predicted class.
    pub confidence: f32,
    /// Softmax probabilities of every class.
    pub probs: Vec<f32>,
    /// Image-quality flags of the decoded image.
    pub quality: QualityFlags,
}

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
}

/// The loaded bundle with both graphs and reusable buffers.
#[derive(Debug)]
pub struct Analyzer {
    /// The bundle.
    pub bundle: Bundle,
    encoder: Graph,
    classifier: Graph,
    input: Vec<f32>,
    logits: Vec<f32>,
}

impl Analyzer {
    /// Loads both graphs of a validated bundle.
    pub fn new(bundle: Bundle) -> Result<Self, RuntimeError> {
        let m = &bundle.manifest;
        let (h, w) = (m.input.height as usize, m.input.width as usize);
        let (enc, enc_path) = bundle.graph(GraphRole::Encoder);
        let encoder = Graph::load(&enc_path, h, w, enc.output_dim)?;
        let (cls, cls_path) = bundle.graph(GraphRole::Classifier);
        let classifier = Graph::load(&cls_path, h, w, cls.output_dim)?;
        let logits = vec![0.0; cls.output_dim];
        Ok(Self {
            input: vec![0.0; 3 * h * w],
            logits,
            encoder,
            classifier,
            bundle,
        })
    }

    /// Analyses one image file.
    pub fn analyze_file(&mut self, path: &Path) -> Result<Analysis, AnalyzeError> {
        let img = preprocess::decode_file(path)?;
        let rgb = preprocess::resize_rgb(&img, &self.bundle.manifest.input);
        preprocess::normalize_into(&rgb, &self.bundle.manifest.input, &mut self.input);
        let quality = preprocess::quality_flags(&rgb);
        let mut a = self.analyze_input()?;
        a.quality = quality;
        Ok(a)
    }

    /// Analyses the preprocessed input currently in the buffer.
    fn analyze_input(&mut self) -> Result<Analysis, AnalyzeError> {
        let m = &self.bundle.manifest;
        let mut latent = vec![0.0; m.latent_dim];
        self.encoder.run_into(&self.input, &mut latent)?;
        if latent.iter().any(|v| !v.is_finite()) {
            return Err(AnalyzeError::NonFinite);
        }
        if m.clustering.l2_normalize {
            l2_normalize(&mut latent);
        }
        let near = decide::nearest_centroid(&latent, &self.bundle.centroids_flat)
            .map_err(|_| AnalyzeError::NonFinite)?;
        let s = m.clustering.distance_stats[near.cluster];
        let novelty = decide::novelty(
            near.distance,
            ClusterStats {
                mean: s.mean,
                std: s.std,
            },
        );
        self.classifier.run_into(&self.input, &mut self.logits)?;
        let (class, confidence) =
            decide::softmax_argmax(&mut self.logits).ok_or(AnalyzeError::NonFinite)?;
        Ok(Analysis {
            latent,
            cluster: near.cluster,
            distance: near.distance,
            novelty,
            class,
            confidence,
            probs: self.logits.clone(),
            quality: QualityFlags::default(),
        })
    }
}

/// Scales `v` to unit Euclidean norm (left unchanged when its norm is 0).
pub fn l2_normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}
