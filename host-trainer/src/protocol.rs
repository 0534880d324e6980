//! The development protocol that sees shift: fit on the train split (sols 3-180), evaluate on
//! validation in sol order, as the rover would meet it. For each frozen backbone and input side
//! it reports, per probe setting, top-1, macro-F1, balanced accuracy and per-class recall, with
//! the on-board class-prior adaptation off and on, and k-means clusters (raw, L2-normalized,
//! PCA-whitened, whitened then L2-normalized features) fixed and adapted on the stream by the
//! on-board sequential k-means. The temperature is fitted on training logits cross-fitted in 5
//! folds (round robin, or contiguous sol blocks when asked), reweighted to the prior the probe's
//! probabilities refer to, which is also where the adaptation starts
//! ([`probe::output_prior`]). Recipes are chosen by macro-F1
//! and balanced accuracy, never by validation top-1 alone. Features come from
//! [`crate::features`]' cache.

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
    /// Whitening components of the whitened clustering spaces compared (besides raw and L2).
    pub whiten: Vec<usize>,
    /// Cross-fit the temperature in 5 contiguous sol blocks instead of 5 round-robin folds.
    pub sol_blocked_temperature: bool,
    /// On-board adaptation settings used for the adapted figures.
    pub adaptation: Adaptation,
}

/// One probe setting's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRow {
    /// The setting.
    pub probe: ProbeConfig,
    /// Temperature fitted on 5-fold cross-fitted training logits, reweighted to the probe's
    /// output prior.
    pub temperature: f32,
    /// Validation in sol order, adaptation off.
    pub fixed: ClassificationMetrics,
    /// Validation in sol order, class prior adapted on the stream (causal).
    pub adapted: ClassificationMetrics,
}

/// One clustering space's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRow {
    /// The clustering space ([`Space::name`]: `raw`, `l2`, `white64`, `white64+l2`).
    pub space: String,
    /// Validation assigned to the training centroids.
    pub fixed: ClusterMetrics,
    /// Validation through on-board sequential k-means from those centroids, in sol order.
    pub adapted: ClusterMetrics,
}

/// Everything measured for one backbone and side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// A training recipe's figures on the protocol, for its model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeFigures {
    /// The protocol report file they were read from.
    pub source: String,
    /// Backbone name.
    pub backbone: String,
    /// Input side.
    pub side: u32,
    /// Training and validation images.
    pub images: [usize; 2],
    /// The probe row of the recipe's settings.
    pub probe: ProbeRow,
    /// The cluster row of the recipe's clustering space, when the report has it.
    pub clusters: Option<ClusterRow>,
}

/// The figures of the probe recipe `recipe` at input `side` with clustering `space` from the
/// protocol report file `path` (the JSON `host-trainer protocol --out` writes). Errors name the
/// file and the protocol command that would produce the missing row.
pub fn recipe_figures(
    path: &std::path::Path,
    recipe: &crate::probe_recipe::ProbeRecipe,
    side: u32,
    space: Space,
) -> anyhow::Result<RecipeFigures> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the protocol report", path.display()))?;
    let reports: Vec<FeatureReport> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a protocol report (written by `host-trainer protocol --out`)",
            path.display()
        )
    })?;
    let name = recipe.backbone.name();
    let hit = reports.iter().find_map(|r| {
        let p = r.probes.iter().find(|p| p.probe == recipe.probe)?;
        (r.backbone == name && r.side == side).then_some((r, p))
    });
    let (r, p) = hit.with_context(|| {
        format!(
            "{}: no row for {name} at side {side} with the recipe's probe settings {:?}; run `host-trainer protocol --backbone {} --side {side} --l2 {} --logit-adjust {} --out {}`",
            path.display(),
            recipe.probe,
            name.trim_start_matches("efficientnet-"),
            recipe.probe.l2,
            recipe.probe.logit_adjust,
            path.display()
        )
    })?;
    Ok(RecipeFigures {
        source: path.display().to_string(),
        backbone: r.backbone.clone(),
        side,
        images: r.images,
        probe: p.clone(),
        clusters: r.clusters.iter().find(|c| c.space == space.name()).cloned(),
    })
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
            probes.push(probe_row(
                &train,
                &val,
                classes,
                cfg,
                &opts.adaptation,
                opts.sol_blocked_temperature,
            )?);
        }
        let mut clusters = Vec::new();
        let whitened = opts.whiten.iter().map(|&c| Some(c));
        for whiten in std::iter::once(None).chain(whitened) {
            for l2 in [false, true] {
                let space = Space { whiten, l2 };
                clusters.push(cluster_row(
                    &train,
                    &val,
                    space,
                    &opts.kmeans,
                    &opts.adaptation,
                )?);
            }
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
    sol_blocks: bool,
) -> anyhow::Result<ProbeRow> {
    let c = classes.len();
    let x = features::tensor(train);
    let folds = if sol_blocks {
        probe::blocked_folds(&train.files, 5)
    } else {
        probe::round_robin_folds(train.len(), 5)
    };
    let fit = probe::cross_fitted_temperature(&x, &train.labels, c, cfg, &folds)?;
    let (temperature, prior) = (fit.temperature.unwrap_or(1.0), fit.prior);
    let p = Probe::fit(&x, &train.labels, c, cfg)?;
    let logits = crate::model::to_vec(&p.logits(&features::tensor(val)));
    let fixed = evaluate::classification(&val.labels, &argmax_rows(&logits, c), classes);
    let mut adapter: PriorAdapter<PRIOR_WINDOW_CAPACITY> = PriorAdapter::new(
        &prior,
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

/// A clustering space: optionally PCA-whitened (fitted on the training features) to
/// `whiten` components, then optionally L2-normalized per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Whitening components (`None`: the raw features).
    pub whiten: Option<usize>,
    /// L2-normalize each row (after whitening).
    pub l2: bool,
}

impl Space {
    /// `raw`, `l2`, `white64`, `white64+l2`.
    pub fn name(&self) -> String {
        let base = self
            .whiten
            .map_or("raw".to_string(), |c| format!("white{c}"));
        match (self.whiten, self.l2) {
            (None, true) => "l2".into(),
            (_, true) => format!("{base}+l2"),
            _ => base,
        }
    }
}

fn l2_rows(v: &mut [f32], dim: usize) {
    for row in v.chunks_exact_mut(dim) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= n);
    }
}

/// Training and validation features in `space`, and their dimension.
fn project(
    train: &FeatureSet,
    val: &FeatureSet,
    space: Space,
) -> anyhow::Result<(Vec<f32>, Vec<f32>, usize)> {
    let (mut tr, mut va, dim) = match space.whiten {
        None => (train.features.clone(), val.features.clone(), train.dim),
        Some(c) => {
            let w = crate::whiten::Whitening::fit(&train.features, train.dim, c)?;
            (
                w.apply(&train.features),
                w.apply(&val.features),
                w.components(),
            )
        }
    };
    if space.l2 {
        l2_rows(&mut tr, dim);
        l2_rows(&mut va, dim);
    }
    Ok((tr, va, dim))
}

fn cluster_row(
    train: &FeatureSet,
    val: &FeatureSet,
    space: Space,
    km_cfg: &KMeansConfig,
    adaptation: &Adaptation,
) -> anyhow::Result<ClusterRow> {
    let (tr, va, dim) = project(train, val, space)?;
    let km = cluster::fit(&tr, dim, km_cfg)?;
    let stats = cluster::distance_stats(&tr, &km)
        .iter()
        .map(|&(_, mean, std, _)| ClusterStats {
            mean,
            std: std.max(1e-6),
        })
        .collect();
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
        space: space.name(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe_recipe::ProbeRecipe;

    fn report(side: u32, probe: ProbeConfig) -> FeatureReport {
        let classes = ["a".to_string(), "b".to_string()];
        let m = evaluate::classification(&[0, 1, 1], &[0, 1, 0], &classes);
        let c = evaluate::clustering(&[0, 1, 1], &[0, 1, 1], 2);
        FeatureReport {
            backbone: "efficientnet-lite0".into(),
            side,
            images: [10, 3],
            probes: vec![ProbeRow {
                probe,
                temperature: 1.0,
                fixed: m.clone(),
                adapted: m,
            }],
            clusters: vec![ClusterRow {
                space: "raw".into(),
                fixed: c.clone(),
                adapted: c,
            }],
        }
    }

    #[test]
    fn a_recipe_finds_its_row_and_a_missing_row_names_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let recipe = ProbeRecipe::default();
        let reports = vec![report(96, recipe.probe), report(128, recipe.probe)];
        std::fs::write(&path, serde_json::to_string(&reports).unwrap()).unwrap();
        let raw = Space {
            whiten: None,
            l2: false,
        };
        let f = recipe_figures(&path, &recipe, 128, raw).unwrap();
        assert_eq!((f.side, f.images), (128, [10, 3]));
        assert_eq!(f.clusters.unwrap().space, "raw");
        let l2 = Space {
            whiten: None,
            l2: true,
        };
        assert!(recipe_figures(&path, &recipe, 128, l2)
            .unwrap()
            .clusters
            .is_none());
        let e = recipe_figures(&path, &recipe, 160, raw)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--side 160") && e.contains("p.json"), "{e}");
        std::fs::write(&path, "{").unwrap();
        let e = recipe_figures(&path, &recipe, 128, raw)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a protocol report"), "{e}");
    }

    #[test]
    fn space_names() {
        let n = |whiten, l2| Space { whiten, l2 }.name();
        assert_eq!(n(None, false), "raw");
        assert_eq!(n(None, true), "l2");
        assert_eq!(n(Some(64), false), "white64");
        assert_eq!(n(Some(32), true), "white32+l2");
    }
}
