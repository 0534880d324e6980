//! What a bundle says about its classifier's probabilities (temperature, training class prior)
//! and how `onboard` adapts to its own image stream (class-prior EM and sequential k-means
//! settings). Both sections are optional in a format-v1 manifest; see each type for what their
//! absence means.

use serde::{Deserialize, Serialize};

/// Most recent posteriors the class-prior window can hold ([`Adaptation::prior_window`] <=
/// this).
pub const PRIOR_WINDOW_CAPACITY: usize = 1024;

/// How the classifier's logits become calibrated probabilities, and the class prior those
/// probabilities assume. A bundle without it runs with temperature 1 and cannot adapt its
/// class prior (centroid adaptation still runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Softmax temperature (finite, > 0): probabilities are `softmax(logits / temperature)`.
    pub temperature: f32,
    /// Class frequencies of the training labels (`pi_tr`), one per class in class-id order,
    /// each > 0, summing to 1.
    pub class_prior: Vec<f32>,
    /// Labeled split the temperature was fitted on (held out of training), or `"none"` when
    /// the temperature was not fitted.
    pub fitted_on: String,
}

impl Calibration {
    /// Checks the section against a bundle of `classes` classes; returns what is wrong.
    pub fn validate(&self, classes: usize) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(format!(
                "calibration.temperature {} must be finite and > 0",
                self.temperature
            ));
        }
        if self.class_prior.len() != classes {
            return Err(format!(
                "calibration.class_prior has {} values for {classes} classes",
                self.class_prior.len()
            ));
        }
        if self
            .class_prior
            .iter()
            .any(|p| !(p.is_finite() && *p > 0.0))
        {
            return Err("calibration.class_prior values must be finite and > 0".into());
        }
        let sum: f32 = self.class_prior.iter().sum();
        if (sum - 1.0).abs() > 1e-3 {
            return Err(format!("calibration.class_prior sums to {sum}, not 1"));
        }
        Ok(())
    }
}

/// How `onboard` adapts to the images it sees (`--adapt on`). A manifest without the section
/// gets [`Adaptation::default`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adaptation {
    /// Whether commands adapt unless given `--adapt off`.
    pub default_on: bool,
    /// Recent posteriors the class-prior EM runs over (1..=[`PRIOR_WINDOW_CAPACITY`]).
    pub prior_window: usize,
    /// Smallest class prior, as a fraction of the uniform prior (in (0, 1)).
    pub prior_floor: f32,
    /// Most EM iterations per image (>= 1).
    pub prior_max_iterations: u32,
    /// EM stops once no prior moves by more than this (finite, > 0).
    pub prior_tolerance: f32,
    /// Images each ground centroid counts as already holding when sequential k-means starts
    /// (finite, >= 1): the larger, the slower the centroids move.
    pub centroid_prior_count: f32,
}

impl Default for Adaptation {
    fn default() -> Self {
        Self {
            default_on: true,
            prior_window: 200,
            prior_floor: 0.01,
            prior_max_iterations: 100,
            prior_tolerance: 1e-5,
            centroid_prior_count: 50.0,
        }
    }
}

impl Adaptation {
    /// Checks every setting's range; returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.prior_window == 0 || self.prior_window > PRIOR_WINDOW_CAPACITY {
            return Err(format!(
                "adaptation.prior_window {} out of range 1..={PRIOR_WINDOW_CAPACITY}",
                self.prior_window
            ));
        }
        if !(self.prior_floor > 0.0 && self.prior_floor < 1.0) {
            return Err(format!(
                "adaptation.prior_floor {} must be in (0, 1)",
                self.prior_floor
            ));
        }
        if self.prior_max_iterations == 0 {
            return Err("adaptation.prior_max_iterations must be >= 1".into());
        }
        if !(self.prior_tolerance.is_finite() && self.prior_tolerance > 0.0) {
            return Err(format!(
                "adaptation.prior_tolerance {} must be finite and > 0",
                self.prior_tolerance
            ));
        }
        if !(self.centroid_prior_count.is_finite() && self.centroid_prior_count >= 1.0) {
            return Err(format!(
                "adaptation.centroid_prior_count {} must be finite and >= 1",
                self.centroid_prior_count
            ));
        }
        Ok(())
    }
}

/// The training class prior from training labels (class ids below `classes`): each class's
/// count plus one half (so a class absent from the labels keeps a small prior), normalized.
/// Labels at or above `classes` are ignored.
pub fn class_prior(labels: &[usize], classes: usize) -> Vec<f32> {
    let mut counts = vec![0.5f64; classes];
    for &l in labels {
        if let Some(c) = counts.get_mut(l) {
            *c += 1.0;
        }
    }
    let total: f64 = counts.iter().sum();
    counts.iter().map(|c| (c / total) as f32).collect()
}

/// Mean negative log-likelihood of `truth` under `softmax(logits / t)`; `logits` is row-major
/// `[truth.len(), classes]`.
pub fn nll_at_temperature(logits: &[f32], classes: usize, truth: &[usize], t: f64) -> f64 {
    nll_at_temperature_weighted(logits, classes, truth, t, None)
}

/// As [`nll_at_temperature`], each row weighted by `class_weights[truth]` (weighted mean);
/// `None` weighs every row 1. Every label must be below `class_weights.len()`.
pub fn nll_at_temperature_weighted(
    logits: &[f32],
    classes: usize,
    truth: &[usize],
    t: f64,
    class_weights: Option<&[f32]>,
) -> f64 {
    let (mut total, mut mass) = (0.0f64, 0.0f64);
    for (row, &y) in logits.chunks_exact(classes).zip(truth) {
        let w = class_weights.map_or(1.0, |cw| cw[y] as f64);
        let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
        let log_sum = row
            .iter()
            .map(|v| ((*v as f64 - max) / t).exp())
            .sum::<f64>()
            .ln();
        total += w * (log_sum - (row[y] as f64 - max) / t);
        mass += w;
    }
    if mass > 0.0 {
        total / mass
    } else {
        0.0
    }
}

/// The softmax temperature in `[0.05, 20]` that minimizes the mean negative log-likelihood of
/// `truth` (temperature scaling, Guo et al. 2017), by golden-section search on `ln t` (the
/// likelihood is unimodal in it). `logits` is row-major `[truth.len(), classes]`; every label
/// must be below `classes`. Returns `None` for no rows, mismatched lengths, an out-of-range
/// label or a non-finite logit.
pub fn fit_temperature(logits: &[f32], classes: usize, truth: &[usize]) -> Option<f32> {
    fit_temperature_weighted(logits, classes, truth, None)
}

/// As [`fit_temperature`], with the negative log-likelihood weighted per row by
/// `class_weights[truth]` (`classes` finite non-negative values, not all of the labels' zero):
/// with weights `q / p` the held-out rows, labelled with class frequencies `p`, stand for a
/// population with class prior `q`. This calibrates a classifier whose probabilities refer to
/// prior `q` (e.g. a logit-adjusted one, which refers to a flatter prior than its training
/// labels). Returns `None` as [`fit_temperature`] does, and for bad weights.
pub fn fit_temperature_weighted(
    logits: &[f32],
    classes: usize,
    truth: &[usize],
    class_weights: Option<&[f32]>,
) -> Option<f32> {
    if truth.is_empty()
        || classes == 0
        || logits.len() != truth.len() * classes
        || truth.iter().any(|&y| y >= classes)
        || logits.iter().any(|v| !v.is_finite())
    {
        return None;
    }
    if let Some(cw) = class_weights {
        if cw.len() != classes
            || cw.iter().any(|w| !w.is_finite() || *w < 0.0)
            || truth.iter().all(|&y| cw[y] == 0.0)
        {
            return None;
        }
    }
    let f = |u: f64| nll_at_temperature_weighted(logits, classes, truth, u.exp(), class_weights);
    let (mut a, mut b) = (0.05f64.ln(), 20.0f64.ln());
    let g = (5.0f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..80 {
        if fc < fd {
            (b, d, fd) = (d, c, fc);
            c = b - g * (b - a);
            fc = f(c);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    Some(((a + b) / 2.0).exp() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_prior_counts_with_half_a_pseudo_count() {
        let p = class_prior(&[0, 0, 0, 1, 7], 3);
        // counts 3.5, 1.5, 0.5 of 5.5; label 7 ignored.
        let want = [3.5 / 5.5, 1.5 / 5.5, 0.5 / 5.5];
        for (g, w) in p.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{p:?}");
        }
    }

    #[test]
    fn temperature_recovers_a_planted_one() {
        // Logits drawn as true_t * z where softmax(z) is the calibrated model: the fitted
        // temperature undoes the scaling.
        let classes = 3;
        let mut logits = Vec::new();
        let mut truth = Vec::new();
        let z = [[2.0f32, 0.0, -1.0], [0.5, 0.3, 0.0], [-1.0, 1.5, 0.2]];
        // Labels drawn in proportion to softmax(z): per row, counts out of 100.
        for row in z {
            let e: Vec<f64> = row.iter().map(|v| (*v as f64).exp()).collect();
            let s: f64 = e.iter().sum();
            for (y, ev) in e.iter().enumerate() {
                let n = (100.0 * ev / s).round() as usize;
                for _ in 0..n {
                    logits.extend(row.iter().map(|v| v * 3.0));
                    truth.push(y);
                }
            }
        }
        let t = fit_temperature(&logits, classes, &truth).unwrap();
        assert!((t - 3.0).abs() < 0.1, "t = {t}");
        let at = |t: f64| nll_at_temperature(&logits, classes, &truth, t);
        assert!(at(t as f64) <= at(1.0) && at(t as f64) <= at(5.0));
    }

    #[test]
    fn weighted_temperature_equals_the_plain_one_on_a_duplicated_class() {
        // Weight 2 on class 0 is the same as every class-0 row appearing twice.
        let logits = [2.0f32, 0.0, 0.5, 0.4, -1.0, 1.0, 1.5, -0.5];
        let truth = [0, 1, 1, 0];
        let w = fit_temperature_weighted(&logits, 2, &truth, Some(&[2.0, 1.0])).unwrap();
        let mut dl = logits.to_vec();
        dl.extend_from_slice(&logits[0..2]);
        dl.extend_from_slice(&logits[6..8]);
        let plain = fit_temperature(&dl, 2, &[0, 1, 1, 0, 0, 0]).unwrap();
        assert!((w - plain).abs() < 1e-4, "{w} vs {plain}");
        assert_eq!(
            fit_temperature_weighted(&logits, 2, &truth, Some(&[1.0])),
            None
        );
        assert_eq!(
            fit_temperature_weighted(&logits, 2, &truth, Some(&[0.0, 0.0])),
            None
        );
        assert_eq!(
            fit_temperature_weighted(&logits, 2, &truth, Some(&[-1.0, 1.0])),
            None
        );
    }

    #[test]
    fn temperature_refuses_bad_input() {
        assert_eq!(fit_temperature(&[], 3, &[]), None);
        assert_eq!(fit_temperature(&[1.0, 2.0], 3, &[0]), None);
        assert_eq!(fit_temperature(&[1.0, 2.0, 3.0], 3, &[3]), None);
        assert_eq!(fit_temperature(&[1.0, f32::NAN, 3.0], 3, &[0]), None);
    }

    #[test]
    fn settings_out_of_range_are_named() {
        assert!(Adaptation::default().validate().is_ok());
        let bad = Adaptation {
            prior_window: PRIOR_WINDOW_CAPACITY + 1,
            ..Adaptation::default()
        };
        assert!(bad.validate().unwrap_err().contains("prior_window"));
        let bad = Adaptation {
            centroid_prior_count: f32::NAN,
            ..Adaptation::default()
        };
        assert!(bad.validate().unwrap_err().contains("centroid_prior_count"));
        let c = Calibration {
            temperature: 1.0,
            class_prior: vec![0.5, 0.5],
            fitted_on: "none".into(),
        };
        assert!(c.validate(2).is_ok());
        assert!(c.validate(3).unwrap_err().contains("3 classes"));
        let zero = Calibration {
            class_prior: vec![1.0, 0.0],
            ..c.clone()
        };
        assert!(zero.validate(2).is_err());
        let hot = Calibration {
            temperature: 0.0,
            ..c
        };
        assert!(hot.validate(2).unwrap_err().contains("temperature"));
    }
}
