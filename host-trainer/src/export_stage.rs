//! The export stage: writes the bundle's f32 encoder and classifier graphs into the staging
//! folder and checks each against its tch module with tract (parity), refusing a bundle whose
//! graphs disagree.

use onboard::bundle::{GraphEntry, GraphInput, GraphRole};
use tch::{Device, Tensor};

use crate::bundle_writer::Staging;
use crate::encoders::{ClusterEncoder, Source};
use crate::evaluate::{self, Parity};
use crate::trained::Trained;
use crate::whiten::Whitening;

/// What the export stage wrote and measured.
#[derive(Debug)]
pub struct Exported {
    /// The encoder graph's manifest entry (image -> clustering features `[1, dim]`).
    pub encoder: GraphEntry,
    /// The classifier graph's manifest entry (image or encoder output -> logits).
    pub classifier: GraphEntry,
    /// tch vs tract on the encoder.
    pub encoder_parity: Parity,
    /// tch vs tract on the classifier.
    pub classifier_parity: Parity,
    /// Graph files and their sizes in bytes.
    pub files: Vec<(String, u64)>,
}

/// How the graphs are checked.
#[derive(Debug, Clone, Copy)]
pub struct ParityCheck<'a> {
    /// Images `[m, 3, n, n]` the graphs are compared on (the first `count`).
    pub images: &'a Tensor,
    /// Images compared.
    pub count: usize,
    /// Largest allowed |tch - tract|.
    pub tolerance: f32,
}

/// Writes the encoder (`source`, then `whitening` when set; output `[1, dim]`) and the
/// classifier for an `n x n` input. When the clusters use the classifier's own unwhitened
/// features, the classifier graph is only its head reading the encoder's output, so the
/// backbone runs once per image on board.
#[allow(clippy::too_many_arguments)]
pub fn export_graphs(
    staging: &Staging,
    trained: &Trained,
    source: &Source<'_>,
    whitening: Option<&Whitening>,
    dim: usize,
    n: i64,
    classes: usize,
    check: ParityCheck<'_>,
    device: Device,
) -> anyhow::Result<Exported> {
    let image_shape = [1, 3, n, n];
    let mut enc_ops = source.ops();
    enc_ops.extend(whitening.map(Whitening::op));
    let encoder = staging.write_graph(
        GraphRole::Encoder,
        &enc_ops,
        (GraphInput::Image, &image_shape),
        dim,
        match source.kind() {
            ClusterEncoder::Classifier => "classifier trunk: image -> pooled features",
            _ => "autoencoder encoder: image -> latent",
        },
    )?;
    let shared = source.kind() == ClusterEncoder::Classifier && whitening.is_none();
    let (head_ops, head) = trained.head();
    let classifier = if shared {
        staging.write_graph(
            GraphRole::Classifier,
            &head_ops,
            (GraphInput::Latent, &[1, dim as i64]),
            classes,
            "classifier head: encoder output -> class logits",
        )?
    } else {
        staging.write_graph(
            GraphRole::Classifier,
            &trained.ops(n),
            (GraphInput::Image, &image_shape),
            classes,
            "classifier: image -> class logits",
        )?
    };
    let (images, count) = (check.images, check.count);
    let enc_file = staging.dir.join(&encoder.file);
    let encoder_parity = match whitening {
        Some(w) => evaluate::parity(&w.after(source.module()), &enc_file, images, count, device)?,
        None => evaluate::parity(source.module(), &enc_file, images, count, device)?,
    };
    let cls_file = staging.dir.join(&classifier.file);
    let classifier_parity = if shared {
        let m = (count as i64).min(images.size()[0]);
        let features = evaluate::infer(source.module(), &images.narrow(0, 0, m), device);
        evaluate::parity(head.as_ref(), &cls_file, &features, count, device)?
    } else {
        evaluate::parity(trained.module(), &cls_file, images, count, device)?
    };
    for (what, p) in [
        ("encoder", &encoder_parity),
        ("classifier", &classifier_parity),
    ] {
        anyhow::ensure!(
            p.max_abs_diff <= check.tolerance,
            "{what}: tch and tract outputs differ by {:.3e} (> {:.0e}); the exported graph is wrong, the bundle was not written",
            p.max_abs_diff,
            check.tolerance
        );
    }
    let files = [&encoder, &classifier]
        .iter()
        .map(|g| {
            let len = std::fs::metadata(staging.dir.join(&g.file)).map_or(0, |m| m.len());
            (g.file.clone(), len)
        })
        .collect();
    Ok(Exported {
        encoder,
        classifier,
        encoder_parity,
        classifier_parity,
        files,
    })
}
