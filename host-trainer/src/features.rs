//! Frozen-backbone features with a disk cache: the pooled `[n, 1280]` features of an ImageNet
//! EfficientNet-Lite (BatchNorm in eval mode, no gradients) for every readable image of a
//! labeled split at one input side, so that comparing recipes on them costs seconds, not an
//! epoch. A cache entry is keyed by the variant, the side, the split file's content and the
//! weight file's content; it is written to a temporary name and renamed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use onboard::labels::read_labels;
use tch::{nn, Device, Kind, Tensor};

use crate::effnet::{self, EfficientNetLite, Lite};

/// Pooled features of one split, in split-file order (unreadable images dropped); also the
/// cache file's content.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct FeatureSet {
    /// Image files relative to the dataset root, one per row.
    pub files: Vec<String>,
    /// Class id per row.
    pub labels: Vec<usize>,
    /// Row-major `[files.len(), dim]`.
    pub features: Vec<f32>,
    /// Feature dimension.
    pub dim: usize,
}

impl FeatureSet {
    /// Rows.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The rows in the order `order` (indices into this set).
    pub fn select(&self, order: &[usize]) -> FeatureSet {
        let mut features = Vec::with_capacity(order.len() * self.dim);
        for &i in order {
            features.extend_from_slice(&self.features[i * self.dim..(i + 1) * self.dim]);
        }
        FeatureSet {
            files: order.iter().map(|&i| self.files[i].clone()).collect(),
            labels: order.iter().map(|&i| self.labels[i]).collect(),
            features,
            dim: self.dim,
        }
    }

    /// The rows sorted by file name: for MSL names (`calibrated/SSSS...`) that is sol order.
    pub fn in_sol_order(&self) -> FeatureSet {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by(|&a, &b| self.files[a].cmp(&self.files[b]));
        self.select(&order)
    }
}

/// What to extract.
#[derive(Debug, Clone)]
pub struct FeatureSpec {
    /// Backbone.
    pub lite: Lite,
    /// Input side (images resized to `side x side` as on board).
    pub side: u32,
    /// The weights folder `scripts/setup.sh` writes (or the variant's file).
    pub weights: PathBuf,
    /// Cache folder.
    pub cache: PathBuf,
}

fn short_sha(bytes: &[u8]) -> String {
    onboard::bundle::sha256_hex(bytes)[..16].to_string()
}

/// The features of `split` (relative to `data`), from the cache or extracted (and cached).
pub fn split_features(
    spec: &FeatureSpec,
    data: &Path,
    split: &str,
    device: Device,
) -> anyhow::Result<FeatureSet> {
    let split_path = data.join(split);
    let split_bytes = std::fs::read(&split_path).with_context(|| {
        format!(
            "{}: cannot read the split (pass --data ROOT)",
            split_path.display()
        )
    })?;
    let weights = effnet::weights_for(spec.lite, &spec.weights);
    let weight_bytes = std::fs::read(&weights).with_context(|| {
        format!(
            "{}: cannot read the weights; run scripts/setup.sh",
            weights.display()
        )
    })?;
    let stem = Path::new(split)
        .file_stem()
        .map_or("split".into(), |s| s.to_string_lossy());
    let key = short_sha(&[split_bytes, weight_bytes].concat());
    let file = spec.cache.join(format!(
        "{}-{}-{stem}-{key}.json",
        spec.lite.name(),
        spec.side
    ));
    if let Ok(text) = std::fs::read_to_string(&file) {
        match serde_json::from_str::<FeatureSet>(&text) {
            Ok(set) if set.is_consistent() => return Ok(set),
            _ => eprintln!(
                "features: {} is unreadable; extracting again",
                file.display()
            ),
        }
    }
    let set = extract(spec, &weights, data, &split_path, device)?;
    std::fs::create_dir_all(&spec.cache)
        .with_context(|| format!("{}: cannot create the cache folder", spec.cache.display()))?;
    onboard::bundle::write_atomic(&file, serde_json::to_string(&set)?.as_bytes())
        .with_context(|| format!("{}: cannot write the feature cache", file.display()))?;
    Ok(set)
}

impl FeatureSet {
    /// Whether the shapes agree and every feature is finite (a cache file may be damaged).
    fn is_consistent(&self) -> bool {
        self.dim > 0
            && self.files.len() == self.labels.len()
            && self.features.len() == self.files.len() * self.dim
            && self.features.iter().all(|v| v.is_finite())
    }
}

/// Runs the frozen backbone over the split in chunks of decoded images.
fn extract(
    spec: &FeatureSpec,
    weights: &Path,
    data: &Path,
    split_path: &Path,
    device: Device,
) -> anyhow::Result<FeatureSet> {
    let items = read_labels(split_path)?;
    let vs = nn::VarStore::new(device);
    let net = EfficientNetLite::new(&vs.root(), spec.lite, 0, false);
    effnet::load_pretrained(&vs, "", weights, &["_fc."])?;
    let input = crate::data::input_spec(spec.side);
    let (mut files, mut labels, mut features) = (Vec::new(), Vec::new(), Vec::new());
    let started = std::time::Instant::now();
    for chunk in items.chunks(256) {
        let paths = chunk.iter().map(|i| data.join(&i.file)).collect();
        let ids = (0..chunk.len() as i64).collect();
        let Ok(set) = crate::data::load_images(paths, ids, &input, "features") else {
            continue;
        };
        for batch in set.images.split(32, 0) {
            let f = tch::no_grad(|| net.embed(&batch.to_device(device), false));
            features.extend(crate::model::to_vec(
                &f.to_kind(Kind::Float).to_device(Device::Cpu),
            ));
        }
        for &id in &set.labels {
            let item = &chunk[id as usize];
            files.push(item.file.clone());
            labels.push(item.class);
        }
        eprintln!(
            "features {} @{}: {}/{} images, {:.1} ms/image",
            spec.lite.name(),
            spec.side,
            files.len(),
            items.len(),
            started.elapsed().as_secs_f64() * 1e3 / files.len().max(1) as f64
        );
    }
    anyhow::ensure!(
        !files.is_empty(),
        "{}: no decodable images",
        split_path.display()
    );
    Ok(FeatureSet {
        files,
        labels,
        features,
        dim: effnet::FEATURES as usize,
    })
}

/// Row-major features as a `[n, dim]` tensor.
pub fn tensor(set: &FeatureSet) -> Tensor {
    Tensor::from_slice(&set.features).view([set.len() as i64, set.dim as i64])
}
