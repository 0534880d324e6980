//! Choice of the clustering encoder: the autoencoder's latent or the classifier's pooled
//! features, each raw or L2-normalized, compared by k-means quality on validation.

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::cluster::{self, KMeans, KMeansConfig};
use crate::effnet::EfficientNetLite;
use crate::evaluate::{self, ClusterMetrics};
use crate::export::Op;
use crate::model::{Encoder, Forward, Trunk};
use crate::semi::SemiTrunk;
use crate::whiten::Whitening;

/// Which features feed k-means and the onboard nearest-centroid step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterEncoder {
    /// The autoencoder's latent.
    Autoencoder,
    /// The classifier's pooled features (before its head).
    Classifier,
    /// Whichever of the four variants (two encoders, raw or L2-normalized) clusters the
    /// validation split best (mean of Hungarian accuracy and NMI); the training split without
    /// a validation split.
    Auto,
}

/// Which clustering variants a run fits and compares.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    /// The configured encoder (`auto` compares every source with raw / L2 / whitened /
    /// whitened + L2 features).
    pub mode: ClusterEncoder,
    /// L2-normalize (for a fixed encoder).
    pub l2: bool,
    /// Whiten (for a fixed encoder).
    pub whiten: bool,
    /// Whitening components.
    pub whiten_components: usize,
}

/// The chosen clustering: which source (index into the `sources` given), the fitted variant,
/// and every variant compared.
#[derive(Debug)]
pub struct Chosen {
    /// Index of the chosen source.
    pub source: usize,
    /// The chosen variant, fitted.
    pub fitted: Fitted,
    /// Every variant compared, in the order fitted.
    pub compared: Vec<Variant>,
}

/// Fits k-means for every variant `choice` names over `sources` (the classifier's trunk
/// first, then the autoencoder's encoder when there is one) on the training images and keeps
/// the best by [`Variant::score`] (ties: the earlier).
pub fn choose(
    choice: Choice,
    sources: &[Source<'_>],
    train: &crate::data::ImageSet,
    val: Option<&crate::data::ImageSet>,
    km: &KMeansConfig,
    device: Device,
) -> anyhow::Result<Chosen> {
    use anyhow::Context;
    let variants: Vec<(usize, bool, bool)> = match choice.mode {
        ClusterEncoder::Auto => (0..sources.len())
            .flat_map(|si| {
                [
                    (si, false, false),
                    (si, true, false),
                    (si, false, true),
                    (si, true, true),
                ]
            })
            .collect(),
        ClusterEncoder::Classifier => vec![(0, choice.l2, choice.whiten)],
        ClusterEncoder::Autoencoder => {
            let si = sources
                .iter()
                .position(|s| s.kind() == ClusterEncoder::Autoencoder)
                .context("the autoencoder is the clustering encoder but was not trained")?;
            vec![(si, choice.l2, choice.whiten)]
        }
    };
    let train_truth = train.labels_usize();
    let val_truth = val.map(crate::data::ImageSet::labels_usize);
    let mut raw: Vec<Option<RawFeatures>> = sources.iter().map(|_| None).collect();
    let mut fitted = Vec::new();
    for (si, l2, whiten) in variants {
        let features = raw[si].get_or_insert_with(|| {
            RawFeatures::of(&sources[si], &train.images, val.map(|v| &v.images), device)
        });
        let whiten = whiten.then_some(choice.whiten_components);
        let f = fit_variant(features, l2, whiten, &train_truth, val_truth.as_deref(), km)
            .context("clustering the training features")?;
        eprintln!(
            "clustering {:?} (whiten {}, l2 {}): score {:.4}",
            f.variant.encoder,
            f.variant.whiten,
            f.variant.l2_normalize,
            f.variant.score()
        );
        fitted.push((si, f));
    }
    let compared = fitted.iter().map(|(_, f)| f.variant.clone()).collect();
    let best = (0..fitted.len())
        .max_by(|&a, &b| {
            let (sa, sb) = (fitted[a].1.variant.score(), fitted[b].1.variant.score());
            sa.total_cmp(&sb).then(b.cmp(&a))
        })
        .context("no clustering variant")?;
    let (source, fitted) = fitted.swap_remove(best);
    Ok(Chosen {
        source,
        fitted,
        compared,
    })
}

/// One evaluated variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// `autoencoder` or `classifier`.
    pub encoder: ClusterEncoder,
    /// Whether features were L2-normalized (after whitening, when both).
    pub l2_normalize: bool,
    /// Whether features were PCA-whitened (to `dim` components).
    #[serde(default)]
    pub whiten: bool,
    /// Feature dimension.
    pub dim: usize,
    /// k-means on the training features, scored against the training labels.
    pub train: ClusterMetrics,
    /// Validation features assigned to the nearest centroid, scored against validation labels.
    pub validation: Option<ClusterMetrics>,
}

impl Variant {
    /// Selection score: mean of Hungarian accuracy and NMI, on validation when available.
    pub fn score(&self) -> f64 {
        let m = self.validation.as_ref().unwrap_or(&self.train);
        (m.hungarian_acc + m.nmi) / 2.0
    }
}

/// A clustering encoder ready for export.
#[derive(Debug)]
pub enum Source<'a> {
    /// The autoencoder's encoder.
    Autoencoder(&'a Encoder),
    /// The classifier's trunk.
    Classifier(Trunk<'a>),
    /// The semi-supervised classifier's trunk, for an `n x n` input.
    Semi(SemiTrunk<'a>, i64),
    /// A frozen EfficientNet-Lite backbone (the probe recipe's trunk), for an `n x n` input.
    Backbone(&'a EfficientNetLite, i64),
}

impl Source<'_> {
    /// Raw features `[n, d]` of `images`, and d.
    pub fn features(&self, images: &Tensor, device: Device) -> (Vec<f32>, usize) {
        evaluate::latents(self.module(), images, device, false)
    }

    /// The inference graph.
    pub fn ops(&self) -> Vec<Op> {
        match self {
            Source::Autoencoder(e) => e.ops(),
            Source::Classifier(t) => t.ops(),
            Source::Semi(t, n) => t.ops(*n, *n),
            Source::Backbone(b, n) => b.ops(*n, *n),
        }
    }

    /// Which encoder this is.
    pub fn kind(&self) -> ClusterEncoder {
        match self {
            Source::Autoencoder(_) => ClusterEncoder::Autoencoder,
            Source::Classifier(_) | Source::Semi(..) | Source::Backbone(..) => {
                ClusterEncoder::Classifier
            }
        }
    }

    /// Runs the encoder as a module (for parity checks).
    pub fn module(&self) -> &dyn Forward {
        match self {
            Source::Autoencoder(e) => *e,
            Source::Classifier(t) => t,
            Source::Semi(t, _) => t,
            Source::Backbone(b, _) => *b,
        }
    }
}

/// A fitted clustering of one variant.
#[derive(Debug)]
pub struct Fitted {
    /// The variant and its scores.
    pub variant: Variant,
    /// k-means on the training features.
    pub kmeans: KMeans,
    /// The training features.
    pub train_features: Vec<f32>,
    /// Nearest-centroid assignment of the validation features, if any.
    pub validation_assignment: Option<Vec<usize>>,
    /// The whitening fitted on the training features, for a whitened variant.
    pub whitening: Option<Whitening>,
}

/// One encoder's raw features of the training and (when given) validation images, computed
/// once and shared by every variant of that encoder.
#[derive(Debug)]
pub struct RawFeatures {
    /// Which encoder produced them.
    pub encoder: ClusterEncoder,
    /// Training features, row-major `[n, dim]`.
    pub train: Vec<f32>,
    /// Validation features, row-major `[m, dim]`.
    pub validation: Option<Vec<f32>>,
    /// Feature dimension.
    pub dim: usize,
}

impl RawFeatures {
    /// Runs `source` over the training and validation images.
    pub fn of(
        source: &Source<'_>,
        train: &Tensor,
        validation: Option<&Tensor>,
        device: Device,
    ) -> Self {
        let (train, dim) = source.features(train, device);
        Self {
            encoder: source.kind(),
            train,
            validation: validation.map(|v| source.features(v, device).0),
            dim,
        }
    }
}

/// Raw features whitened when `w` is given, then L2-normalized when asked; returns them with
/// their dimension.
fn transformed(raw: &[f32], dim: usize, w: Option<&Whitening>, l2: bool) -> (Vec<f32>, usize) {
    let (mut f, d) = match w {
        Some(w) => (w.apply(raw), w.components()),
        None => (raw.to_vec(), dim),
    };
    if l2 {
        for row in f.chunks_exact_mut(d) {
            onboard::pipeline::l2_normalize(row);
        }
    }
    (f, d)
}

/// Fits k-means for one encoder's features, whitening (`Some(components)`) and normalization,
/// and scores it against `train_truth` (and `validation_truth` when validation features exist).
pub fn fit_variant(
    raw: &RawFeatures,
    l2: bool,
    whiten: Option<usize>,
    train_truth: &[usize],
    validation_truth: Option<&[usize]>,
    km: &KMeansConfig,
) -> anyhow::Result<Fitted> {
    let whitening = match whiten {
        Some(r) => Some(Whitening::fit(&raw.train, raw.dim, r)?),
        None => None,
    };
    let (feats, dim) = transformed(&raw.train, raw.dim, whitening.as_ref(), l2);
    let kmeans = cluster::fit(&feats, dim, km)?;
    let train_m = evaluate::clustering(train_truth, &kmeans.assignment, km.k);
    let (validation_m, validation_assignment) = match (&raw.validation, validation_truth) {
        (Some(v), Some(truth)) => {
            let (vf, _) = transformed(v, raw.dim, whitening.as_ref(), l2);
            let assign: Vec<usize> = vf
                .chunks_exact(dim)
                .map(|p| cluster::nearest(p, &kmeans.centroids, dim).0)
                .collect();
            (
                Some(evaluate::clustering(truth, &assign, km.k)),
                Some(assign),
            )
        }
        _ => (None, None),
    };
    Ok(Fitted {
        variant: Variant {
            encoder: raw.encoder,
            l2_normalize: l2,
            whiten: whitening.is_some(),
            dim,
            train: train_m,
            validation: validation_m,
        },
        kmeans,
        train_features: feats,
        validation_assignment,
        whitening,
    })
}
