//! Training loops for the autoencoder (MSE) and the classifier (cross-entropy), with seeded
//! shuffles and augmentation, per-epoch loss history and progress bars.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::augment;
use crate::config::{StageConfig, TrainConfig};
use crate::model::{Autoencoder, Classifier};

/// What a training stage did (empty for a stage that did not run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Mean training loss of each epoch.
    pub epoch_loss: Vec<f64>,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Seconds per full epoch (mean), when at least one epoch completed.
    pub seconds_per_epoch: Option<f64>,
}

fn batches(n: usize, batch: usize, rng: &mut ChaCha8Rng) -> Vec<Tensor> {
    let mut idx: Vec<i64> = (0..n as i64).collect();
    idx.shuffle(rng);
    idx.chunks(batch).map(Tensor::from_slice).collect()
}

fn run_stage(
    name: &str,
    vs: &nn::VarStore,
    n: usize,
    cfg: &StageConfig,
    seed: u64,
    mut step: impl FnMut(&Tensor, &mut ChaCha8Rng) -> Tensor,
) -> anyhow::Result<History> {
    anyhow::ensure!(n > 0, "{name}: no training images");
    let mut opt = nn::AdamW {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(vs, cfg.lr)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let per_epoch = n.div_ceil(cfg.batch_size);
    let total = cfg
        .max_steps
        .map_or(cfg.epochs * per_epoch, |m| m.min(cfg.epochs * per_epoch));
    let bar = crate::progress::bar(total as u64, name);
    let start = Instant::now();
    let mut history = History {
        epoch_loss: Vec::new(),
        steps: 0,
        seconds: 0.0,
        seconds_per_epoch: None,
    };
    'epochs: for epoch in 0..cfg.epochs {
        let (mut sum, mut count) = (0.0, 0usize);
        for idx in batches(n, cfg.batch_size, &mut rng) {
            if history.steps >= total {
                break 'epochs;
            }
            let loss = step(&idx, &mut rng);
            let v = loss.double_value(&[]);
            anyhow::ensure!(
                v.is_finite(),
                "{name}: loss became non-finite at epoch {epoch}, step {}; lower the learning rate",
                history.steps
            );
            opt.backward_step(&loss);
            sum += v;
            count += 1;
            history.steps += 1;
            bar.inc(1);
            bar.set_message(format!(
                "epoch {} loss {:.4}",
                epoch + 1,
                sum / count as f64
            ));
        }
        history.epoch_loss.push(sum / count.max(1) as f64);
    }
    bar.finish_and_clear();
    history.seconds = start.elapsed().as_secs_f64();
    let full = history.steps / per_epoch;
    if full > 0 {
        history.seconds_per_epoch = Some(history.seconds * per_epoch as f64 / history.steps as f64);
    }
    if let Some(last) = history.epoch_loss.last() {
        eprintln!(
            "{name}: {} steps in {:.1} s, last epoch loss {last:.5}",
            history.steps, history.seconds
        );
    }
    Ok(history)
}

/// Trains `ae` to reconstruct `images` (`[n, 3, h, w]`, CPU) with mean squared error.
pub fn train_autoencoder(
    ae: &Autoencoder,
    vs: &nn::VarStore,
    images: &Tensor,
    cfg: &StageConfig,
    seed: u64,
    device: Device,
) -> anyhow::Result<History> {
    let n = images.size()[0] as usize;
    run_stage("autoencoder", vs, n, cfg, seed, |idx, _| {
        let x = images.index_select(0, idx).to_device(device);
        ae.forward_t(&x, true).mse_loss(&x, tch::Reduction::Mean)
    })
}

/// Cross-entropy class weights `count^-alpha` over `n_classes`, normalized to mean 1 over the
/// classes present in `labels` (absent classes get 0).
pub fn class_weights(labels: &[i64], n_classes: usize, alpha: f64) -> Vec<f32> {
    let mut counts = vec![0usize; n_classes];
    for &l in labels {
        if let Some(c) = usize::try_from(l).ok().and_then(|l| counts.get_mut(l)) {
            *c += 1;
        }
    }
    let raw: Vec<f64> = counts
        .iter()
        .map(|&c| if c == 0 { 0.0 } else { (c as f64).powf(-alpha) })
        .collect();
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    let mean = raw.iter().sum::<f64>() / present as f64;
    raw.iter().map(|w| (w / mean) as f32).collect()
}

/// Trains `model` on `images` (`[n, 3, h, w]`, CPU) and `labels` with class-weighted
/// cross-entropy on augmented batches.
pub fn train_classifier(
    model: &Classifier,
    vs: &nn::VarStore,
    images: &Tensor,
    labels: &[i64],
    n_classes: usize,
    cfg: &TrainConfig,
    device: Device,
) -> anyhow::Result<History> {
    let n = images.size()[0] as usize;
    anyhow::ensure!(
        labels.len() == n,
        "classifier: {} labels for {n} images",
        labels.len()
    );
    let weights =
        Tensor::from_slice(&class_weights(labels, n_classes, cfg.class_balance)).to_device(device);
    let labels = Tensor::from_slice(labels);
    let aug = &cfg.classifier_augment;
    run_stage(
        "classifier",
        vs,
        n,
        &cfg.classifier,
        cfg.seed.wrapping_add(1),
        |idx, rng| {
            let x =
                augment::classifier_batch(&images.index_select(0, idx).to_device(device), aug, rng);
            let y = labels
                .index_select(0, idx)
                .to_device(device)
                .to_kind(Kind::Int64);
            model.forward_t(&x, true).cross_entropy_loss(
                &y,
                Some(&weights),
                tch::Reduction::Mean,
                -100,
                0.0,
            )
        },
    )
}

/// Saves `vs` as `dir/STEM.safetensors` (through a temporary file and a rename) and `cfg` as
/// `dir/STEM.config.json` (atomically).
pub fn save_weights(
    vs: &nn::VarStore,
    cfg: &impl serde::Serialize,
    dir: &Path,
    stem: &str,
) -> anyhow::Result<()> {
    let weights = dir.join(format!("{stem}.safetensors"));
    let tmp = dir.join(format!(".{stem}.safetensors.tmp"));
    vs.save(&tmp)
        .with_context(|| format!("{}: cannot save weights", tmp.display()))?;
    std::fs::rename(&tmp, &weights)
        .with_context(|| format!("{}: cannot move weights into place", weights.display()))?;
    let json = serde_json::to_string_pretty(cfg)?;
    onboard::bundle::write_atomic(&dir.join(format!("{stem}.config.json")), json.as_bytes())
        .with_context(|| {
            format!(
                "{}: cannot save the config beside the weights",
                dir.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_weights_by_hand() {
        // counts: class 0 -> 4, class 1 -> 1, class 2 -> 0.
        let w = class_weights(&[0, 0, 0, 0, 1], 3, 0.5);
        // raw = [1/2, 1, 0]; mean over the 2 present = 0.75.
        assert!(
            (w[0] - 0.5 / 0.75).abs() < 1e-6 && (w[1] - 1.0 / 0.75).abs() < 1e-6 && w[2] == 0.0
        );
        assert_eq!(class_weights(&[0, 1, 1], 2, 0.0), vec![1.0, 1.0]);
    }
}
