//! `host-trainer semi`: trains the semi-supervised classifier on labeled splits (plus unlabeled
//! images), evaluates it on a validation split after every epoch, checkpoints, and writes a run
//! folder: `semi.safetensors` + `semi.config.json`, `metrics.json`, `training_curves.png`,
//! `confusion_val.png`, and `classifier.onnx` checked against tch with tract.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tch::nn;

use crate::data::{self, ImageSet};
use crate::device::{self, DeviceChoice};
use crate::evaluate::{self, ClassificationMetrics, Parity};
use crate::semi::{SemiConfig, SemiNet};
use crate::semi_train::{self, SemiData, SemiHistory};
use crate::{export, figures};

/// Everything that determines a semi-supervised run; with the same data it reproduces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SemiRunConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Input side N (images resized to N x N).
    pub input_size: u32,
    /// CPU threads for libtorch.
    pub threads: i32,
    /// Use at most this many images of each split (smoke runs); `None` = all.
    pub limit_images: Option<usize>,
    /// Stop after this many optimizer steps (smoke runs); `None` = the full schedule.
    pub max_steps: Option<usize>,
    /// Evaluate on the validation split after every epoch (otherwise only at the end).
    pub eval_every_epoch: bool,
    /// Validation images checked for tch/tract parity of the exported classifier.
    pub parity_images: usize,
    /// Largest allowed |tch - tract| of the exported classifier's logits.
    pub parity_tolerance: f32,
    /// The model and its training recipe.
    pub semi: SemiConfig,
}

impl Default for SemiRunConfig {
    fn default() -> Self {
        Self {
            seed: 17,
            input_size: 128,
            threads: 2,
            limit_images: None,
            max_steps: None,
            eval_every_epoch: true,
            parity_images: 8,
            parity_tolerance: 1e-3,
            semi: SemiConfig::default(),
        }
    }
}

impl SemiRunConfig {
    /// Reads and checks a config JSON file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the config file", path.display()))?;
        let cfg: Self = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: invalid semi-supervised config; compare with `host-trainer default-semi-config`",
                path.display()
            )
        })?;
        cfg.semi
            .validate()
            .with_context(|| format!("{}: invalid semi-supervised config", path.display()))?;
        anyhow::ensure!(
            cfg.input_size >= 32 && cfg.input_size.is_multiple_of(32),
            "{}: input_size must be a multiple of 32",
            path.display()
        );
        Ok(cfg)
    }
}

/// Inputs of a run.
#[derive(Debug, Clone)]
pub struct SemiOptions {
    /// Dataset root.
    pub data: PathBuf,
    /// Labeled split files relative to `data`.
    pub train_splits: Vec<String>,
    /// Validation split relative to `data`, if any.
    pub val_split: Option<String>,
    /// Folders of unlabeled images; empty = the labeled and validation images without labels.
    pub unlabeled: Vec<PathBuf>,
    /// ImageNet EfficientNet-Lite0 safetensors (for that backbone).
    pub pretrained: Option<PathBuf>,
    /// Run folder.
    pub work: PathBuf,
    /// Device choice.
    pub device: DeviceChoice,
    /// Configuration.
    pub config: SemiRunConfig,
    /// Command line recorded in the report.
    pub command: String,
}

/// What a run measured; written to `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SemiReport {
    /// Command line.
    pub command: String,
    /// Device and machine.
    pub device: String,
    /// Trainer source commit.
    pub source_commit: String,
    /// Labeled training images.
    pub train_images: usize,
    /// Unlabeled images.
    pub unlabeled_images: usize,
    /// sha256 of the pretrained weights, when used.
    pub pretrained_sha256: Option<String>,
    /// Training history.
    pub history: SemiHistory,
    /// Validation metrics of the final model.
    pub validation: Option<ClassificationMetrics>,
    /// tch vs tract parity of `classifier.onnx`.
    pub parity: Parity,
    /// The configuration.
    pub config: SemiRunConfig,
}

/// Runs training, evaluation and export; returns the report (also written to disk).
pub fn run(opts: &SemiOptions) -> anyhow::Result<SemiReport> {
    let cfg = &opts.config;
    cfg.semi.validate()?;
    let device = device::resolve(opts.device)?;
    tch::manual_seed(cfg.seed as i64);
    tch::set_num_threads(cfg.threads);
    std::fs::create_dir_all(&opts.work)
        .with_context(|| format!("{}: cannot create the run folder", opts.work.display()))?;
    let classes = data::class_names(&opts.data)?;
    let spec = data::input_spec(cfg.input_size);
    let (train, val) = data::load_train_val(
        &opts.data,
        &opts.train_splits,
        opts.val_split.as_deref(),
        &spec,
        cfg.limit_images,
        classes.len(),
    )?;
    let unlabeled = if opts.unlabeled.is_empty() {
        let mut all = vec![train.images.shallow_clone()];
        all.extend(val.iter().map(|v| v.images.shallow_clone()));
        tch::Tensor::cat(&all, 0)
    } else {
        let mut parts = Vec::new();
        for dir in &opts.unlabeled {
            parts.push(data::load_folder(dir, &spec, cfg.limit_images)?.images);
        }
        tch::Tensor::cat(&parts, 0)
    };
    let unlabeled_images = unlabeled.size()[0] as usize;
    eprintln!(
        "data: {} labeled, {unlabeled_images} unlabeled, {} validation images at {}x{}",
        train.len(),
        val.as_ref().map_or(0, ImageSet::len),
        cfg.input_size,
        cfg.input_size
    );

    let vs = nn::VarStore::new(device);
    let net = SemiNet::new(&vs, &cfg.semi, classes.len() as i64);
    let pretrained_sha256 = crate::semi::load_backbone(&vs, &cfg.semi, opts.pretrained.as_deref())?;

    let val_truth = val.as_ref().map(ImageSet::labels_usize);
    let data = SemiData {
        images: &train.images,
        labels: &train.labels,
        unlabeled: Some(&unlabeled),
    };
    // Predictions of the latest per-epoch evaluation: the weights do not change after the last
    // epoch's callback, so they serve as the final validation predictions.
    let mut last_pred: Option<Vec<usize>> = None;
    let history = semi_train::train_semi(
        &net,
        &vs,
        &data,
        classes.len(),
        &cfg.semi,
        cfg.seed,
        device,
        cfg.max_steps,
        |epoch, h| {
            crate::train::save_weights(&vs, cfg, &opts.work, "semi")?;
            if let (true, Some(v), Some(t)) = (cfg.eval_every_epoch, &val, &val_truth) {
                let pred = evaluate::predict(&net, &v.images, device);
                let top1 = onboard::metrics::accuracy(t, &pred);
                h.val_top1.push(top1);
                last_pred = Some(pred);
                eprintln!(
                    "epoch {}: loss {:.4} (cls {:.4}, contrastive {:.4}, unlabeled {:.4}), validation top1 {top1:.4}",
                    epoch + 1,
                    h.epoch_loss[epoch],
                    h.epoch_cls[epoch],
                    h.epoch_contrastive[epoch],
                    h.epoch_unlabeled[epoch]
                );
            }
            Ok(())
        },
    )?;
    crate::train::save_weights(&vs, cfg, &opts.work, "semi")?;

    let validation = match (&val, &val_truth) {
        (Some(v), Some(t)) => {
            let pred = last_pred.unwrap_or_else(|| evaluate::predict(&net, &v.images, device));
            figures::confusion(
                &opts.work.join("confusion_val.png"),
                "semi-supervised classifier on validation",
                &classes,
                t,
                &pred,
            )?;
            Some(evaluate::classification(t, &pred, &classes))
        }
        _ => None,
    };
    let mut panels: Vec<(&str, &[f64])> = vec![
        ("total loss per epoch", &history.epoch_loss),
        ("L_cls per epoch", &history.epoch_cls),
    ];
    if history.epoch_contrastive.iter().any(|&v| v != 0.0) {
        panels.push((
            "labeled contrastive loss per epoch",
            &history.epoch_contrastive,
        ));
    }
    if history.epoch_unlabeled.iter().any(|&v| v != 0.0) {
        panels.push(("L_u per epoch", &history.epoch_unlabeled));
    }
    if !history.val_top1.is_empty() {
        panels.push(("validation top-1 per epoch", &history.val_top1));
    }
    figures::loss_curves(&opts.work.join("training_curves.png"), &panels)?;

    let n = i64::from(cfg.input_size);
    let model = export::build_model(
        "classifier",
        &net.ops(n, n),
        n,
        n,
        classes.len() as i64,
        "semi-supervised classifier: image -> class logits",
    )?;
    let onnx = opts.work.join("classifier.onnx");
    onboard::bundle::write_atomic(&onnx, &export::encode(&model))
        .with_context(|| format!("{}: cannot write", onnx.display()))?;
    let parity_set = val.as_ref().map_or(&train.images, |v| &v.images);
    let parity = evaluate::parity(&net, &onnx, parity_set, cfg.parity_images, device)?;
    anyhow::ensure!(
        parity.max_abs_diff <= cfg.parity_tolerance,
        "{}: tch and tract logits differ by {:.3e} (> {:.0e})",
        onnx.display(),
        parity.max_abs_diff,
        cfg.parity_tolerance
    );
    let report = SemiReport {
        command: opts.command.clone(),
        device: format!("{device:?} on {}", crate::provenance::machine()),
        source_commit: crate::provenance::source_commit(),
        train_images: train.len(),
        unlabeled_images,
        pretrained_sha256,
        history,
        validation,
        parity,
        config: cfg.clone(),
    };
    let json = serde_json::to_string_pretty(&report)?;
    onboard::bundle::write_atomic(&opts.work.join("metrics.json"), json.as_bytes())
        .with_context(|| format!("{}: cannot write metrics", opts.work.display()))?;
    Ok(report)
}
