//! What the pipeline concludes about one image: the record the planner ranks and the journal
//! keeps (std only, no inference runtime, so the journal's parser builds without one).

use crate::preprocess::QualityFlags;

/// What the pipeline concluded about one image.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Analysis {
    /// Encoder latent (after the bundle's normalization), `latent_dim` values.
    pub latent: Vec<f32>,
    /// Nearest cluster.
    pub cluster: usize,
    /// Distance to the nearest centroid.
    pub distance: f32,
    /// Novelty relative to the cluster's distance statistics (see [`crate::decide::novelty`]).
    pub novelty: f32,
    /// Predicted class id.
    pub class: usize,
    /// Softmax probability of the predicted class.
    pub confidence: f32,
    /// Probabilities of every class (adapted to the stream's class prior when adaptation is
    /// on).
    pub probs: Vec<f32>,
    /// With adaptation on: the calibrated probabilities before the class-prior adaptation,
    /// kept so the journal can rebuild the adapter's state ([`crate::adapt::StreamAdapter::replay`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrated_probs: Option<Vec<f32>>,
    /// Image-quality flags of the decoded image.
    pub quality: QualityFlags,
    /// [`crate::preprocess::content_hash`] of the file's bytes (absent in records written before it
    /// existed): byte-identical copies are duplicates at any distance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<u64>,
}
