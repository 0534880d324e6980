//! The development protocol that sees shift: fit on the train split (sols 3-180), evaluate on
//! validation in sol order, as the rover would meet it. For each frozen backbone and input side
//! it reports, per probe setting, top-1, macro-F1, balanced accuracy and per-class recall, with
//! the on-board class-prior adaptation off and on (temperature fitted on cross-fitted training
//! logits), and k-means clusters (raw and L2 features) fixed and adapted on the stream by the
//! on-board sequential k-means. Recipes are chosen by macro-F1 and balanced accuracy, never by
//! validation top-1 alone. Features come from [`crate::features`]' cache.

use std::path::PathBuf;

use onboard::bundle::{Adaptation, PRIOR_WINDOW_CAPACITY};
use onboard::decide::{ClusterStats, PriorAdapter, PriorConfig};
use serde::{Deserialize, Serialize};

use crate::cluster::{self, KMeansConfig};
use crate::evaluate::{self, ClassificationMetrics, ClusterMetrics};
use crate::features::{self, FeatureSet, FeatureSpec};
use crate::probe::{self, Probe, ProbeConfig};

/// What `host-trainer protocol` runs.
#[derive(Debug, Clone)]
pub struct ProtocolOptions {
    /// MSL dataset root.
    pub data: PathBuf,
    /// Split the probes and centroids are fitted on.
    pub train_split: String,
    /// Split evaluated in sol order.
    pub val_split: String,
    /// Backbones x sides, each with the weights and cache folders.
    pub features: Vec<FeatureSpec>,
    /// Probe settings compared.
    pub probes: Vec<ProbeConfig>,
    /// Clusters and restarts of k-means.
    pub kmeans: KMeansConfig,
    /// On-board adaptation settings used for the adapted figures.
    pub adaptation: Adaptation,
}

/// One probe setting's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeRow {
    /// The setting.
    pub probe: ProbeConfig,
    /// Temperature fitted on 5-fold cross-fitted training logits.
    pub temperature: f32,
    /// Validation in sol order, adaptation off.
    pub fixed: ClassificationMetrics,
    /// Validation in sol order, class prior adapted on the stream (causal).
    pub adapted: ClassificationMetrics,
}

/// One clustering space's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRow {
    /// `raw` or `l2`.
    pub space: String,
    /// Validation assigned to the training centroids.
    pub fixed: ClusterMetrics,
    /// Validation through on-board sequential k-means from those centroids, in sol order.
    pub adapted: ClusterMetrics,
}

/// Everything measured for one backbone and side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureReport {
    /// Backbone name.
    pub backbone: String,
    /// Input side.
    pub side: u32,
    /// Training and validation rows.
    pub images: [usize; 2],
    /// Per probe setting.
    pub probes: Vec<ProbeRow>,
    /// Per clustering space.
    pub clusters: Vec<ClusterRow>,
}

/// Runs the protocol over every feature spec.
pub fn run(opts: &ProtocolOptions, classes: &[String]) -> anyhow::Result<Vec<FeatureReport>> {
    let mut out = Vec::new();
    for spec in &opts.features {
        let device = tch::Device::Cpu;
        let train = features::split_features(spec, &opts.data, &opts.train_split, device)?;
        let val =
            features::split_features(spec, &opts.data, &opts.val_split, device)?.in_sol_order();
        let mut probes = Vec::new();
        for cfg in &opts.probes {
            probes.push(probe_row(&train, &val, classes, cfg, &opts.adaptation)?);
        }
        let mut clusters = Vec::new();
        for l2 in [false, true] {
            clusters.push(cluster_row(
                &train,
                &val,
                l2,
                &opts.kmeans,
                &opts.adaptation,
            )?);
        }
        out.push(FeatureReport {
            backbone: spec.lite.name().into(),
            side: spec.side,
            images: [train.len(), val.len()],
            probes,
            clusters,
        });
    }
    Ok(out)
}

/// Row-wise argmax.
fn argmax_rows(values: &[f32], classes: usize) -> Vec<usize> {
    values.chunks_exact(classes).map(top).collect()
}

/// Index of the largest finite value (0 when none).
fn top(v: &[f32]) -> usize {
    onboard::decide::argmax(v).map_or(0, |(i, _)| i)
}

fn probe_row(
    train: &FeatureSet,
    val: &FeatureSet,
    classes: &[String],
    cfg: &ProbeConfig,
    adaptation: &Adaptation,
) -> anyhow::Result<ProbeRow> {
    let c = classes.len();
    let x = features::tensor(train);
    let held = probe::cross_fitted_logits(&x, &train.labels, c, cfg, 5)?;
    let temperature = onboard::bundle::fit_temperature(&held, c, &train.labels).unwrap_or(1.0);
    let p = Probe::fit(&x, &train.labels, c, cfg)?;
    let logits = crate::model::to_vec(&p.logits(&features::tensor(val)));
    let fixed = evaluate::classification(&val.labels, &argmax_rows(&logits, c), classes);
    let mut adapter: PriorAdapter<PRIOR_WINDOW_CAPACITY> = PriorAdapter::new(
        &onboard::bundle::class_prior(&train.labels, c),
        PriorConfig {
            window: adaptation.prior_window,
            max_iterations: adaptation.prior_max_iterations,
            tolerance: adaptation.prior_tolerance,
            floor: adaptation.prior_floor,
        },
    )?;
    let mut pred = Vec::with_capacity(val.len());
    for row in logits.chunks_exact(c) {
        // The rover's own softmax: logits divided by the temperature, then the decision core's.
        let mut probs: Vec<f32> = row.iter().map(|v| v / temperature).collect();
        onboard::decide::softmax_argmax(&mut probs)
            .ok_or_else(|| anyhow::anyhow!("probe: non-finite validation logits"))?;
        adapter.observe(&mut probs)?;
        pred.push(top(&probs));
    }
    let adapted = evaluate::classification(&val.labels, &pred, classes);
    Ok(ProbeRow {
        probe: *cfg,
        temperature,
        fixed,
        adapted,
    })
}

/// Features L2-normalized per row when `l2`.
fn space(set: &FeatureSet, l2: bool) -> Vec<f32> {
    if !l2 {
        return set.features.clone();
    }
    let mut out = set.features.clone();
    for row in out.chunks_exact_mut(set.dim) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
    out
}

fn cluster_row(
    train: &FeatureSet,
    val: &FeatureSet,
    l2: bool,
    km_cfg: &KMeansConfig,
    adaptation: &Adaptation,
) -> anyhow::Result<ClusterRow> {
    let dim = train.dim;
    let tr = space(train, l2);
    let km = cluster::fit(&tr, dim, km_cfg)?;
    let stats = cluster::distance_stats(&tr, &km)
        .iter()
        .map(|&(_, mean, std, _)| ClusterStats {
            mean,
            std: std.max(1e-6),
        })
        .collect();
    let va = space(val, l2);
    let fixed: Vec<usize> = va
        .chunks_exact(dim)
        .map(|p| cluster::nearest(p, &km.centroids, dim).0)
        .collect();
    let mut adapter =
        onboard::adapt::StreamAdapter::from_parts(None, adaptation, km.centroids.clone(), stats)?;
    let mut adapted = Vec::with_capacity(val.len());
    for p in va.chunks_exact(dim) {
        adapted.push(adapter.arrive(p)?.cluster);
    }
    Ok(ClusterRow {
        space: if l2 { "l2" } else { "raw" }.into(),
        fixed: evaluate::clustering(&val.labels, &fixed, km_cfg.k),
        adapted: evaluate::clustering(&val.labels, &adapted, km_cfg.k),
    })
}

/// The report as markdown tables.
pub fn markdown(reports: &[FeatureReport]) -> String {
    let mut s = String::from(
        "| backbone | side | l2 | logit adj. | T | top-1 | macro-F1 | balanced | adapted top-1 | adapted macro-F1 | adapted balanced |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        for p in &r.probes {
            s += &format!(
                "| {} | {} | {:.0e} | {} | {:.3} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
                r.backbone,
                r.side,
                p.probe.l2,
                p.probe.logit_adjust,
                p.temperature,
                p.fixed.top1,
                p.fixed.macro_f1,
                p.fixed.balanced_accuracy,
                p.adapted.top1,
                p.adapted.macro_f1,
                p.adapted.balanced_accuracy
            );
        }
    }
    s += "\n| backbone | side | space | Hungarian | majority | NMI | adapted Hungarian | adapted majority | adapted NMI |\n|---|---|---|---|---|---|---|---|---|\n";
    for r in reports {
        for c in &r.clusters {
            s += &format!(
                "| {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
                r.backbone,
                r.side,
                c.space,
                c.fixed.hungarian_acc,
                c.fixed.majority_acc,
                c.fixed.nmi,
                c.adapted.hungarian_acc,
                c.adapted.majority_acc,
                c.adapted.nmi
            );
        }
    }
    s
}
