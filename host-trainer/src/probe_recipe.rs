//! The probe recipe: an ImageNet EfficientNet-Lite backbone kept frozen (BatchNorm in eval
//! mode, no gradient) with a linear probe on its pooled features ([`crate::probe`]). It keeps
//! everything pretraining knows, which the development protocol (`host-trainer protocol`)
//! measured to hold up better across sols than fine-tuning on the training period; fitting it
//! costs one pass of the backbone over the training images. Exported as the backbone's graph
//! (image `[1, 3, n, n]` -> pooled features `[1, 1280]`) and the probe folded into one Gemm
//! (features -> class logits).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::effnet::{self, EfficientNetLite, Lite};
use crate::export::Op;
use crate::model::Forward;
use crate::probe::{Probe, ProbeConfig};
use crate::temperature::CrossFitted;
use crate::train::History;

/// The `probe` section of the training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecipe {
    /// Frozen backbone.
    pub backbone: Lite,
    /// How the probe is fitted (L2, logit adjustment, steps, learning rate, its own seed).
    #[serde(flatten)]
    pub probe: ProbeConfig,
}

impl Default for ProbeRecipe {
    fn default() -> Self {
        Self {
            backbone: Lite::Lite0,
            probe: ProbeConfig {
                l2: 1e-2,
                logit_adjust: 1.0,
                ..ProbeConfig::default()
            },
        }
    }
}

impl ProbeRecipe {
    /// Checks the settings.
    pub fn validate(&self) -> anyhow::Result<()> {
        let p = &self.probe;
        anyhow::ensure!(
            p.l2.is_finite() && p.l2 >= 0.0,
            "probe.l2 {} must be finite and >= 0",
            p.l2
        );
        anyhow::ensure!(
            p.logit_adjust.is_finite() && (0.0..=2.0).contains(&p.logit_adjust),
            "probe.logit_adjust {} must be in 0..=2",
            p.logit_adjust
        );
        anyhow::ensure!(
            p.steps > 0 && p.lr.is_finite() && p.lr > 0.0,
            "probe.steps and probe.lr must be positive"
        );
        Ok(())
    }
}

/// The frozen backbone and its fitted probe.
#[derive(Debug)]
pub struct ProbeNet {
    /// Owns the backbone's (frozen) variables.
    _vs: nn::VarStore,
    backbone: EfficientNetLite,
    probe: Probe,
}

impl ProbeNet {
    /// Loads the backbone's ImageNet weights from `weights` (a file or the weights folder),
    /// runs it over `images: [n, 3, side, side]` and fits the probe on the pooled features
    /// with `labels` (`n` class ids below `classes`); fits the softmax temperature on the
    /// training logits cross-fitted in 5 round-robin folds, reweighted to the probe's output
    /// prior, as the development protocol does (sol-blocked folds gave a softer temperature and
    /// lower adapted figures there: docs/RESULTS.md). Returns the network, what the fit did,
    /// the temperature (when it could be fitted) and the sha256 of the weight file.
    pub fn fit(
        recipe: &ProbeRecipe,
        weights: &Path,
        images: &Tensor,
        labels: &[usize],
        classes: usize,
        device: Device,
    ) -> anyhow::Result<(Self, History, Option<CrossFitted>, String)> {
        let started = std::time::Instant::now();
        let vs = nn::VarStore::new(device);
        let backbone = EfficientNetLite::new(&vs.root(), recipe.backbone, 0, false);
        let file = effnet::weights_for(recipe.backbone, weights);
        let set = effnet::load_pretrained(&vs, "", &file, &["_fc."])?;
        eprintln!("probe: {set} pretrained tensors from {}", file.display());
        let sha = onboard::bundle::sha256_file(&file)?;
        let features = embed_with_progress(|x| backbone.embed(x, false), images, device);
        let probe = Probe::fit(&features, labels, classes, &recipe.probe)?;
        let temperature = cross_fitted(&features, labels, classes, &recipe.probe)?;
        let history = History {
            epoch_loss: Vec::new(),
            steps: recipe.probe.steps,
            seconds: started.elapsed().as_secs_f64(),
            seconds_per_epoch: None,
        };
        let net = Self {
            _vs: vs,
            backbone,
            probe,
        };
        Ok((net, history, temperature, sha))
    }

    /// The frozen backbone (images -> pooled features `[b, 1280]`).
    pub fn trunk(&self) -> &EfficientNetLite {
        &self.backbone
    }

    /// The probe as a module on pooled features (`[b, 1280]` -> logits `[b, classes]`).
    pub fn head(&self) -> &Probe {
        &self.probe
    }

    /// The probe's graph: one Gemm on the pooled features.
    pub fn head_ops(&self) -> Vec<Op> {
        let (weight, bias) = self.probe.folded();
        let out_dim = bias.len() as i64;
        vec![Op::Gemm {
            in_dim: weight.len() as i64 / out_dim.max(1),
            out_dim,
            weight,
            bias,
        }]
    }

    /// The whole classifier's graph for an `n x n` input.
    pub fn ops(&self, n: i64) -> Vec<Op> {
        let mut ops = self.backbone.ops(n, n);
        ops.extend(self.head_ops());
        ops
    }
}

/// Folds of the temperature's cross-fitting.
const TEMPERATURE_FOLDS: usize = 5;

/// The temperature on cross-fitted training logits (see [`ProbeNet::fit`]); `None` with too
/// few images for the folds.
fn cross_fitted(
    features: &Tensor,
    labels: &[usize],
    classes: usize,
    cfg: &ProbeConfig,
) -> anyhow::Result<Option<CrossFitted>> {
    if labels.len() < 4 * TEMPERATURE_FOLDS {
        return Ok(None);
    }
    let folds = crate::probe::round_robin_folds(labels.len(), TEMPERATURE_FOLDS);
    let fit = crate::probe::cross_fitted_temperature(features, labels, classes, cfg, &folds)?;
    let (Some(t), Some(nll)) = (fit.temperature, fit.nll) else {
        return Ok(None);
    };
    Ok(Some(CrossFitted {
        name: format!("the training images' logits cross-fitted in {TEMPERATURE_FOLDS} folds"),
        temperature: t,
        images: labels.len(),
        nll,
    }))
}

/// Pooled features `[n, 1280]` (on the CPU) of `images: [n, 3, side, side]`, in batches, with
/// a progress bar on stderr.
/// Pooled features `[n, F]` (on the CPU) of `images: [n, 3, side, side]` through `embed`
/// (a frozen backbone in eval mode), in evaluation batches under `no_grad`, with progress.
pub(crate) fn embed_with_progress(
    embed: impl Fn(&Tensor) -> Tensor,
    images: &Tensor,
    device: Device,
) -> Tensor {
    let n = images.size()[0];
    let bar = crate::progress::bar(n as u64, "frozen features");
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let len = crate::evaluate::EVAL_BATCH.min(n - start);
        let x = images.narrow(0, start, len).to_device(device);
        parts.push(tch::no_grad(|| embed(&x)).to_device(Device::Cpu));
        bar.inc(len as u64);
        start += len;
    }
    bar.finish_and_clear();
    Tensor::cat(&parts, 0)
}

impl Forward for ProbeNet {
    fn forward(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| self.probe.logits(&self.backbone.embed(xs, false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;

    #[test]
    fn bad_settings_and_two_recipes_are_refused() {
        let ok = TrainConfig {
            input_size: 128,
            probe: Some(ProbeRecipe::default()),
            ..TrainConfig::default()
        };
        ok.validate().unwrap();
        let with = |probe: ProbeConfig| TrainConfig {
            probe: Some(ProbeRecipe {
                probe,
                ..ProbeRecipe::default()
            }),
            ..ok.clone()
        };
        let base = ProbeRecipe::default().probe;
        for (bad, what) in [
            (ProbeConfig { l2: -1.0, ..base }, "probe.l2"),
            (
                ProbeConfig {
                    l2: f64::NAN,
                    ..base
                },
                "probe.l2",
            ),
            (
                ProbeConfig {
                    logit_adjust: 3.0,
                    ..base
                },
                "logit_adjust",
            ),
            (ProbeConfig { steps: 0, ..base }, "probe.steps"),
        ] {
            let e = with(bad).validate().unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
        let both = TrainConfig {
            semi: Some(crate::semi::SemiConfig::default()),
            ..ok.clone()
        };
        assert!(both.validate().unwrap_err().to_string().contains("both"));
        let odd = TrainConfig {
            input_size: 112,
            ..ok
        };
        assert!(odd.validate().unwrap_err().to_string().contains("32"));
    }

    #[test]
    fn the_config_section_round_trips_with_flat_probe_fields() {
        let r = ProbeRecipe::default();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["backbone"], "efficientnet-lite0");
        assert_eq!(v["logit_adjust"], 1.0);
        let back: ProbeRecipe = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
