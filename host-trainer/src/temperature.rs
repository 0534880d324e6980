//! Probability calibration of a bundle's classifier for on-board class-prior adaptation: the
//! training class prior (from the bundle's training split labels) and a softmax temperature
//! fitted on a held-out labeled split (temperature scaling), written into the manifest's
//! `calibration` section. EM prior adaptation (Saerens et al. 2002) needs both: posteriors
//! that are calibrated, and the prior they were trained under.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use onboard::bundle::{class_prior, fit_temperature, nll_at_temperature, Bundle, Calibration};

/// What `host-trainer calibrate` does.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// Bundle folder (its manifest is rewritten atomically).
    pub bundle: PathBuf,
    /// MSL dataset root (holds the split files and calibrated/).
    pub data: PathBuf,
    /// Held-out labeled split for the temperature; `None` keeps temperature 1.
    pub held_out: Option<String>,
    /// Use only the first this many held-out images (all when `None`).
    pub limit: Option<usize>,
}

/// What was written, with the held-out fit's before/after negative log-likelihood.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibrateReport {
    /// The section written into the manifest.
    pub temperature: f32,
    /// Training class prior, by class name.
    pub class_prior: Vec<(String, f32)>,
    /// Training labels counted.
    pub train_labels: usize,
    /// Held-out images the temperature was fitted on (0 without a held-out split).
    pub held_out_images: usize,
    /// Held-out images skipped (unreadable).
    pub held_out_skipped: usize,
    /// Mean negative log-likelihood on the held-out images at temperature 1 and at the fit.
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
    let prior = class_prior(&train, classes);
    let mut report = CalibrateReport {
        temperature: 1.0,
        class_prior: m
            .classes
            .iter()
            .map(|c| c.name.clone())
            .zip(prior.iter().copied())
            .collect(),
        train_labels: train.len(),
        held_out_images: 0,
        held_out_skipped: 0,
        nll_t1: None,
        nll_fitted: None,
    };
    if let Some(split) = &opts.held_out {
        if m.provenance.train_splits.contains(split) {
            bail!("{split}: the bundle was trained on this split, so it is not held out; pass another --held-out split or none");
        }
        let (logits, truth, skipped) = held_out_logits(bundle, &opts.data, split, opts.limit)?;
        let t = fit_temperature(&logits, classes, &truth)
            .with_context(|| format!("{split}: cannot fit a temperature (no usable images)"))?;
        report.temperature = t;
        report.held_out_images = truth.len();
        report.held_out_skipped = skipped;
        report.nll_t1 = Some(nll_at_temperature(&logits, classes, &truth, 1.0));
        report.nll_fitted = Some(nll_at_temperature(&logits, classes, &truth, f64::from(t)));
    }
    let mut manifest = m;
    manifest.calibration = Some(Calibration {
        temperature: report.temperature,
        class_prior: prior,
        fitted_on: opts.held_out.clone().unwrap_or_else(|| "none".into()),
    });
    manifest
        .validate()
        .map_err(|e| anyhow::anyhow!("refusing to write an invalid manifest: {e}"))?;
    manifest
        .write(&opts.bundle)
        .with_context(|| format!("{}: cannot write the manifest", opts.bundle.display()))?;
    Ok(report)
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
/// images for (the first `limit` images of) a held-out split, through the onboard pipeline at the default precision.
fn held_out_logits(
    bundle: Bundle,
    data: &Path,
    split: &str,
    limit: Option<usize>,
) -> anyhow::Result<(Vec<f32>, Vec<usize>, usize)> {
    let classes = bundle.manifest.classes.len();
    let mut items = split_items(data, split, classes)?;
    items.truncate(limit.unwrap_or(usize::MAX));
    let mut a = onboard::pipeline::Analyzer::new(bundle)?;
    let (mut logits, mut truth, mut skipped) = (Vec::new(), Vec::new(), 0usize);
    let bar = crate::progress::bar(items.len() as u64, "held-out logits");
    for item in &items {
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
