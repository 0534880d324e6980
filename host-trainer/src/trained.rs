//! The classifier stage: trains the configured classifier (the small CNN, the semi-supervised
//! contrastive network of seed B, or a frozen pretrained backbone with a linear probe) and
//! hands it on as one [`Trained`] value that the clustering and export stages read.

use std::path::Path;

use anyhow::Context;
use tch::nn;

use crate::config::TrainConfig;
use crate::data::ImageSet;
use crate::encoders::Source;
use crate::export::Op;
use crate::model::{Classifier, Forward};
use crate::probe_recipe::ProbeNet;
use crate::semi::SemiNet;
use crate::semi_train::{SemiData, SemiHistory};
use crate::train::{self, save_weights, History};

/// The small CNN's linear head as a module on pooled features.
struct CnnHead<'a>(&'a Classifier);

impl Forward for CnnHead<'_> {
    fn forward(&self, features: &tch::Tensor) -> tch::Tensor {
        self.0.head_logits(features)
    }
}

/// The probe as a module on pooled features.
struct ProbeHead<'a>(&'a crate::probe::Probe);

impl Forward for ProbeHead<'_> {
    fn forward(&self, features: &tch::Tensor) -> tch::Tensor {
        self.0.logits(features)
    }
}

/// The trained classifier.
#[derive(Debug)]
pub enum Trained {
    /// The small CNN trained from scratch.
    Cnn(Classifier),
    /// The semi-supervised network (seed B).
    Semi(Box<SemiNet>),
    /// A frozen pretrained backbone with a linear probe.
    Probe(Box<ProbeNet>),
}

impl Trained {
    /// The whole classifier (images `[b, 3, n, n]` -> logits), eval mode.
    pub fn module(&self) -> &dyn Forward {
        match self {
            Trained::Cnn(c) => c,
            Trained::Semi(s) => s.as_ref(),
            Trained::Probe(p) => p.as_ref(),
        }
    }

    /// The whole classifier's graph for an `n x n` input.
    pub fn ops(&self, n: i64) -> Vec<Op> {
        match self {
            Trained::Cnn(c) => c.ops(),
            Trained::Semi(s) => s.ops(n, n),
            Trained::Probe(p) => p.ops(n),
        }
    }

    /// The classification head's graph and module (on pooled features), for a bundle whose
    /// classifier reads the encoder's output.
    pub fn head(&self) -> (Vec<Op>, Box<dyn Forward + '_>) {
        match self {
            Trained::Cnn(c) => (c.head_ops(), Box::new(CnnHead(c))),
            Trained::Semi(s) => (s.head_ops(), Box::new(s.head())),
            Trained::Probe(p) => (p.head_ops(), Box::new(ProbeHead(p.head()))),
        }
    }

    /// The trunk (images -> pooled features) as a clustering source.
    pub fn source(&self, n: i64) -> Source<'_> {
        match self {
            Trained::Cnn(c) => Source::Classifier(c.trunk()),
            Trained::Semi(s) => Source::Semi(s.trunk(), n),
            Trained::Probe(p) => Source::Backbone(p.trunk(), n),
        }
    }
}

/// What the classifier stage produced.
#[derive(Debug)]
pub struct ClassifierStage {
    /// The classifier.
    pub trained: Trained,
    /// Its training history.
    pub history: History,
    /// The semi-supervised objective's per-term history.
    pub semi: Option<SemiHistory>,
    /// sha256 of the pretrained weights used, if any.
    pub pretrained_sha256: Option<String>,
    /// A temperature the stage fitted itself (the probe recipe's cross-fitted one).
    pub temperature: Option<crate::temperature::CrossFitted>,
}

/// Trains the classifier the config names (`probe`, `semi`, else the small CNN) on
/// `train_set`; the semi-supervised one also sees `unlabeled_pool` (`[m, 3, n, n]`) without
/// labels; `pretrained` is the ImageNet weights (file or folder) of a pretrained backbone.
/// Weights that are trained are checkpointed into the run folder `work` as `classifier`.
#[allow(clippy::too_many_arguments)]
pub fn train_classifier(
    cfg: &TrainConfig,
    pretrained: Option<&Path>,
    work: &Path,
    vs: &nn::VarStore,
    train_set: &ImageSet,
    unlabeled_pool: impl FnOnce() -> tch::Tensor,
    classes: usize,
    device: tch::Device,
) -> anyhow::Result<ClassifierStage> {
    if let Some(recipe) = &cfg.probe {
        let weights = pretrained.with_context(|| {
            format!(
                "the probe recipe's {} backbone needs --pretrained (the weights folder scripts/setup.sh writes; $TRIAGE_WEIGHTS)",
                recipe.backbone.name()
            )
        })?;
        let labels = train_set.labels_usize();
        let (net, history, temperature, sha) =
            ProbeNet::fit(recipe, weights, &train_set.images, &labels, classes, device)?;
        return Ok(ClassifierStage {
            trained: Trained::Probe(Box::new(net)),
            history,
            semi: None,
            pretrained_sha256: Some(sha),
            temperature,
        });
    }
    let stage = if let Some(semi) = &cfg.semi {
        let net = SemiNet::new(vs, semi, classes as i64);
        let sha = crate::semi::load_backbone(vs, semi, pretrained)?;
        if let Some(probe) = &semi.probe_init {
            crate::semi::init_head_from_probe(
                &net,
                probe,
                &train_set.images,
                &train_set.labels,
                classes,
                device,
            )?;
        }
        let pool = unlabeled_pool();
        let data = SemiData {
            images: &train_set.images,
            labels: &train_set.labels,
            unlabeled: Some(&pool),
        };
        let h = crate::semi_train::train_semi(
            &net,
            vs,
            &data,
            classes,
            semi,
            cfg.seed.wrapping_add(1),
            device,
            cfg.classifier.max_steps,
            |_, _| save_weights(vs, cfg, work, "classifier"),
        )?;
        ClassifierStage {
            trained: Trained::Semi(Box::new(net)),
            history: History {
                epoch_loss: h.epoch_loss.clone(),
                steps: h.steps,
                seconds: h.seconds,
                seconds_per_epoch: h.seconds_per_epoch,
            },
            semi: Some(h),
            pretrained_sha256: sha,
            temperature: None,
        }
    } else {
        let classifier = Classifier::new(
            &(vs.root() / "classifier"),
            &cfg.classifier_channels,
            classes as i64,
        );
        let history = train::train_classifier(
            &classifier,
            vs,
            &train_set.images,
            &train_set.labels,
            classes,
            cfg,
            device,
        )?;
        ClassifierStage {
            trained: Trained::Cnn(classifier),
            history,
            semi: None,
            pretrained_sha256: None,
            temperature: None,
        }
    };
    save_weights(vs, cfg, work, "classifier")?;
    Ok(stage)
}
