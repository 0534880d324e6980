//! A linear probe on frozen features: features standardized with the training mean and
//! standard deviation, then multinomial logistic regression with an L2 penalty, fitted full
//! batch. `logit_adjust` > 0 trains on `logits + logit_adjust * log(prior)` and predicts
//! without it (balanced softmax / logit adjustment, Menon et al. 2021), so the probe does not
//! bake the training class prior into its predictions.

use serde::{Deserialize, Serialize};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

/// How the probe is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeConfig {
    /// L2 penalty on the weights (mean over classes of the squared norm, times this).
    pub l2: f64,
    /// Logit adjustment strength (0 = plain cross-entropy).
    pub logit_adjust: f64,
    /// Full-batch Adam steps.
    pub steps: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Seed of the initialization.
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            l2: 1e-3,
            logit_adjust: 0.0,
            steps: 400,
            lr: 0.01,
            seed: 17,
        }
    }
}

/// A fitted probe: `logits = ((x - mean) / std) W + b`, shapes `mean, std: [dim]`,
/// `W: [dim, classes]`, `b: [classes]`.
#[derive(Debug)]
pub struct Probe {
    mean: Tensor,
    std: Tensor,
    w: Tensor,
    b: Tensor,
}

impl Probe {
    /// Fits on `x: [n, dim]` with labels `y` (`n` values below `classes`).
    pub fn fit(x: &Tensor, y: &[usize], classes: usize, cfg: &ProbeConfig) -> anyhow::Result<Self> {
        let n = x.size()[0];
        anyhow::ensure!(
            n > 1 && n as usize == y.len(),
            "probe: {n} rows, {} labels",
            y.len()
        );
        anyhow::ensure!(
            y.iter().all(|&c| c < classes),
            "probe: a label is out of range"
        );
        tch::manual_seed(cfg.seed as i64);
        let x = x.to_kind(Kind::Float);
        let mean = x.mean_dim(&[0i64][..], false, Kind::Float);
        let std = x.std_dim(&[0i64][..], false, false).clamp_min(1e-6);
        let xs = (&x - &mean) / &std;
        let labels = Tensor::from_slice(&y.iter().map(|&c| c as i64).collect::<Vec<_>>());
        let prior = onboard::bundle::class_prior(y, classes);
        let adjust = Tensor::from_slice(&prior).log() * cfg.logit_adjust;
        let vs = nn::VarStore::new(Device::Cpu);
        let dim = x.size()[1];
        let w = vs.root().zeros("w", &[dim, classes as i64]);
        let b = vs.root().zeros("b", &[classes as i64]);
        let mut opt = nn::Adam::default().build(&vs, cfg.lr)?;
        for _ in 0..cfg.steps {
            let logits = xs.matmul(&w) + &b + &adjust;
            let loss = logits.cross_entropy_for_logits(&labels)
                + w.square().sum(Kind::Float) * (cfg.l2 / classes as f64);
            opt.backward_step(&loss);
        }
        let probe = Self {
            mean,
            std,
            w: w.detach(),
            b: b.detach(),
        };
        anyhow::ensure!(
            f64::try_from(probe.w.abs().max()).is_ok_and(f64::is_finite),
            "probe: the fit diverged (non-finite weights)"
        );
        Ok(probe)
    }

    /// Logits `[n, classes]` of `x: [n, dim]`.
    /// `x` may live on any device; the logits are on the probe's (the CPU).
    pub fn logits(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let x = x.to_kind(Kind::Float).to_device(self.w.device());
            ((x - &self.mean) / &self.std).matmul(&self.w) + &self.b
        })
    }

    /// The probe as one affine map on raw features, standardization folded in:
    /// `(weight [classes, dim] row-major, bias [classes])`, for a Gemm op.
    pub fn folded(&self) -> (Vec<f32>, Vec<f32>) {
        let w = &self.w / self.std.unsqueeze(1);
        let b = &self.b - self.mean.unsqueeze(0).matmul(&w).squeeze_dim(0);
        (
            crate::model::to_vec(&w.tr().contiguous()),
            crate::model::to_vec(&b),
        )
    }
}

/// The class prior a probe's probabilities refer to: a probe trained with logit adjustment
/// `tau` on labels with prior `prior` predicts `p(y | x)` under the prior proportional to
/// `prior^(1 - tau)` (uniform at `tau = 1`), which is what prior adaptation must start from
/// and what its temperature is fitted for. Entries are floored at 1e-6 and sum to 1.
pub fn output_prior(prior: &[f32], tau: f64) -> Vec<f32> {
    let raw: Vec<f64> = prior
        .iter()
        .map(|&p| (p.max(1e-12) as f64).powf(1.0 - tau))
        .collect();
    let total: f64 = raw.iter().sum();
    let q: Vec<f64> = raw.iter().map(|v| (v / total).max(1e-6)).collect();
    let total: f64 = q.iter().sum();
    q.iter().map(|v| (v / total) as f32).collect()
}

/// Per-class weights `output / labels` that make held-out rows labelled with prior `labels`
/// stand for a population with prior `output` (for
/// [`onboard::bundle::fit_temperature_weighted`]).
pub fn reweighting(labels: &[f32], output: &[f32]) -> Vec<f32> {
    labels
        .iter()
        .zip(output)
        .map(|(p, q)| q / p.max(1e-12))
        .collect()
}

/// Fold of each of `n` rows dealt round-robin to `folds` folds.
pub fn round_robin_folds(n: usize, folds: usize) -> Vec<usize> {
    (0..n).map(|i| i % folds.max(1)).collect()
}

/// Fold of each row for `folds` contiguous blocks in the order of `keys` (e.g. file names,
/// which order MSL images by sol): the first `n / folds` rows by key form fold 0, and so on.
/// Held-out logits then come from probes that never saw the neighbouring sols, which is how
/// the rover meets later sols (round-robin folds leave near-duplicate frames of one sequence on
/// both sides and give an over-confident temperature).
pub fn blocked_folds<K: Ord>(keys: &[K], folds: usize) -> Vec<usize> {
    let n = keys.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys[a].cmp(&keys[b]).then(a.cmp(&b)));
    let mut fold = vec![0; n];
    for (rank, &row) in order.iter().enumerate() {
        fold[row] = rank * folds.max(1) / n.max(1);
    }
    fold
}

/// Logits of every row of `x` from probes fitted without it: row `i` is held out in fold
/// `fold[i]` (values below `folds`, each fold with >= 2 rows and leaving >= 2 to fit on), to
/// fit a temperature on.
pub fn cross_fitted_logits(
    x: &Tensor,
    y: &[usize],
    classes: usize,
    cfg: &ProbeConfig,
    fold: &[usize],
) -> anyhow::Result<Vec<f32>> {
    let n = y.len();
    let folds = fold.iter().max().map_or(0, |m| m + 1);
    anyhow::ensure!(
        fold.len() == n && folds >= 2,
        "cross-fitting needs a fold for every row and >= 2 folds"
    );
    let mut out = vec![0f32; n * classes];
    for f in 0..folds {
        let (held, fit_rows): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| fold[i] == f);
        anyhow::ensure!(
            held.len() >= 2 && fit_rows.len() >= 2,
            "cross-fitting: fold {f} holds {} of {n} rows",
            held.len()
        );
        let idx = |rows: &[usize]| {
            Tensor::from_slice(&rows.iter().map(|&i| i as i64).collect::<Vec<_>>())
        };
        let fit_y: Vec<usize> = fit_rows.iter().map(|&i| y[i]).collect();
        let probe = Probe::fit(&x.index_select(0, &idx(&fit_rows)), &fit_y, classes, cfg)?;
        let logits = crate::model::to_vec(&probe.logits(&x.index_select(0, &idx(&held))));
        for (r, &i) in held.iter().enumerate() {
            out[i * classes..(i + 1) * classes]
                .copy_from_slice(&logits[r * classes..(r + 1) * classes]);
        }
    }
    Ok(out)
}

/// For labels `y` (class ids below `classes`) and logit adjustment `tau`: the prior the
/// probe's probabilities refer to ([`output_prior`] of the labels' [`class_prior`]) and the
/// per-class weights ([`reweighting`]) that make rows labelled like `y` stand for it.
///
/// [`class_prior`]: onboard::bundle::class_prior
pub fn prior_and_weights(y: &[usize], classes: usize, tau: f64) -> (Vec<f32>, Vec<f32>) {
    let label_prior = onboard::bundle::class_prior(y, classes);
    let prior = output_prior(&label_prior, tau);
    let weights = reweighting(&label_prior, &prior);
    (prior, weights)
}

/// A temperature fitted on cross-fitted logits.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossFit {
    /// The prior the probe's probabilities refer to.
    pub prior: Vec<f32>,
    /// The temperature; `None` when it cannot be fitted.
    pub temperature: Option<f32>,
    /// Mean reweighted negative log-likelihood at temperature 1 and at the fit (with it).
    pub nll: Option<(f64, f64)>,
}

/// The temperature of a probe with settings `cfg` on `x` / `y`, fitted on `fold`-cross-fitted
/// logits with the rows reweighted to the prior the probe's probabilities refer to
/// ([`prior_and_weights`]).
pub fn cross_fitted_temperature(
    x: &Tensor,
    y: &[usize],
    classes: usize,
    cfg: &ProbeConfig,
    fold: &[usize],
) -> anyhow::Result<CrossFit> {
    let held = cross_fitted_logits(x, y, classes, cfg, fold)?;
    let (prior, weights) = prior_and_weights(y, classes, cfg.logit_adjust);
    let w = Some(weights.as_slice());
    let temperature = onboard::bundle::fit_temperature_weighted(&held, classes, y, w);
    let nll = temperature.map(|t| {
        let at = |t: f64| onboard::bundle::nll_at_temperature_weighted(&held, classes, y, t, w);
        (at(1.0), at(f64::from(t)))
    });
    Ok(CrossFit {
        prior,
        temperature,
        nll,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three Gaussian blobs in 8-d, class c centered at 3 e_c.
    fn blobs(n: usize) -> (Tensor, Vec<usize>) {
        tch::manual_seed(3);
        let y: Vec<usize> = (0..n).map(|i| i % 3).collect();
        let mut centers = vec![0f32; n * 8];
        for (i, &c) in y.iter().enumerate() {
            centers[i * 8 + c] = 3.0;
        }
        let x = Tensor::from_slice(&centers).view([n as i64, 8])
            + Tensor::randn([n as i64, 8], (Kind::Float, Device::Cpu));
        (x, y)
    }

    #[test]
    fn separates_blobs_and_folds_into_one_affine_map() {
        let (x, y) = blobs(300);
        let p = Probe::fit(&x, &y, 3, &ProbeConfig::default()).unwrap();
        let logits = p.logits(&x);
        let pred: Vec<i64> = Vec::try_from(logits.argmax(1, false)).unwrap();
        let right = pred
            .iter()
            .zip(&y)
            .filter(|(a, b)| **a as usize == **b)
            .count();
        assert!(right > 270, "{right} of 300");
        let (w, b) = p.folded();
        let w = Tensor::from_slice(&w).view([3, 8]);
        let direct = x.matmul(&w.tr()) + Tensor::from_slice(&b);
        let diff = f64::try_from((direct - logits).abs().max()).unwrap();
        assert!(diff < 1e-3, "folded map differs by {diff}");
    }

    #[test]
    fn output_prior_flattens_with_the_adjustment() {
        let p = [0.7f32, 0.2, 0.1];
        let same = output_prior(&p, 0.0);
        assert!(
            same.iter().zip(p).all(|(a, b)| (a - b).abs() < 1e-6),
            "{same:?}"
        );
        let flat = output_prior(&p, 1.0);
        assert!(
            flat.iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-6),
            "{flat:?}"
        );
        let half = output_prior(&p, 0.5);
        assert!(half[0] < 0.7 && half[2] > 0.1 && (half.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let w = reweighting(&p, &flat);
        assert!((w[2] * 0.1 - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn cross_fitted_logits_cover_every_row() {
        let (x, y) = blobs(60);
        let cfg = ProbeConfig {
            steps: 50,
            ..Default::default()
        };
        let l = cross_fitted_logits(&x, &y, 3, &cfg, &round_robin_folds(60, 3)).unwrap();
        assert_eq!(l.len(), 180);
        assert!(l.chunks(3).all(|r| r.iter().any(|v| *v != 0.0)));
        assert!(cross_fitted_logits(&x, &y, 3, &cfg, &round_robin_folds(60, 1)).is_err());
        assert!(cross_fitted_logits(&x, &y, 3, &cfg, &[0; 3]).is_err());
        let keys: Vec<String> = (0..60).map(|i| format!("{:04}", (i * 37) % 60)).collect();
        let b = cross_fitted_logits(&x, &y, 3, &cfg, &blocked_folds(&keys, 3)).unwrap();
        assert_eq!(b.len(), 180);
    }

    #[test]
    fn blocked_folds_are_contiguous_in_key_order() {
        let keys = ["c", "a", "e", "b", "d", "f"];
        // Sorted: a b c d e f -> folds 0 0 1 1 2 2.
        assert_eq!(blocked_folds(&keys, 3), vec![1, 0, 2, 0, 1, 2]);
        assert_eq!(round_robin_folds(5, 2), vec![0, 1, 0, 1, 0]);
    }
}
