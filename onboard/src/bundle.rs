//! Model bundle format v1: a folder holding `manifest.json` and the ONNX graphs it names.
//!
//! [`Bundle::load`] checks the format version, every graph's sha256, shapes and that every
//! number is finite, and fails with an error naming the file and the fix.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod calibration;
pub use calibration::{
    class_prior, fit_temperature, fit_temperature_weighted, nll_at_temperature,
    nll_at_temperature_weighted, Adaptation, Calibration, PRIOR_WINDOW_CAPACITY,
};

/// The bundle format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the manifest inside a bundle folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// How an image becomes the input tensor `[1, 3, height, width]` (NCHW, f32).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Input width in pixels after resizing.
    pub width: u32,
    /// Input height in pixels after resizing.
    pub height: u32,
    /// Channel order of the tensor; only `"rgb"` is defined in v1.
    pub channel_order: String,
    /// Resampling filter used to resize the decoded image; only `"triangle"` in v1.
    pub resize: String,
    /// Per-channel value subtracted from the 0..255 pixel value.
    pub mean: [f32; 3],
    /// Per-channel divisor applied after subtracting `mean`.
    pub std: [f32; 3],
}

/// What a graph computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphRole {
    /// Image -> latent vector `[1, latent_dim]`.
    Encoder,
    /// Image -> class logits `[1, classes.len()]`.
    Classifier,
}

/// Numeric precision of a graph file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Precision {
    /// 32-bit float weights and compute.
    #[default]
    F32,
    /// Int8 weights and activations, integer compute (`QLinearConv`, `MatMulInteger`).
    Int8,
    /// Int8 weights dequantized at load, f32 compute: a 4x smaller file, f32 speed.
    Int8Weights,
}

impl Precision {
    /// Every precision, in the order a bundle lists them.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Int8, Precision::Int8Weights];

    /// The name used in manifests, file names and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
            Precision::Int8Weights => "int8-weights",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a graph reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphInput {
    /// The preprocessed image `[1, 3, height, width]`.
    #[default]
    Image,
    /// The encoder's output `[1, latent_dim]` as the encoder produced it (before any L2
    /// normalization): the classifier then shares the encoder's backbone.
    Latent,
}

/// One ONNX graph of the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphEntry {
    /// What the graph computes.
    pub role: GraphRole,
    /// File name relative to the bundle folder.
    pub file: String,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    /// Precision of the file.
    pub precision: Precision,
    /// Length of the output vector.
    pub output_dim: usize,
    /// What the graph reads (`image` when absent).
    #[serde(default)]
    pub input: GraphInput,
}

/// The k-means clustering of the encoder's latent space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clustering {
    /// Whether latents are L2-normalized before the nearest-centroid search.
    pub l2_normalize: bool,
    /// Centroids, `k` rows of `latent_dim` values.
    pub centroids: Vec<Vec<f32>>,
    /// Distance statistics of the training points of each cluster, one per centroid.
    pub distance_stats: Vec<DistanceStats>,
}

/// Distance statistics of one cluster's training points to its centroid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DistanceStats {
    /// Number of training points in the cluster.
    pub count: u32,
    /// Mean Euclidean distance.
    pub mean: f32,
    /// Standard deviation of the distance (> 0).
    pub std: f32,
    /// 95th percentile of the distance.
    pub p95: f32,
}

/// One class of the classifier, in class-id order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassEntry {
    /// Class id (position in the classifier output).
    pub id: u32,
    /// Class name from the dataset's synset file.
    pub name: String,
    /// Science value used by downlink scoring (>= 0).
    pub science_value: f32,
}

/// Where the bundle came from, enough to retrain it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Dataset name and version.
    pub dataset: String,
    /// Split files used for training, relative to the dataset root.
    pub train_splits: Vec<String>,
    /// Split file used for validation metrics, if any.
    pub validation_split: Option<String>,
    /// Seed of every random choice.
    pub seed: u64,
    /// The full training configuration.
    pub config: serde_json::Value,
    /// Source commit of the trainer (`git rev-parse HEAD`), or `"unknown"`.
    pub source_commit: String,
    /// Command line that produced the bundle.
    pub command: String,
    /// Post-training quantization settings of the int8 graphs, if the bundle has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<serde_json::Value>,
}

/// `manifest.json`, format v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Must equal [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Bundle name.
    pub name: String,
    /// Input preprocessing shared by every graph.
    pub input: InputSpec,
    /// The graphs: exactly one encoder and one classifier per precision the bundle carries.
    pub graphs: Vec<GraphEntry>,
    /// The precision `onboard` runs unless told otherwise (`f32` when absent); the bundle
    /// carries both graphs at this precision.
    #[serde(default)]
    pub default_precision: Precision,
    /// Length of the encoder output.
    pub latent_dim: usize,
    /// Latent-space clustering.
    pub clustering: Clustering,
    /// Classes in class-id order.
    pub classes: Vec<ClassEntry>,
    /// Training provenance.
    pub provenance: Provenance,
    /// Temperature and training class prior of the classifier (absent: temperature 1, no
    /// class-prior adaptation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// On-board adaptation settings (absent: [`Adaptation::default`]).
    #[serde(default)]
    pub adaptation: Adaptation,
}

/// A bundle that passed every check of [`Bundle::load`].
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Bundle folder.
    pub dir: PathBuf,
    /// Parsed and validated manifest.
    pub manifest: Manifest,
    /// Centroids flattened row-major `[k, latent_dim]`.
    pub centroids_flat: Vec<f32>,
}

/// Why a bundle could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be read.
    #[error("{path}: cannot read: {source}; check that the bundle folder is complete (retrain or restore it)")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The manifest is not valid JSON for this format.
    #[error("{path}: invalid manifest: {source}; regenerate it with host-trainer")]
    Parse {
        /// Manifest path.
        path: PathBuf,
        /// Underlying error.
        source: serde_json::Error,
    },
    /// The manifest was written for another format version.
    #[error("{path}: format version {found} is not supported (this build reads {FORMAT_VERSION}); use a matching onboard build or re-export the bundle")]
    Version {
        /// Manifest path.
        path: PathBuf,
        /// Version in the file.
        found: u32,
    },
    /// A graph file does not match the hash recorded in the manifest.
    #[error("{path}: sha256 {found} does not match the manifest's {expected}; the file is corrupt or from another bundle: restore it")]
    Hash {
        /// Graph path.
        path: PathBuf,
        /// Hash in the manifest.
        expected: String,
        /// Hash of the file.
        found: String,
    },
    /// The manifest is self-inconsistent.
    #[error("{path}: {what}; fix the manifest or re-export the bundle")]
    Invalid {
        /// Manifest path.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

impl Bundle {
    /// Loads and validates the bundle in `dir`.
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read(&path).map_err(|source| BundleError::Io {
            path: path.clone(),
            source,
        })?;
        let manifest = Manifest::parse(&path, &text)?;
        for g in &manifest.graphs {
            let gp = dir.join(&g.file);
            let found = sha256_file(&gp)?;
            if found != g.sha256 {
                return Err(BundleError::Hash {
                    path: gp,
                    expected: g.sha256.clone(),
                    found,
                });
            }
        }
        let centroids_flat = manifest.clustering.centroids.concat();
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            centroids_flat,
        })
    }

    /// The graph of `role` at the manifest's default precision, and its path.
    pub fn graph(&self, role: GraphRole) -> (&GraphEntry, PathBuf) {
        let g = self
            .manifest
            .graph(role, self.manifest.default_precision)
            .unwrap_or(&self.manifest.graphs[0]);
        (g, self.dir.join(&g.file))
    }

    /// The graph of `role` at `precision` and its path, or an error naming the precisions the
    /// bundle carries.
    pub fn graph_at(
        &self,
        role: GraphRole,
        precision: Precision,
    ) -> Result<(&GraphEntry, PathBuf), BundleError> {
        match self.manifest.graph(role, precision) {
            Some(g) => Ok((g, self.dir.join(&g.file))),
            None => Err(BundleError::Invalid {
                path: self.dir.join(MANIFEST_FILE),
                what: format!(
                    "no {precision} graphs (this bundle carries: {}); pick one of those or re-export the bundle with host-trainer quantize",
                    self.manifest
                        .precisions()
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }
}

#[derive(Deserialize)]
struct VersionProbe {
    format_version: u32,
}

impl Manifest {
    /// The graph of `role` at `precision`, if the bundle carries it.
    pub fn graph(&self, role: GraphRole, precision: Precision) -> Option<&GraphEntry> {
        self.graphs
            .iter()
            .find(|g| g.role == role && g.precision == precision)
    }

    /// The precisions the bundle carries, in [`Precision::ALL`] order.
    pub fn precisions(&self) -> Vec<Precision> {
        Precision::ALL
            .into_iter()
            .filter(|p| self.graphs.iter().any(|g| g.precision == *p))
            .collect()
    }

    /// The input shape of graph `g`: `[1, 3, height, width]` for an image, `[1, latent_dim]` for
    /// the encoder's output.
    pub fn input_shape(&self, g: &GraphEntry) -> Vec<usize> {
        match g.input {
            GraphInput::Image => vec![1, 3, self.input.height as usize, self.input.width as usize],
            GraphInput::Latent => vec![1, self.latent_dim],
        }
    }

    /// Parses and validates manifest bytes (read from `path`, named in errors): the format
    /// version first, then the whole manifest, then [`Self::validate`].
    pub fn parse(path: &Path, text: &[u8]) -> Result<Self, BundleError> {
        let version: VersionProbe =
            serde_json::from_slice(text).map_err(|source| BundleError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        if version.format_version != FORMAT_VERSION {
            return Err(BundleError::Version {
                path: path.to_path_buf(),
                found: version.format_version,
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(text).map_err(|source| BundleError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        manifest.validate().map_err(|what| BundleError::Invalid {
            path: path.to_path_buf(),
            what,
        })?;
        Ok(manifest)
    }

    /// Checks internal consistency; returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let i = &self.input;
        if i.width == 0 || i.height == 0 || i.width > 4096 || i.height > 4096 {
            return Err(format!(
                "input size {}x{} out of range 1..=4096",
                i.width, i.height
            ));
        }
        if i.channel_order != "rgb" {
            return Err(format!(
                "channel_order {:?} unsupported (expected \"rgb\")",
                i.channel_order
            ));
        }
        if i.resize != "triangle" {
            return Err(format!(
                "resize {:?} unsupported (expected \"triangle\")",
                i.resize
            ));
        }
        if i.mean.iter().any(|v| !v.is_finite())
            || i.std.iter().any(|v| !v.is_finite() || *v <= 0.0)
        {
            return Err("input mean/std must be finite and std > 0".into());
        }
        for p in self.precisions() {
            for role in [GraphRole::Encoder, GraphRole::Classifier] {
                let n = self
                    .graphs
                    .iter()
                    .filter(|g| g.role == role && g.precision == p)
                    .count();
                if n != 1 {
                    return Err(format!(
                        "expected exactly one {role:?} graph at precision {p}, found {n}"
                    ));
                }
            }
        }
        if !self.precisions().contains(&self.default_precision) {
            return Err(format!(
                "default_precision {} has no graphs",
                self.default_precision
            ));
        }
        for g in &self.graphs {
            if g.file.contains('/') || g.file.contains('\\') || g.file.starts_with('.') {
                return Err(format!(
                    "graph file {:?} must be a plain file name inside the bundle",
                    g.file
                ));
            }
            if g.role == GraphRole::Encoder && g.input != GraphInput::Image {
                return Err(format!("{}: the encoder must read the image", g.file));
            }
            let want = match g.role {
                GraphRole::Encoder => self.latent_dim,
                GraphRole::Classifier => self.classes.len(),
            };
            if g.output_dim != want {
                return Err(format!(
                    "{} output_dim {} != expected {want}",
                    g.file, g.output_dim
                ));
            }
        }
        if self.latent_dim == 0 {
            return Err("latent_dim is 0".into());
        }
        let c = &self.clustering;
        if c.centroids.is_empty() {
            return Err("no centroids".into());
        }
        if c.distance_stats.len() != c.centroids.len() {
            return Err(format!(
                "{} distance_stats for {} centroids",
                c.distance_stats.len(),
                c.centroids.len()
            ));
        }
        for (k, row) in c.centroids.iter().enumerate() {
            if row.len() != self.latent_dim {
                return Err(format!(
                    "centroid {k} has {} values, latent_dim is {}",
                    row.len(),
                    self.latent_dim
                ));
            }
            if row.iter().any(|v| !v.is_finite()) {
                return Err(format!("centroid {k} holds a non-finite value"));
            }
        }
        for (k, s) in c.distance_stats.iter().enumerate() {
            if !(s.mean.is_finite() && s.p95.is_finite() && s.std.is_finite() && s.std > 0.0) {
                return Err(format!("distance_stats {k} must be finite with std > 0"));
            }
        }
        if self.classes.is_empty() {
            return Err("no classes".into());
        }
        for (pos, cl) in self.classes.iter().enumerate() {
            if cl.id as usize != pos {
                return Err(format!(
                    "class {:?} has id {} at position {pos}",
                    cl.name, cl.id
                ));
            }
            if !cl.science_value.is_finite() || cl.science_value < 0.0 {
                return Err(format!(
                    "class {:?} science_value must be finite and >= 0",
                    cl.name
                ));
            }
        }
        if let Some(c) = &self.calibration {
            c.validate(self.classes.len())?;
        }
        self.adaptation.validate()
    }

    /// Writes the manifest as pretty JSON to `dir/manifest.json` atomically (temp file + rename).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(&dir.join(MANIFEST_FILE), &text)
    }
}

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let bytes = std::fs::read(path).map_err(|source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(sha256_hex(&bytes))
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `bytes` to `path` through a synced temporary file in the same folder and a rename, so
/// a crash leaves either the old file or the new one, never a torn one. An existing `path` that
/// is not a regular file (symlink, device, folder) is refused, not replaced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.is_file() {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a regular file (a link, device or folder); pass a new file path",
                path.display()
            )));
        }
    }
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{}: not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_manifest() -> Manifest {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default/manifest.json");
        let text = std::fs::read_to_string(path).expect("models/default/manifest.json");
        serde_json::from_str(&text).expect("manifest parses")
    }

    #[test]
    fn graph_input_defaults_to_image_and_only_the_classifier_may_read_the_latent() {
        let mut m = default_manifest();
        assert_eq!(m.validate(), Ok(()));
        let mut value = serde_json::to_value(&m).expect("serializes");
        for g in value["graphs"].as_array_mut().expect("graphs") {
            g.as_object_mut().expect("object").remove("input");
        }
        let old: Manifest = serde_json::from_value(value).expect("parses without `input`");
        assert!(old.graphs.iter().all(|g| g.input == GraphInput::Image));
        for g in &mut m.graphs {
            g.input = match g.role {
                GraphRole::Encoder => GraphInput::Latent,
                GraphRole::Classifier => GraphInput::Image,
            };
        }
        let err = m.validate().expect_err("encoder reading the latent");
        assert!(err.contains("encoder must read the image"), "{err}");
    }

    #[test]
    fn every_precision_needs_both_graphs_and_the_default_precision_must_exist() {
        let full = default_manifest();
        assert_eq!(full.validate(), Ok(()));
        let mut m = full.clone();
        m.graphs
            .retain(|g| !(g.precision == Precision::Int8 && g.role == GraphRole::Classifier));
        let err = m.validate().expect_err("int8 without its classifier");
        assert!(err.contains("Classifier graph at precision int8"), "{err}");
        let mut m = full.clone();
        m.graphs.retain(|g| g.precision == Precision::F32);
        m.default_precision = Precision::Int8;
        let err = m.validate().expect_err("default precision without graphs");
        assert!(
            err.contains("default_precision int8 has no graphs"),
            "{err}"
        );
        let mut value = serde_json::to_value(&m).expect("serializes");
        value
            .as_object_mut()
            .expect("object")
            .remove("default_precision");
        let old: Manifest = serde_json::from_value(value).expect("parses without it");
        assert_eq!(old.default_precision, Precision::F32);
        assert_eq!(old.validate(), Ok(()));
        assert_eq!(old.precisions(), vec![Precision::F32]);
    }
}
