//! The semi-supervised contrastive classifier (Wang et al., Semi-supervised learning for Mars imagery classification): a backbone (ImageNet
//! EfficientNet-Lite0 or a small CNN from scratch) with a linear classification head and two
//! 2-layer MLP projection heads, `H_s` (labeled, `L_s`) and `H_u` (unlabeled, `L_u`).
//! Variables live in three optimizer groups: [`GROUP_HEAD`], [`GROUP_BACKBONE`],
//! [`GROUP_PROJECTION`].

use std::path::Path;

use anyhow::Context;

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::augment::{AugmentConfig, StrongAugment};
use crate::effnet::{self, EfficientNetLite, Lite};
use crate::export::Op;
use crate::model::{Classifier, Forward};
use crate::probe::ProbeConfig;

/// Optimizer group of the classification head.
pub const GROUP_HEAD: usize = 0;
/// Optimizer group of the backbone.
pub const GROUP_BACKBONE: usize = 1;
/// Optimizer group of the projection heads.
pub const GROUP_PROJECTION: usize = 2;

/// Feature extractor under the heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backbone {
    /// EfficientNet-Lite0, initialized from ImageNet weights.
    EfficientnetLite0,
    /// EfficientNet-Lite1, initialized from ImageNet weights.
    EfficientnetLite1,
    /// EfficientNet-Lite2, initialized from ImageNet weights.
    EfficientnetLite2,
    /// The small conv-BN-ReLU CNN, from scratch.
    SmallCnn,
}

impl Backbone {
    /// The EfficientNet-Lite variant, `None` for the small CNN.
    pub fn lite(self) -> Option<Lite> {
        match self {
            Backbone::EfficientnetLite0 => Some(Lite::Lite0),
            Backbone::EfficientnetLite1 => Some(Lite::Lite1),
            Backbone::EfficientnetLite2 => Some(Lite::Lite2),
            Backbone::SmallCnn => None,
        }
    }
}

/// Which contrastive loss the labeled branch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contrastive {
    /// `L_s`: one sample per class, same-class pairs never negatives.
    InterClass,
    /// The paper's Eq. 1 on random labeled batches (plain SimCLR-style ablation).
    SampleWise,
    /// No labeled contrastive branch.
    None,
}

/// Configuration of the semi-supervised classifier; saved beside its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SemiConfig {
    /// Feature extractor.
    pub backbone: Backbone,
    /// Channels of the small CNN's stride-2 blocks (for `small-cnn`).
    pub small_cnn_channels: Vec<i64>,
    /// EfficientNet blocks (0..=16) frozen with the stem: no gradients, BatchNorm in eval mode.
    pub frozen_blocks: usize,
    /// Whether the trainable EfficientNet blocks' BatchNorm uses batch statistics.
    pub bn_train: bool,
    /// Passes of `steps_per_epoch` steps.
    pub epochs: usize,
    /// Steps per epoch; `None` = labeled images / `batch_cls`.
    pub steps_per_epoch: Option<usize>,
    /// Labeled images per step for `L_cls`.
    pub batch_cls: usize,
    /// Labeled images per step for the contrastive branch (`inter-class` takes one per class).
    pub batch_contrastive: usize,
    /// Unlabeled images per step for `L_u` (two views each).
    pub batch_unlabeled: usize,
    /// Labeled contrastive loss.
    pub contrastive: Contrastive,
    /// Weight of the labeled contrastive loss.
    pub lambda_s: f64,
    /// Weight of `L_u` (0 disables the unlabeled branch).
    pub lambda_u: f64,
    /// Temperature of the contrastive losses.
    pub tau: f64,
    /// Adam learning rate of the classification head.
    pub lr_head: f64,
    /// Adam learning rate of the backbone.
    pub lr_backbone: f64,
    /// Adam learning rate of the projection heads.
    pub lr_projection: f64,
    /// Epochs after which every learning rate is multiplied by `lr_gamma`.
    pub lr_milestones: Vec<usize>,
    /// Step-schedule factor.
    pub lr_gamma: f64,
    /// Hidden width of the projection MLPs.
    pub projection_hidden: i64,
    /// Output width of the projection MLPs.
    pub projection_dim: i64,
    /// Dropout before the classification head (training only).
    pub dropout: f64,
    /// Augmentation of the `L_cls` batch.
    pub weak_augment: AugmentConfig,
    /// Augmentation of the contrastive views.
    pub strong_augment: StrongAugment,
    /// Logit adjustment of `L_cls` (0 = plain cross-entropy): trains on
    /// `logits + logit_adjust * log(training prior)` and predicts without it, as the probe
    /// does ([`crate::probe`]), so the head does not bake the training prior in.
    #[serde(default)]
    pub logit_adjust: f64,
    /// LP-FT: before fine-tuning, fit a linear probe on the pretrained backbone's frozen
    /// features and start the head from it (`None`: the head starts at random).
    #[serde(default)]
    pub probe_init: Option<ProbeConfig>,
    /// Decay of an exponential moving average of the trainable weights, updated after every
    /// step; the average replaces the weights when training ends (`None`: no averaging).
    #[serde(default)]
    pub ema_decay: Option<f64>,
}

impl Default for SemiConfig {
    /// The paper's recipe on EfficientNet-Lite0: Adam, head 1e-3, backbone and projections
    /// 1e-6, 30 epochs with x0.1 at 20 and 25, batches 16 / 24 / 16, tau 0.2.
    fn default() -> Self {
        Self {
            backbone: Backbone::EfficientnetLite0,
            small_cnn_channels: vec![32, 64, 128, 128],
            frozen_blocks: 0,
            bn_train: false,
            epochs: 30,
            steps_per_epoch: None,
            batch_cls: 16,
            batch_contrastive: 24,
            batch_unlabeled: 16,
            contrastive: Contrastive::InterClass,
            lambda_s: 1.0,
            lambda_u: 0.2,
            tau: 0.2,
            lr_head: 1e-3,
            lr_backbone: 1e-6,
            lr_projection: 1e-6,
            lr_milestones: vec![20, 25],
            lr_gamma: 0.1,
            projection_hidden: 512,
            projection_dim: 128,
            dropout: 0.2,
            weak_augment: AugmentConfig::default(),
            strong_augment: StrongAugment::default(),
            logit_adjust: 0.0,
            probe_init: None,
            ema_decay: None,
        }
    }
}

impl SemiConfig {
    /// Learning-rate multiplier during `epoch` (0-based).
    pub fn lr_factor(&self, epoch: usize) -> f64 {
        let passed = self.lr_milestones.iter().filter(|&&m| epoch >= m).count();
        self.lr_gamma.powi(passed as i32)
    }

    /// Checks the values training relies on.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.batch_cls > 0 && self.batch_contrastive > 1 && self.batch_unlabeled > 0,
            "batch sizes must be positive (contrastive batch at least 2)"
        );
        anyhow::ensure!(self.tau > 0.0, "tau must be positive");
        anyhow::ensure!(
            [self.lr_head, self.lr_backbone, self.lr_projection]
                .iter()
                .all(|&l| l >= 0.0 && l.is_finite()),
            "learning rates must be finite and >= 0"
        );
        anyhow::ensure!(
            self.projection_hidden > 0 && self.projection_dim > 0,
            "projection sizes must be positive"
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&self.dropout),
            "dropout must be in [0, 1)"
        );
        anyhow::ensure!(
            self.logit_adjust.is_finite() && (0.0..=2.0).contains(&self.logit_adjust),
            "semi.logit_adjust {} must be in 0..=2",
            self.logit_adjust
        );
        if let Some(d) = self.ema_decay {
            anyhow::ensure!(
                d.is_finite() && d > 0.0 && d < 1.0,
                "semi.ema_decay {d} must be in (0, 1)"
            );
        }
        if let Some(p) = &self.probe_init {
            anyhow::ensure!(
                self.backbone.lite().is_some(),
                "semi.probe_init needs a pretrained backbone (efficientnet-lite0/1/2), not {:?}",
                self.backbone
            );
            anyhow::ensure!(
                p.l2.is_finite() && p.l2 >= 0.0 && p.steps > 0 && p.lr > 0.0 && p.lr.is_finite(),
                "semi.probe_init: l2 must be >= 0, steps and lr positive"
            );
            anyhow::ensure!(
                p.logit_adjust.is_finite() && (0.0..=2.0).contains(&p.logit_adjust),
                "semi.probe_init.logit_adjust {} must be in 0..=2",
                p.logit_adjust
            );
        }
        let blocks = self.backbone.lite().map_or(0, Lite::blocks);
        anyhow::ensure!(
            self.backbone.lite().is_none() || self.frozen_blocks <= blocks,
            "frozen_blocks must be at most {blocks} for {:?}",
            self.backbone
        );
        Ok(())
    }
}

/// 2-layer MLP `in -> hidden -> ReLU -> out`.
#[derive(Debug)]
struct Mlp {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Mlp {
    fn new(p: &nn::Path, din: i64, hidden: i64, dout: i64) -> Self {
        Self {
            fc1: nn::linear(p / "fc1", din, hidden, Default::default()),
            fc2: nn::linear(p / "fc2", hidden, dout, Default::default()),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.apply(&self.fc1).relu().apply(&self.fc2)
    }
}

#[derive(Debug)]
enum Body {
    Effnet {
        net: Box<EfficientNetLite>,
        head: nn::Linear,
    },
    Cnn(Classifier),
}

/// Backbone, classification head and projection heads.
#[derive(Debug)]
pub struct SemiNet {
    body: Body,
    hs: Mlp,
    hu: Mlp,
    dropout: f64,
}

impl SemiNet {
    /// Builds the network under `vs`'s root: `backbone/` (EfficientNet names below it) and
    /// `head/` for EfficientNet, `classifier/` for the small CNN, `proj_s/`, `proj_u/`.
    pub fn new(vs: &nn::VarStore, cfg: &SemiConfig, classes: i64) -> Self {
        let root = vs.root();
        let (body, dim) = match cfg.backbone.lite() {
            Some(lite) => {
                let bp = root.set_group(GROUP_BACKBONE) / "backbone";
                let net = EfficientNetLite::new(&bp, lite, cfg.frozen_blocks, cfg.bn_train);
                let hp = root.set_group(GROUP_HEAD) / "head";
                let head = nn::linear(hp, effnet::FEATURES, classes, Default::default());
                (
                    Body::Effnet {
                        net: Box::new(net),
                        head,
                    },
                    effnet::FEATURES,
                )
            }
            None => {
                let cp = root.set_group(GROUP_BACKBONE) / "classifier";
                let net = Classifier::new(&cp, &cfg.small_cnn_channels, classes);
                let dim = *cfg.small_cnn_channels.last().unwrap_or(&1);
                (Body::Cnn(net), dim)
            }
        };
        let pp = root.set_group(GROUP_PROJECTION);
        let (hid, out) = (cfg.projection_hidden, cfg.projection_dim);
        Self {
            body,
            hs: Mlp::new(&(&pp / "proj_s"), dim, hid, out),
            hu: Mlp::new(&(&pp / "proj_u"), dim, hid, out),
            dropout: cfg.dropout,
        }
    }

    /// Sets the classification head of an EfficientNet body to `weight: [classes, F]`,
    /// `bias: [classes]` (LP-FT starts it from a fitted probe).
    pub fn set_head(&self, weight: &Tensor, bias: &Tensor) -> anyhow::Result<()> {
        let Body::Effnet { head, .. } = &self.body else {
            anyhow::bail!("only an EfficientNet body's head can be set from a probe");
        };
        let bs = head.bs.as_ref().context("the head has no bias")?;
        anyhow::ensure!(
            head.ws.size() == weight.size() && bs.size() == bias.size(),
            "head shape {:?} + {:?}, probe {:?} + {:?}",
            head.ws.size(),
            bs.size(),
            weight.size(),
            bias.size()
        );
        tch::no_grad(|| {
            head.ws.shallow_clone().copy_(weight);
            bs.shallow_clone().copy_(bias);
        });
        Ok(())
    }

    /// Pooled backbone features `[b, F]`.
    pub fn embed(&self, xs: &Tensor, train: bool) -> Tensor {
        match &self.body {
            Body::Effnet { net, .. } => net.embed(xs, train),
            Body::Cnn(c) => c.embed(xs, train),
        }
    }

    /// Class logits `[b, classes]` from pooled features.
    pub fn logits(&self, features: &Tensor, train: bool) -> Tensor {
        let f = features.dropout(self.dropout, train);
        match &self.body {
            Body::Effnet { head, .. } => f.apply(head),
            Body::Cnn(c) => c.head_logits(&f),
        }
    }

    /// `H_s` projection `[b, projection_dim]`.
    pub fn project_s(&self, features: &Tensor) -> Tensor {
        self.hs.forward(features)
    }

    /// `H_u` projection `[b, projection_dim]`.
    pub fn project_u(&self, features: &Tensor) -> Tensor {
        self.hu.forward(features)
    }

    /// Inference graph image -> logits for an `h x w` input (BatchNorm folded).
    pub fn ops(&self, h: i64, w: i64) -> Vec<Op> {
        match &self.body {
            Body::Effnet { net, head } => {
                let mut ops = net.ops(h, w);
                ops.push(crate::model::linear_op(head));
                ops
            }
            Body::Cnn(c) => c.ops(),
        }
    }

    /// Inference graph of the classification head: pooled features `[1, F]` -> logits.
    pub fn head_ops(&self) -> Vec<Op> {
        match &self.body {
            Body::Effnet { head, .. } => vec![crate::model::linear_op(head)],
            Body::Cnn(c) => c.head_ops(),
        }
    }

    /// The classification head alone, as a module on pooled features (eval mode).
    pub fn head(&self) -> SemiHead<'_> {
        SemiHead(self)
    }

    /// Inference graph image -> pooled features.
    pub fn trunk_ops(&self, h: i64, w: i64) -> Vec<Op> {
        let mut ops = self.ops(h, w);
        ops.pop();
        ops
    }

    /// The network without its heads: image -> pooled features.
    pub fn trunk(&self) -> SemiTrunk<'_> {
        SemiTrunk(self)
    }
}

impl ModuleT for SemiNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.logits(&self.embed(xs, train), train)
    }
}

/// A [`SemiNet`]'s classification head: pooled features `[b, F]` -> logits `[b, classes]`.
#[derive(Debug, Clone, Copy)]
pub struct SemiHead<'a>(&'a SemiNet);

impl Forward for SemiHead<'_> {
    fn forward(&self, features: &Tensor) -> Tensor {
        self.0.logits(features, false)
    }
}

/// A [`SemiNet`] without heads: image `[b, 3, n, n]` -> pooled features `[b, F]`.
#[derive(Debug, Clone, Copy)]
pub struct SemiTrunk<'a>(&'a SemiNet);

impl Forward for SemiTrunk<'_> {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.0.embed(xs, false)
    }
}

impl SemiTrunk<'_> {
    /// Inference graph image -> pooled features.
    pub fn ops(&self, h: i64, w: i64) -> Vec<Op> {
        self.0.trunk_ops(h, w)
    }
}

/// Loads the ImageNet weights into an EfficientNet-Lite backbone built by [`SemiNet::new`]
/// in `vs`; returns their sha256 (`None` for the small CNN, which starts from scratch).
pub fn load_backbone(
    vs: &nn::VarStore,
    semi: &SemiConfig,
    pretrained: Option<&Path>,
) -> anyhow::Result<Option<String>> {
    match (semi.backbone.lite(), pretrained) {
        (Some(lite), Some(p)) => {
            let p = effnet::weights_for(lite, p);
            let set = effnet::load_pretrained(vs, "backbone.", &p, &["_fc."])?;
            eprintln!("pretrained: {set} tensors from {}", p.display());
            Ok(Some(onboard::bundle::sha256_file(&p)?))
        }
        (Some(lite), None) => anyhow::bail!(
            "the {} backbone needs --pretrained (the weights folder scripts/setup.sh writes; $TRIAGE_WEIGHTS)",
            lite.name()
        ),
        (None, _) => Ok(None),
    }
}

/// LP-FT's first stage: fits a linear probe (`cfg`) on the frozen pooled features of
/// `images: [n, 3, side, side]` through `net`'s pretrained backbone (eval mode) with `labels`
/// (class ids below `classes`) and starts `net`'s head from it (standardization folded in).
pub fn init_head_from_probe(
    net: &SemiNet,
    cfg: &ProbeConfig,
    images: &Tensor,
    labels: &[i64],
    classes: usize,
    device: tch::Device,
) -> anyhow::Result<()> {
    let y = labels
        .iter()
        .map(|&l| usize::try_from(l).context("negative label"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let features =
        crate::probe_recipe::embed_with_progress(|x| net.embed(x, false), images, device);
    let probe = crate::probe::Probe::fit(&features, &y, classes, cfg)?;
    let (w, b) = probe.folded();
    let dim = features.size()[1];
    let weight = Tensor::from_slice(&w).view([classes as i64, dim]);
    net.set_head(&weight, &Tensor::from_slice(&b))?;
    eprintln!(
        "probe_init: head set from a probe on {} frozen feature vectors",
        y.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_and_groups() {
        let cfg = SemiConfig::default();
        assert_eq!(cfg.lr_factor(0), 1.0);
        assert!((cfg.lr_factor(20) - 0.1).abs() < 1e-12);
        assert!((cfg.lr_factor(29) - 0.01).abs() < 1e-12);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = SemiNet::new(&vs, &cfg, 25);
        let vars = vs.variables();
        assert!(vars.contains_key("backbone._conv_stem.weight"));
        assert!(vars.contains_key("head.weight") && vars.contains_key("proj_u.fc2.weight"));
        let x = Tensor::zeros([2, 3, 64, 64], (tch::Kind::Float, tch::Device::Cpu));
        let f = net.embed(&x, false);
        assert_eq!(f.size(), [2, effnet::FEATURES]);
        assert_eq!(net.logits(&f, false).size(), [2, 25]);
        assert_eq!(net.project_s(&f).size(), [2, 128]);
    }

    #[test]
    fn probe_init_starts_the_head_at_the_probe() {
        tch::manual_seed(5);
        let cfg = SemiConfig {
            dropout: 0.0,
            ..SemiConfig::default()
        };
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = SemiNet::new(&vs, &cfg, 3);
        let images = Tensor::rand([12, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
        let labels: Vec<i64> = (0..12).map(|i| i % 3).collect();
        let probe_cfg = ProbeConfig {
            steps: 50,
            ..ProbeConfig::default()
        };
        init_head_from_probe(&net, &probe_cfg, &images, &labels, 3, tch::Device::Cpu).unwrap();
        let features = tch::no_grad(|| net.embed(&images, false));
        let y: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
        let probe = crate::probe::Probe::fit(&features, &y, 3, &probe_cfg).unwrap();
        let want = probe.logits(&features);
        let got = tch::no_grad(|| net.logits(&features, false));
        let diff = f64::try_from((got - &want).abs().max()).unwrap();
        let scale = f64::try_from(want.abs().max()).unwrap();
        assert!(scale > 1e-3, "the probe learned nothing: {scale}");
        assert!(
            diff < 1e-4 * scale.max(1.0),
            "head differs from the probe by {diff}"
        );
    }

    #[test]
    fn lp_ft_settings_are_checked() {
        let probe = Some(ProbeConfig::default());
        let bad = [
            SemiConfig {
                backbone: Backbone::SmallCnn,
                probe_init: probe,
                ..SemiConfig::default()
            },
            SemiConfig {
                logit_adjust: f64::NAN,
                ..SemiConfig::default()
            },
            SemiConfig {
                ema_decay: Some(1.0),
                ..SemiConfig::default()
            },
            SemiConfig {
                probe_init: Some(ProbeConfig {
                    steps: 0,
                    ..ProbeConfig::default()
                }),
                ..SemiConfig::default()
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?} was accepted");
        }
        let ok = SemiConfig {
            probe_init: probe,
            logit_adjust: 1.0,
            ema_decay: Some(0.99),
            ..SemiConfig::default()
        };
        ok.validate().unwrap();
        // Configs written before these settings existed still load.
        let mut v = serde_json::to_value(SemiConfig::default()).unwrap();
        for key in ["logit_adjust", "probe_init", "ema_decay"] {
            v.as_object_mut().unwrap().remove(key);
        }
        let old: SemiConfig = serde_json::from_value(v).unwrap();
        assert_eq!(old, SemiConfig::default());
    }
}
