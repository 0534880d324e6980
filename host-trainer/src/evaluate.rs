//! Inference over image sets (under `no_grad`) and the metrics the trainer reports.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use onboard::metrics;

use crate::model::Forward;

/// Batch size for inference.
pub const EVAL_BATCH: i64 = 128;

/// Runs `module` in eval mode over `images` (`[n, 3, h, w]`, CPU) in batches; returns the
/// concatenated outputs `[n, d]` on the CPU.
pub fn infer(module: &(impl Forward + ?Sized), images: &Tensor, device: Device) -> Tensor {
    tch::no_grad(|| {
        let n = images.size()[0];
        let mut outs = Vec::new();
        let mut start = 0;
        while start < n {
            let len = EVAL_BATCH.min(n - start);
            let x = images.narrow(0, start, len).to_device(device);
            outs.push(module.forward(&x).to_device(Device::Cpu));
            start += len;
        }
        Tensor::cat(&outs, 0)
    })
}

/// Flat row-major latents `[n, d]` of `encoder` on `images`, L2-normalized when asked.
pub fn latents(
    encoder: &(impl Forward + ?Sized),
    images: &Tensor,
    device: Device,
    l2: bool,
) -> (Vec<f32>, usize) {
    let z = infer(encoder, images, device);
    let d = z.size()[1] as usize;
    let mut flat = crate::model::to_vec(&z);
    if l2 {
        for row in flat.chunks_exact_mut(d) {
            onboard::pipeline::l2_normalize(row);
        }
    }
    (flat, d)
}

/// Arg-max class of each image.
pub fn predict(
    classifier: &(impl Forward + ?Sized),
    images: &Tensor,
    device: Device,
) -> Vec<usize> {
    let logits = infer(classifier, images, device);
    let am = logits.argmax(1, false);
    Vec::<i64>::try_from(&am)
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.max(0) as usize)
        .collect()
}

/// Classification metrics on a labeled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    /// Images evaluated.
    pub images: usize,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Macro-averaged F1.
    pub macro_f1: f64,
    /// Balanced accuracy: mean recall over the classes present (top-1 under a uniform prior).
    #[serde(default)]
    pub balanced_accuracy: f64,
    /// Recall per class name (classes present in the truth).
    pub per_class_recall: BTreeMap<String, f64>,
}

/// Clustering metrics on a labeled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterMetrics {
    /// Number of clusters.
    pub k: usize,
    /// One-to-one (Hungarian) accuracy.
    pub hungarian_acc: f64,
    /// Many-to-one (majority) accuracy.
    pub majority_acc: f64,
    /// Normalized mutual information (arithmetic mean normalization).
    pub nmi: f64,
    /// Adjusted Rand index.
    pub ari: f64,
}

/// Classification metrics of `pred` against `truth`.
pub fn classification(
    truth: &[usize],
    pred: &[usize],
    classes: &[String],
) -> ClassificationMetrics {
    let reports = metrics::class_reports(truth, pred, classes.len());
    ClassificationMetrics {
        images: truth.len(),
        top1: metrics::accuracy(truth, pred),
        macro_f1: metrics::macro_f1(&reports),
        balanced_accuracy: metrics::balanced_accuracy(&reports),
        per_class_recall: reports
            .iter()
            .filter(|r| r.support > 0)
            .map(|r| (classes[r.class].clone(), r.recall))
            .collect(),
    }
}

/// Clustering metrics of `clusters` against `truth`.
pub fn clustering(truth: &[usize], clusters: &[usize], k: usize) -> ClusterMetrics {
    ClusterMetrics {
        k,
        hungarian_acc: metrics::hungarian_accuracy(truth, clusters),
        majority_acc: metrics::majority_accuracy(truth, clusters),
        nmi: metrics::nmi(truth, clusters),
        ari: metrics::ari(truth, clusters),
    }
}

/// Largest absolute difference between tch outputs and the exported graph run by tract.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Parity {
    /// Images compared.
    pub images: usize,
    /// Max |tch - tract| over all outputs.
    pub max_abs_diff: f32,
}

/// Runs the ONNX graph at `onnx` with tract on the first `n` inputs (`[N, ...]`: images, or
/// feature vectors for a head graph) and compares with the tch module's outputs.
pub fn parity(
    module: &(impl Forward + ?Sized),
    onnx: &Path,
    inputs: &Tensor,
    n: usize,
    device: Device,
) -> anyhow::Result<Parity> {
    let n = n.min(inputs.size()[0] as usize);
    let mut shape: Vec<usize> = inputs.size().iter().map(|&d| d as usize).collect();
    shape[0] = 1;
    let per: usize = shape.iter().product();
    let subset = inputs.narrow(0, 0, n as i64);
    let reference = infer(module, &subset, device);
    let d = reference.size()[1] as usize;
    let reference = crate::model::to_vec(&reference);
    let mut graph = onboard::runtime::Graph::load_shaped(onnx, &shape, d)?;
    let inputs = crate::model::to_vec(&subset);
    let mut out = vec![0f32; d];
    let mut max = 0f32;
    for i in 0..n {
        graph.run_into(&inputs[i * per..(i + 1) * per], &mut out)?;
        for (a, b) in out.iter().zip(&reference[i * d..(i + 1) * d]) {
            let diff = (a - b).abs();
            anyhow::ensure!(diff.is_finite(), "{}: non-finite output", onnx.display());
            max = max.max(diff);
        }
    }
    Ok(Parity {
        images: n,
        max_abs_diff: max,
    })
}
