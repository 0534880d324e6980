//! Training loop of the semi-supervised classifier: `L = L_cls + lambda_s L_s + lambda_u L_u`
//! with per-group Adam learning rates and a step schedule, seeded batches and augmentation,
//! per-epoch loss components and a callback after every epoch (evaluation, checkpoint).

use std::time::Instant;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Tensor};

use crate::augment;
use crate::losses;
use crate::semi::{Contrastive, SemiConfig, SemiNet, GROUP_BACKBONE, GROUP_HEAD, GROUP_PROJECTION};

/// What a semi-supervised training run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SemiHistory {
    /// Mean total loss per epoch.
    pub epoch_loss: Vec<f64>,
    /// Mean `L_cls` per epoch.
    pub epoch_cls: Vec<f64>,
    /// Mean labeled contrastive loss per epoch.
    pub epoch_contrastive: Vec<f64>,
    /// Mean `L_u` per epoch.
    pub epoch_unlabeled: Vec<f64>,
    /// Validation top-1 after each epoch, when evaluated.
    pub val_top1: Vec<f64>,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Wall-clock seconds of the training steps (the after-epoch callbacks excluded).
    pub seconds: f64,
    /// Mean seconds per completed epoch (training steps only).
    pub seconds_per_epoch: Option<f64>,
}

/// Training data, all on the CPU: labeled images `[n, 3, h, w]` with their class ids, and
/// unlabeled images `[m, 3, h, w]`.
#[derive(Debug)]
pub struct SemiData<'a> {
    /// Labeled images.
    pub images: &'a Tensor,
    /// Class id of each labeled image.
    pub labels: &'a [i64],
    /// Unlabeled images (the `L_u` branch is skipped when `None` or empty).
    pub unlabeled: Option<&'a Tensor>,
}

/// One random member of each of `count` random classes (every class when `count` is larger).
fn one_per_class(by_class: &[Vec<i64>], count: usize, rng: &mut ChaCha8Rng) -> Vec<i64> {
    let mut classes: Vec<&Vec<i64>> = by_class.iter().filter(|v| !v.is_empty()).collect();
    classes.shuffle(rng);
    classes
        .into_iter()
        .take(count)
        .filter_map(|members| members.choose(rng).copied())
        .collect()
}

fn random_batch(n: usize, count: usize, rng: &mut ChaCha8Rng) -> Vec<i64> {
    (0..count).map(|_| rng.random_range(0..n) as i64).collect()
}

/// Two strong views of `x` through the backbone, as pooled features `(f1, f2)`.
fn two_views(
    net: &SemiNet,
    x: &Tensor,
    cfg: &SemiConfig,
    rng: &mut ChaCha8Rng,
) -> (Tensor, Tensor) {
    let v1 = augment::strong_batch(x, &cfg.strong_augment, rng);
    let v2 = augment::strong_batch(x, &cfg.strong_augment, rng);
    let b = x.size()[0];
    let f = net.embed(&Tensor::cat(&[v1, v2], 0), true);
    (f.narrow(0, 0, b), f.narrow(0, b, b))
}

fn scalar(t: &Tensor) -> f64 {
    f64::try_from(t.detach()).unwrap_or(f64::NAN)
}

/// Draws the batches of each step: shuffled passes over the labeled images for `L_cls`, one
/// sample per class (or a random batch) for the contrastive branch, random unlabeled images.
#[derive(Debug)]
struct Sampler {
    by_class: Vec<Vec<i64>>,
    n: usize,
    unlabeled: usize,
    order: Vec<i64>,
    cursor: usize,
}

/// Image indices of one step.
#[derive(Debug)]
struct StepBatch {
    cls: Vec<i64>,
    contrastive: Vec<i64>,
    unlabeled: Vec<i64>,
}

impl Sampler {
    fn new(data: &SemiData<'_>, classes: usize) -> anyhow::Result<Self> {
        let n = data.labels.len();
        anyhow::ensure!(
            n > 0 && data.images.size()[0] as usize == n,
            "semi-supervised training: {} labels for {} images",
            n,
            data.images.size()[0]
        );
        let mut by_class = vec![Vec::new(); classes];
        for (i, &l) in data.labels.iter().enumerate() {
            let slot = usize::try_from(l).ok().and_then(|c| by_class.get_mut(c));
            let slot = slot.ok_or_else(|| anyhow::anyhow!("label {l} outside 0..{classes}"))?;
            slot.push(i as i64);
        }
        Ok(Self {
            by_class,
            n,
            unlabeled: data.unlabeled.map_or(0, |u| u.size()[0] as usize),
            order: Vec::new(),
            cursor: 0,
        })
    }

    fn next(&mut self, cfg: &SemiConfig, rng: &mut ChaCha8Rng) -> StepBatch {
        if self.cursor + cfg.batch_cls > self.order.len() {
            self.order = (0..self.n as i64).collect();
            self.order.shuffle(rng);
            self.cursor = 0;
        }
        let end = (self.cursor + cfg.batch_cls).min(self.n);
        let cls = self.order[self.cursor..end].to_vec();
        self.cursor += cfg.batch_cls;
        let contrastive = match cfg.contrastive {
            _ if cfg.lambda_s <= 0.0 => Vec::new(),
            Contrastive::None => Vec::new(),
            Contrastive::InterClass => one_per_class(&self.by_class, cfg.batch_contrastive, rng),
            Contrastive::SampleWise => random_batch(self.n, cfg.batch_contrastive, rng),
        };
        let unlabeled = if cfg.lambda_u > 0.0 && self.unlabeled > 0 {
            random_batch(self.unlabeled, cfg.batch_unlabeled, rng)
        } else {
            Vec::new()
        };
        StepBatch {
            cls,
            contrastive,
            unlabeled,
        }
    }
}

/// The objective of one step and its components.
#[derive(Debug)]
struct StepLoss {
    total: Tensor,
    parts: [f64; 4],
}

/// `logit_adjust * log(prior of data's labels)` on `device` (`[classes]`), added to the logits of
/// `L_cls`; `None` without logit adjustment.
fn class_adjust(
    data: &SemiData<'_>,
    classes: usize,
    cfg: &SemiConfig,
    device: Device,
) -> Option<Tensor> {
    (cfg.logit_adjust > 0.0).then(|| {
        let y: Vec<usize> = data.labels.iter().map(|&l| l.max(0) as usize).collect();
        let prior = onboard::bundle::class_prior(&y, classes);
        (Tensor::from_slice(&prior).log() * cfg.logit_adjust).to_device(device)
    })
}

/// An exponential moving average of the trainable variables.
struct Ema {
    decay: f64,
    /// (variable, its average)
    pairs: Vec<(Tensor, Tensor)>,
}

impl Ema {
    fn new(vs: &nn::VarStore, decay: f64) -> Self {
        let pairs = vs
            .trainable_variables()
            .into_iter()
            .map(|v| {
                let avg = v.detach().copy();
                (v, avg)
            })
            .collect();
        Self { decay, pairs }
    }

    fn update(&mut self) {
        tch::no_grad(|| {
            for (v, avg) in &mut self.pairs {
                let next = &*avg * self.decay + &*v * (1.0 - self.decay);
                avg.copy_(&next);
            }
        });
    }

    /// Replaces every variable by its average.
    fn apply(mut self) {
        tch::no_grad(|| {
            for (v, avg) in &mut self.pairs {
                v.copy_(avg);
            }
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn objective(
    net: &SemiNet,
    data: &SemiData<'_>,
    cfg: &SemiConfig,
    batch: &StepBatch,
    adjust: Option<&Tensor>,
    rng: &mut ChaCha8Rng,
    device: Device,
) -> StepLoss {
    let labels = |idx: &Tensor| {
        Tensor::from_slice(data.labels)
            .index_select(0, idx)
            .to_device(device)
    };
    let idx = Tensor::from_slice(&batch.cls);
    let x = data.images.index_select(0, &idx).to_device(device);
    let x = augment::classifier_batch(&x, &cfg.weak_augment, rng);
    let logits = net.logits(&net.embed(&x, true), true);
    let logits = match adjust {
        Some(a) => logits + a,
        None => logits,
    };
    let l_cls = logits.cross_entropy_for_logits(&labels(&idx));
    // Out-of-place sums: `total` starts as a handle on `l_cls`, which must keep its value.
    let mut total = l_cls.shallow_clone();
    let mut l_s_val = 0.0;
    if batch.contrastive.len() > 1 {
        let idx = Tensor::from_slice(&batch.contrastive);
        let xs = data.images.index_select(0, &idx).to_device(device);
        let (f1, f2) = two_views(net, &xs, cfg, rng);
        let (z1, z2) = (net.project_s(&f1), net.project_s(&f2));
        let l_s = match cfg.contrastive {
            Contrastive::InterClass => {
                losses::inter_class_contrastive(&z1, &z2, &labels(&idx), cfg.tau)
            }
            _ => losses::sample_contrastive(&z1, &z2, cfg.tau),
        };
        l_s_val = scalar(&l_s);
        total = &total + l_s * cfg.lambda_s;
    }
    let mut l_u_val = 0.0;
    if let (false, Some(u)) = (batch.unlabeled.is_empty(), data.unlabeled) {
        let xu = u
            .index_select(0, &Tensor::from_slice(&batch.unlabeled))
            .to_device(device);
        let (f1, f2) = two_views(net, &xu, cfg, rng);
        let l_u = losses::unsupervised_similarity(&net.project_u(&f1), &net.project_u(&f2));
        l_u_val = scalar(&l_u);
        total = &total + l_u * cfg.lambda_u;
    }
    let parts = [scalar(&total), scalar(&l_cls), l_s_val, l_u_val];
    StepLoss { total, parts }
}

/// The objective on the first step's batch and augmentation drawn from `seed`, as
/// [`train_semi`] with the same seed draws them: lets a test compare the loss on one batch
/// before and after a step. Dropout follows the global tch seed.
pub fn first_step_loss(
    net: &SemiNet,
    data: &SemiData<'_>,
    classes: usize,
    cfg: &SemiConfig,
    seed: u64,
    device: Device,
) -> anyhow::Result<f64> {
    let mut sampler = Sampler::new(data, classes)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let batch = sampler.next(cfg, &mut rng);
    let adjust = class_adjust(data, classes, cfg, device);
    Ok(objective(net, data, cfg, &batch, adjust.as_ref(), &mut rng, device).parts[0])
}

/// Trains `net` (variables in `vs`) on `data` for `cfg.epochs` epochs (or `max_steps` steps in
/// total). `after_epoch(epoch, history)` runs after each epoch; an error there stops training.
/// With `cfg.ema_decay` the weights' moving average replaces them at the end (the per-epoch
/// callback sees the raw weights).
#[allow(clippy::too_many_arguments)]
pub fn train_semi(
    net: &SemiNet,
    vs: &nn::VarStore,
    data: &SemiData<'_>,
    classes: usize,
    cfg: &SemiConfig,
    seed: u64,
    device: Device,
    max_steps: Option<usize>,
    mut after_epoch: impl FnMut(usize, &mut SemiHistory) -> anyhow::Result<()>,
) -> anyhow::Result<SemiHistory> {
    cfg.validate()?;
    let mut sampler = Sampler::new(data, classes)?;
    let mut opt = nn::Adam::default().build(vs, cfg.lr_head)?;
    let lrs = [
        (GROUP_HEAD, cfg.lr_head),
        (GROUP_BACKBONE, cfg.lr_backbone),
        (GROUP_PROJECTION, cfg.lr_projection),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = data.labels.len();
    let per_epoch = cfg
        .steps_per_epoch
        .unwrap_or(n.div_ceil(cfg.batch_cls))
        .max(1);
    let total = max_steps.map_or(cfg.epochs * per_epoch, |m| m.min(cfg.epochs * per_epoch));
    let bar = crate::progress::bar(total as u64, "semi-supervised");
    let start = Instant::now();
    let mut history = SemiHistory::default();
    let mut paused = 0.0;
    let adjust = class_adjust(data, classes, cfg, device);
    let mut ema = cfg.ema_decay.map(|d| Ema::new(vs, d));
    for epoch in 0..cfg.epochs {
        if history.steps >= total {
            break;
        }
        let factor = cfg.lr_factor(epoch);
        for (g, lr) in lrs {
            opt.set_lr_group(g, lr * factor);
        }
        let mut sums = [0f64; 4];
        let mut taken = 0usize;
        while taken < per_epoch && history.steps < total {
            let batch = sampler.next(cfg, &mut rng);
            let step = objective(net, data, cfg, &batch, adjust.as_ref(), &mut rng, device);
            anyhow::ensure!(
                step.parts[0].is_finite(),
                "semi-supervised training diverged at step {} (loss {}); lower the learning rates",
                history.steps,
                step.parts[0]
            );
            opt.backward_step(&step.total);
            if let Some(e) = ema.as_mut() {
                e.update();
            }
            for (s, v) in sums.iter_mut().zip(step.parts) {
                *s += v;
            }
            taken += 1;
            history.steps += 1;
            bar.inc(1);
            bar.set_message(format!(
                "epoch {} loss {:.4}",
                epoch + 1,
                sums[0] / taken as f64
            ));
        }
        let t = taken.max(1) as f64;
        history.epoch_loss.push(sums[0] / t);
        history.epoch_cls.push(sums[1] / t);
        history.epoch_contrastive.push(sums[2] / t);
        history.epoch_unlabeled.push(sums[3] / t);
        history.seconds = start.elapsed().as_secs_f64() - paused;
        let t = Instant::now();
        bar.suspend(|| after_epoch(epoch, &mut history))?;
        paused += t.elapsed().as_secs_f64();
    }
    bar.finish_and_clear();
    if let Some(e) = ema {
        e.apply();
    }
    history.seconds = start.elapsed().as_secs_f64() - paused;
    history.seconds_per_epoch = (history.steps >= per_epoch)
        .then(|| history.seconds / history.steps as f64 * per_epoch as f64);
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_class_takes_distinct_classes() {
        let by_class = vec![vec![0, 1], vec![], vec![2], vec![3, 4, 5]];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let pick = one_per_class(&by_class, 24, &mut rng);
        assert_eq!(pick.len(), 3);
        let class_of = |i: i64| by_class.iter().position(|v| v.contains(&i)).unwrap();
        let mut cls: Vec<usize> = pick.iter().map(|&i| class_of(i)).collect();
        cls.sort_unstable();
        assert_eq!(cls, vec![0, 2, 3]);
        assert_eq!(one_per_class(&by_class, 2, &mut rng).len(), 2);
    }

    #[test]
    fn ema_averages_and_replaces() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut x = vs.root().zeros("x", &[2]);
        let mut ema = Ema::new(&vs, 0.5);
        tch::no_grad(|| x.copy_(&Tensor::from_slice(&[1.0f32, 2.0])));
        ema.update();
        ema.update();
        ema.apply();
        let got: Vec<f32> = Vec::try_from(&x).unwrap();
        assert_eq!(got, vec![0.75, 1.5]);
    }

    #[test]
    fn logit_adjustment_follows_the_label_prior() {
        let images = Tensor::zeros([4, 3, 8, 8], (tch::Kind::Float, Device::Cpu));
        let labels = [0i64, 0, 0, 1];
        let data = SemiData {
            images: &images,
            labels: &labels,
            unlabeled: None,
        };
        let mut cfg = SemiConfig::default();
        assert!(class_adjust(&data, 2, &cfg, Device::Cpu).is_none());
        cfg.logit_adjust = 1.0;
        let a: Vec<f32> =
            Vec::try_from(class_adjust(&data, 2, &cfg, Device::Cpu).unwrap()).unwrap();
        // The training prior counts half a pseudo-count per class: 3.5 / 5 and 1.5 / 5.
        assert!(
            (a[0] - 0.7f32.ln()).abs() < 1e-5 && (a[1] - 0.3f32.ln()).abs() < 1e-5,
            "{a:?}"
        );
    }
}
