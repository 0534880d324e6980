//! Probability calibration of a bundle's classifier for on-board class-prior adaptation: the
//! class prior its probabilities refer to (the training labels' prior, flattened to
//! `prior^(1 - tau)` for a probe trained with logit adjustment `tau`) and a softmax temperature
//! fitted on a held-out labeled split (temperature scaling; the held-out rows reweighted to
//! that prior), written into the manifest's `calibration` section. EM prior adaptation
//! (Saerens et al. 2002) needs both: posteriors that are calibrated, and the prior they refer
//! to.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use onboard::bundle::{
    fit_temperature_weighted, nll_at_temperature_weighted, Bundle, Calibration, Manifest,
};

/// What `host-trainer calibrate` does.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// Bundle folder (its manifest is rewritten atomically).
    pub bundle: PathBuf,
    /// MSL dataset root (holds the split files and calibrated/).
    pub data: PathBuf,
    /// Held-out labeled images for the temperature.
    pub held_out: HeldOut,
    /// Use only the first this many held-out images (all when `None`).
    pub limit: Option<usize>,
}

/// The labeled images a temperature is fitted on, none of which the classifier trained on.
#[derive(Debug, Clone)]
pub enum HeldOut {
    /// No held-out images: temperature 1.
    None,
    /// A split file relative to the dataset root (not one of the bundle's training splits).
    Split(String),
    /// Fitted by the trainer on cross-fitted logits of the training images themselves (the
    /// probe recipe); nothing is held out.
    CrossFitted(CrossFitted),
    /// A slice of the training splits that the trainer kept out of the classifier's training,
    /// named for the manifest's `fitted_on`.
    Slice {
        /// Description, e.g. `every 10th image of the training splits`.
        name: String,
        /// The images (paths relative to the dataset root, or absolute).
        items: Vec<onboard::labels::Labeled>,
    },
}

/// A temperature the trainer fitted on cross-fitted training logits.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossFitted {
    /// What it was fitted on, for the manifest's `fitted_on`.
    pub name: String,
    /// The fitted temperature.
    pub temperature: f32,
    /// Images whose cross-fitted logits it was fitted on.
    pub images: usize,
    /// Mean (reweighted) negative log-likelihood at temperature 1 and at the fit.
    pub nll: (f64, f64),
}

impl HeldOut {
    /// `Split(name)`, or `None` for `None`.
    pub fn split(name: Option<String>) -> Self {
        name.map_or(HeldOut::None, HeldOut::Split)
    }

    fn name(&self) -> String {
        match self {
            HeldOut::None => "none".into(),
            HeldOut::Split(s) => s.clone(),
            HeldOut::Slice { name, .. } => name.clone(),
            HeldOut::CrossFitted(c) => c.name.clone(),
        }
    }
}

/// What was written, with the held-out fit's before/after negative log-likelihood.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibrateReport {
    /// The section written into the manifest.
    pub temperature: f32,
    /// The class prior the classifier's probabilities refer to, by class name.
    pub class_prior: Vec<(String, f32)>,
    /// The classifier's logit adjustment (0 unless it is a logit-adjusted probe).
    #[serde(default)]
    pub logit_adjust: f64,
    /// Training labels counted.
    pub train_labels: usize,
    /// What the temperature was fitted on (the manifest's `fitted_on`; `none` when not fitted).
    #[serde(default)]
    pub fitted_on: String,
    /// Held-out images the temperature was fitted on (0 without a held-out split).
    pub held_out_images: usize,
    /// Held-out images skipped (unreadable).
    pub held_out_skipped: usize,
    /// Mean negative log-likelihood on the held-out images (reweighted to `class_prior`) at
    /// temperature 1 and at the fit.
    pub nll_t1: Option<f64>,
    /// See `nll_t1`.
    pub nll_fitted: Option<f64>,
}

/// Computes the bundle's calibration and writes it into its manifest.
pub fn calibrate(opts: &CalibrateOptions) -> anyhow::Result<CalibrateReport> {
    let bundle = Bundle::load(&opts.bundle)
        .with_context(|| format!("loading bundle {}", opts.bundle.display()))?;
    let m = bundle.manifest.clone();
    let classes = m.classes.len();
    let mut train = Vec::new();
    for split in &m.provenance.train_splits {
        train.extend(
            split_items(&opts.data, split, classes)?
                .iter()
                .map(|l| l.class),
        );
    }
    if train.is_empty() {
        bail!(
            "{}: the bundle's training splits hold no labels; pass the dataset root it was trained on (--data)",
            opts.bundle.display()
        );
    }
    let tau = logit_adjust(&m);
    let (prior, weights) = crate::probe::prior_and_weights(&train, classes, tau);
    let mut report = CalibrateReport {
        temperature: 1.0,
        class_prior: m
            .classes
            .iter()
            .map(|c| c.name.clone())
            .zip(prior.iter().copied())
            .collect(),
        train_labels: train.len(),
        logit_adjust: tau,
        fitted_on: opts.held_out.name(),
        held_out_images: 0,
        held_out_skipped: 0,
        nll_t1: None,
        nll_fitted: None,
    };
    let items = match &opts.held_out {
        HeldOut::None => None,
        HeldOut::CrossFitted(c) => {
            report.temperature = c.temperature;
            report.held_out_images = c.images;
            report.nll_t1 = Some(c.nll.0);
            report.nll_fitted = Some(c.nll.1);
            None
        }
        HeldOut::Split(split) => {
            if m.provenance.train_splits.contains(split) {
                bail!("{split}: the bundle was trained on this split, so it is not held out; pass another --held-out split or none");
            }
            Some(split_items(&opts.data, split, classes)?)
        }
        HeldOut::Slice { items, .. } => Some(items.clone()),
    };
    let name = opts.held_out.name();
    if let Some(mut items) = items {
        items.truncate(opts.limit.unwrap_or(usize::MAX));
        let (logits, truth, skipped) = held_out_logits(bundle, &opts.data, &items)?;
        let w = Some(weights.as_slice());
        let t = fit_temperature_weighted(&logits, classes, &truth, w)
            .with_context(|| format!("{name}: cannot fit a temperature (no usable images)"))?;
        report.temperature = t;
        report.held_out_images = truth.len();
        report.held_out_skipped = skipped;
        let nll = |t: f64| nll_at_temperature_weighted(&logits, classes, &truth, t, w);
        report.nll_t1 = Some(nll(1.0));
        report.nll_fitted = Some(nll(f64::from(t)));
    }
    let mut manifest = m;
    manifest.calibration = Some(Calibration {
        temperature: report.temperature,
        class_prior: prior,
        fitted_on: report.fitted_on.clone(),
    });
    manifest
        .validate()
        .map_err(|e| anyhow::anyhow!("refusing to write an invalid manifest: {e}"))?;
    manifest
        .write(&opts.bundle)
        .with_context(|| format!("{}: cannot write the manifest", opts.bundle.display()))?;
    Ok(report)
}

/// The logit adjustment of the bundle's classifier, read from its training config: the probe
/// recipe's or the semi-supervised classifier's `logit_adjust`, 0 for the small CNN.
fn logit_adjust(m: &Manifest) -> f64 {
    serde_json::from_value::<crate::config::TrainConfig>(m.provenance.config.clone())
        .ok()
        .map_or(0.0, |c| c.logit_adjust())
}

/// The items of a split file (lines `calibrated/NAME.JPG CLASS_ID`), every class id checked
/// against the bundle's classes.
fn split_items(
    data: &Path,
    split: &str,
    classes: usize,
) -> anyhow::Result<Vec<onboard::labels::Labeled>> {
    let path = data.join(split);
    let items = onboard::labels::read_labels(&path).with_context(|| {
        format!(
            "{}: cannot read the split (pass --data ROOT)",
            path.display()
        )
    })?;
    if let Some(l) = items.iter().find(|l| l.class >= classes) {
        bail!(
            "{}: class id {} of {} is outside the bundle's {classes} classes",
            path.display(),
            l.class,
            l.file
        );
    }
    Ok(items)
}

/// Raw classifier logits (row-major `[images, classes]`), labels and the count of skipped
/// images for held-out `items`, through the onboard pipeline at the default precision.
fn held_out_logits(
    bundle: Bundle,
    data: &Path,
    items: &[onboard::labels::Labeled],
) -> anyhow::Result<(Vec<f32>, Vec<usize>, usize)> {
    let mut a = onboard::pipeline::Analyzer::new(bundle)?;
    let (mut logits, mut truth, mut skipped) = (Vec::new(), Vec::new(), 0usize);
    let bar = crate::progress::bar(items.len() as u64, "held-out logits");
    for item in items {
        bar.inc(1);
        let ok = a.load_input(&data.join(&item.file)).is_ok()
            && a.encode().is_ok()
            && a.run_classifier().is_ok()
            && a.logits().iter().all(|v| v.is_finite());
        if ok {
            logits.extend_from_slice(a.logits());
            truth.push(item.class);
        } else {
            skipped += 1;
        }
    }
    bar.finish_and_clear();
    Ok((logits, truth, skipped))
}
