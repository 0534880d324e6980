//! Training loops for the autoencoder (MSE) and the classifier (cross-entropy), with seeded
//! shuffles and augmentation, per-epoch loss history and progress bars.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::config::StageConfig;
use crate::model::{Autoencoder, Classifier};

/// What a training stage did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    let mut opt = nn::Adam::default().build(vs, cfg.lr)?;
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

/// Random horizontal flip of each image of a batch with probability 1/2.
pub fn random_hflip(x: &Tensor, rng: &mut ChaCha8Rng) -> Tensor {
    let b = x.size()[0];
    let mask: Vec<bool> = (0..b).map(|_| rng.random::<bool>()).collect();
    let mask = Tensor::from_slice(&mask)
        .view([-1, 1, 1, 1])
        .to_device(x.device());
    x.flip([3]).where_self(&mask, x)
}

/// Trains `model` on `images` (`[n, 3, h, w]`, CPU) and `labels` with cross-entropy and random
/// horizontal flips.
pub fn train_classifier(
    model: &Classifier,
    vs: &nn::VarStore,
    images: &Tensor,
    labels: &[i64],
    cfg: &StageConfig,
    seed: u64,
    device: Device,
) -> anyhow::Result<History> {
    let n = images.size()[0] as usize;
    anyhow::ensure!(
        labels.len() == n,
        "classifier: {} labels for {n} images",
        labels.len()
    );
    let labels = Tensor::from_slice(labels);
    run_stage("classifier", vs, n, cfg, seed, |idx, rng| {
        let x = random_hflip(&images.index_select(0, idx).to_device(device), rng);
        let y = labels
            .index_select(0, idx)
            .to_device(device)
            .to_kind(Kind::Int64);
        model.forward_t(&x, true).cross_entropy_for_logits(&y)
    })
}
