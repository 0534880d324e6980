//! Training configuration, saved as JSON next to every weight file.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One training stage (autoencoder or classifier).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageConfig {
    /// Passes over the training images.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Stop after this many optimizer steps in total (for smoke runs); `None` = no cap.
    pub max_steps: Option<usize>,
    /// Decoupled weight decay (AdamW); 0 = plain Adam behaviour.
    pub weight_decay: f64,
}

/// Everything that determines a training run; with the same data it reproduces the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Seed of every random choice (weights, shuffles, augmentation, k-means).
    pub seed: u64,
    /// Input side N: images are resized to N x N.
    pub input_size: u32,
    /// Latent size M of the autoencoder.
    pub latent_dim: i64,
    /// Output channels of the autoencoder's stride-2 convolutions (one per stage).
    pub ae_channels: Vec<i64>,
    /// Output channels of the classifier's stride-2 conv-BN-ReLU blocks.
    pub classifier_channels: Vec<i64>,
    /// Number of k-means clusters.
    pub k: usize,
    /// k-means restarts (best inertia wins).
    pub kmeans_restarts: usize,
    /// k-means iteration cap per restart.
    pub kmeans_max_iter: usize,
    /// k-means stops when no centroid moves more than this (Euclidean).
    pub kmeans_tol: f32,
    /// L2-normalize features before clustering and onboard (for a fixed `cluster_encoder`).
    pub l2_normalize: bool,
    /// Features that feed k-means: autoencoder, classifier, or auto (best on validation).
    pub cluster_encoder: crate::encoders::ClusterEncoder,
    /// PCA-whiten features before clustering (for a fixed `cluster_encoder`; `auto` tries both).
    #[serde(default)]
    pub whiten: bool,
    /// Components kept by whitening.
    #[serde(default = "default_whiten_components")]
    pub whiten_components: usize,
    /// Autoencoder stage.
    pub autoencoder: StageConfig,
    /// Classifier stage.
    pub classifier: StageConfig,
    /// Augmentation of classifier batches.
    pub classifier_augment: crate::augment::AugmentConfig,
    /// Class weights of the cross-entropy are `count^-class_balance` (0 = unweighted,
    /// 0.5 = inverse square root of the class frequency), normalized to mean 1 over present
    /// classes.
    pub class_balance: f64,
    /// Use at most this many images of each split (for smoke runs); `None` = all.
    pub limit_images: Option<usize>,
    /// When no split outside the training splits is held out (trained on train + validation),
    /// every this-many-th labeled training image is kept out of the classifier's training and
    /// the softmax temperature is fitted on them; 0 = never (temperature 1 then).
    #[serde(default = "default_calibration_holdout")]
    pub calibration_holdout: usize,
    /// Number of validation images checked for tch/tract parity after export.
    pub parity_images: usize,
    /// Largest allowed absolute difference between tch and tract outputs.
    pub parity_tolerance: f32,
    /// Science value per class name; classes not listed get 1.0.
    pub science_values: BTreeMap<String, f32>,
    /// CPU threads for libtorch.
    pub threads: i32,
    /// When set, the classifier is the semi-supervised contrastive one (replacing the small CNN
    /// stage and `classifier_channels`).
    #[serde(default)]
    pub semi: Option<crate::semi::SemiConfig>,
    /// When set, the classifier is a frozen pretrained backbone with a linear probe (the probe
    /// recipe; replaces `semi` and the small CNN).
    #[serde(default)]
    pub probe: Option<crate::probe_recipe::ProbeRecipe>,
}

fn default_whiten_components() -> usize {
    64
}

fn default_calibration_holdout() -> usize {
    10
}

impl Default for TrainConfig {
    fn default() -> Self {
        let values = [
            ("ground", 0.4),
            ("horizon", 1.5),
            ("drill holes", 2.0),
            ("drill", 1.5),
            ("scoop", 1.5),
            ("wheel", 1.2),
            ("observation tray", 1.5),
            ("portion box", 1.2),
            ("portion tube opening", 1.2),
            ("sun", 1.2),
            ("apxs cal target", 0.6),
            ("chemcam cal target", 0.6),
            ("mahli cal target", 0.6),
            ("mastcam cal target", 0.6),
        ];
        Self {
            seed: 17,
            input_size: 64,
            latent_dim: 64,
            ae_channels: vec![16, 32, 64, 64],
            classifier_channels: vec![32, 64, 128, 128],
            k: 24,
            kmeans_restarts: 8,
            kmeans_max_iter: 300,
            kmeans_tol: 1e-5,
            l2_normalize: true,
            cluster_encoder: crate::encoders::ClusterEncoder::Auto,
            whiten: false,
            whiten_components: default_whiten_components(),
            autoencoder: StageConfig {
                epochs: 25,
                batch_size: 64,
                lr: 1e-3,
                max_steps: None,
                weight_decay: 0.0,
            },
            classifier: StageConfig {
                epochs: 30,
                batch_size: 64,
                lr: 1e-3,
                max_steps: None,
                weight_decay: 0.0,
            },
            classifier_augment: crate::augment::AugmentConfig::default(),
            class_balance: 0.0,
            limit_images: None,
            calibration_holdout: default_calibration_holdout(),
            parity_images: 32,
            parity_tolerance: 1e-4,
            science_values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            threads: 2,
            semi: None,
            probe: None,
        }
    }
}

impl TrainConfig {
    /// Reads a config JSON file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the config file", path.display()))?;
        let cfg: Self = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: invalid training config; compare with `host-trainer default-config`",
                path.display()
            )
        })?;
        cfg.validate()
            .with_context(|| format!("{}: invalid training config", path.display()))?;
        Ok(cfg)
    }

    /// Checks the values a run relies on.
    pub fn validate(&self) -> anyhow::Result<()> {
        let stages = self.ae_channels.len() as u32;
        anyhow::ensure!(
            !self.ae_channels.is_empty() && !self.classifier_channels.is_empty(),
            "channel lists must not be empty"
        );
        anyhow::ensure!(
            self.input_size >= 8 && self.input_size.is_multiple_of(1 << stages),
            "input_size {} must be a multiple of 2^{} (one halving per autoencoder stage)",
            self.input_size,
            stages
        );
        anyhow::ensure!(
            self.latent_dim > 0 && self.k > 0,
            "latent_dim and k must be positive"
        );
        anyhow::ensure!(
            self.kmeans_restarts > 0 && self.kmeans_max_iter > 0,
            "k-means restarts and iterations must be positive"
        );
        for s in [&self.autoencoder, &self.classifier] {
            anyhow::ensure!(
                s.batch_size > 0 && s.lr > 0.0,
                "batch_size and lr must be positive"
            );
        }
        anyhow::ensure!(self.threads > 0, "threads must be positive");
        anyhow::ensure!(
            self.calibration_holdout != 1,
            "calibration_holdout 1 would hold out every training image; use 0 (never) or >= 2"
        );
        anyhow::ensure!(
            self.whiten_components > 0,
            "whiten_components must be positive"
        );
        if let Some(p) = &self.probe {
            anyhow::ensure!(
                self.semi.is_none(),
                "config has both `probe` and `semi`: choose one classifier recipe"
            );
            p.validate()?;
            anyhow::ensure!(
                self.input_size.is_multiple_of(32),
                "input_size {} must be a multiple of 32 for the probe recipe's backbone",
                self.input_size
            );
        }
        if let Some(s) = &self.semi {
            s.validate()?;
            anyhow::ensure!(
                self.input_size.is_multiple_of(32),
                "input_size {} must be a multiple of 32 for the semi-supervised classifier",
                self.input_size
            );
        }
        Ok(())
    }

    /// The classifier's logit adjustment (its probabilities refer to the training prior raised to
    /// `1 - logit_adjust`): the probe recipe's or the semi-supervised classifier's, 0 for the
    /// small CNN.
    pub fn logit_adjust(&self) -> f64 {
        match (&self.probe, &self.semi) {
            (Some(p), _) => p.probe.logit_adjust,
            (None, Some(s)) => s.logit_adjust,
            (None, None) => 0.0,
        }
    }

    /// Science value of a class name.
    pub fn science_value(&self, class: &str) -> f32 {
        self.science_values.get(class).copied().unwrap_or(1.0)
    }
}
