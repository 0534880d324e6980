//! The `train` command: data -> autoencoder -> k-means -> classifier -> ONNX bundle ->
//! evaluation and parity, with weights and config saved in a run folder.

use std::path::{Path, PathBuf};

use anyhow::Context;
use onboard::bundle::{
    ClassEntry, Clustering, DistanceStats, GraphInput, GraphRole, Manifest, Precision, Provenance,
    FORMAT_VERSION,
};
use tch::nn;

use crate::bundle_writer::Staging;
use crate::cluster::{self, KMeansConfig};
use crate::config::TrainConfig;
use crate::data::{self, ImageSet};
use crate::device::{self, DeviceChoice};
use crate::encoders::{self, ClusterEncoder, Source};
use crate::evaluate;
use crate::figures;
use crate::model::Autoencoder;
use crate::provenance::{machine, source_commit};
use crate::report::{self, RunReport};
use crate::train::{self, save_weights};
use crate::trained;
use crate::whiten::Whitening;

/// Inputs of a training run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// MSL dataset root.
    pub data: PathBuf,
    /// Labeled training split files, relative to `data`.
    pub train_splits: Vec<String>,
    /// Validation split file relative to `data`, if any.
    pub val_split: Option<String>,
    /// Extra folders of unlabeled images for the autoencoder.
    pub unlabeled: Vec<PathBuf>,
    /// ImageNet EfficientNet-Lite0 weights (safetensors), for the semi-supervised classifier.
    pub pretrained: Option<PathBuf>,
    /// Bundle destination folder (its name is the bundle name).
    pub out: PathBuf,
    /// Run folder for weights, configs and metrics.
    pub work: PathBuf,
    /// Device choice.
    pub device: DeviceChoice,
    /// Configuration.
    pub config: TrainConfig,
    /// Command line recorded in the provenance.
    pub command: String,
    /// A protocol report (`host-trainer protocol --out`) holding the probe recipe's row: its
    /// figures go into the report and the model card.
    pub protocol: Option<PathBuf>,
}

/// Confusion matrix, cluster-class table and cluster montage of the validation set, written
/// into the run folder (the montage holds dataset images and never goes into a bundle).
#[allow(clippy::too_many_arguments)]
fn write_validation_figures(
    work: &Path,
    classes: &[String],
    truth: &[usize],
    pred: &[usize],
    assign: &[usize],
    set: &ImageSet,
    k: usize,
    majority: &[String],
) -> anyhow::Result<()> {
    figures::confusion(
        &work.join("confusion_val.png"),
        "classifier confusion on validation",
        classes,
        truth,
        pred,
    )?;
    let ids: Vec<String> = (0..classes.len()).map(|c| c.to_string()).collect();
    let ct = onboard::metrics::contingency(assign, truth);
    let cl_rows: Vec<String> = (0..k)
        .map(|j| format!("{j}: {}", majority.get(j).cloned().unwrap_or_default()))
        .collect();
    let cl_counts: Vec<Vec<u64>> = (0..k)
        .map(|j| {
            (0..classes.len())
                .map(|c| ct.get(j).and_then(|r| r.get(c)).copied().unwrap_or(0))
                .collect()
        })
        .collect();
    figures::heatmap(
        &work.join("clusters_val.png"),
        "k-means clusters vs classes on validation",
        "cluster: train majority",
        "true class id",
        &cl_rows,
        &ids,
        &cl_counts,
    )?;
    let mut samples: Vec<Vec<&Path>> = vec![Vec::new(); k];
    for (p, &a) in set.paths.iter().zip(assign) {
        if let Some(v) = samples.get_mut(a).filter(|v| v.len() < 6) {
            v.push(p.as_path());
        }
    }
    figures::cluster_montage(&work.join("cluster_montage.png"), &samples, majority, 6)
}

/// Runs the whole training and export; returns the report (also written to disk).
pub fn run(opts: &TrainOptions) -> anyhow::Result<RunReport> {
    let cfg = &opts.config;
    cfg.validate()?;
    // Read before training, so that a wrong report fails at once.
    let protocol = match (&opts.protocol, &cfg.probe) {
        (None, _) => None,
        (Some(path), Some(recipe)) => {
            let space = crate::protocol::Space {
                whiten: cfg.whiten.then_some(cfg.whiten_components),
                l2: cfg.l2_normalize,
            };
            Some(crate::protocol::recipe_figures(
                path,
                recipe,
                cfg.input_size,
                space,
            )?)
        }
        (Some(path), None) => anyhow::bail!(
            "{}: protocol figures are for the probe recipe; this config has no `probe` section",
            path.display()
        ),
    };
    let commit = source_commit();
    let device = device::resolve(opts.device)?;
    tch::manual_seed(cfg.seed as i64);
    tch::set_num_threads(cfg.threads);
    std::fs::create_dir_all(&opts.work)
        .with_context(|| format!("{}: cannot create the run folder", opts.work.display()))?;

    let classes = data::class_names(&opts.data)?;
    let spec = data::input_spec(cfg.input_size);
    let (train_set, val_set) = data::load_train_val(
        &opts.data,
        &opts.train_splits,
        opts.val_split.as_deref(),
        &spec,
        cfg.limit_images,
        classes.len(),
    )?;
    // The temperature needs images the classifier never trained on: the validation split when
    // it is held out, else a slice of the training splits.
    let held_split = opts
        .val_split
        .clone()
        .filter(|v| !opts.train_splits.contains(v));
    let (train_set, calibration_slice) = match (&held_split, cfg.calibration_holdout) {
        (None, every) if every >= 2 && train_set.len() >= 2 * every => {
            let (kept, held) = train_set.split_every(every);
            (kept, Some((every, held)))
        }
        _ => (train_set, None),
    };
    let mut unlabeled = Vec::new();
    for dir in &opts.unlabeled {
        unlabeled.push(data::load_folder(dir, &spec, cfg.limit_images)?);
    }
    let unlabeled_images: usize = unlabeled.iter().map(ImageSet::len).sum();
    eprintln!(
        "data: {} labeled training images, {unlabeled_images} unlabeled, {} validation",
        train_set.len(),
        val_set.as_ref().map_or(0, ImageSet::len)
    );

    let n = i64::from(cfg.input_size);
    let cls_vs = nn::VarStore::new(device);
    let stage = trained::train_classifier(
        cfg,
        opts.pretrained.as_deref(),
        &opts.work,
        &cls_vs,
        &train_set,
        || {
            let mut parts = vec![train_set.images.shallow_clone()];
            parts.extend(val_set.iter().map(|v| v.images.shallow_clone()));
            parts.extend(unlabeled.iter().map(|s| s.images.shallow_clone()));
            tch::Tensor::cat(&parts, 0)
        },
        classes.len(),
        device,
    )?;
    let trained = &stage.trained;

    // The autoencoder trains only when it may be the clustering encoder.
    let ae_vs = nn::VarStore::new(device);
    let (ae, ae_hist) = if cfg.cluster_encoder == ClusterEncoder::Classifier {
        (None, train::History::default())
    } else {
        let mut all = vec![train_set.images.shallow_clone()];
        all.extend(unlabeled.iter().map(|s| s.images.shallow_clone()));
        let ae_images = tch::Tensor::cat(&all, 0);
        let ae = Autoencoder::new(&ae_vs.root(), n, &cfg.ae_channels, cfg.latent_dim);
        let hist =
            train::train_autoencoder(&ae, &ae_vs, &ae_images, &cfg.autoencoder, cfg.seed, device)?;
        save_weights(&ae_vs, cfg, &opts.work, "autoencoder")?;
        (Some(ae), hist)
    };

    let km_cfg = KMeansConfig {
        k: cfg.k,
        restarts: cfg.kmeans_restarts,
        max_iter: cfg.kmeans_max_iter,
        tol: cfg.kmeans_tol,
        seed: cfg.seed,
    };
    let train_truth = train_set.labels_usize();
    let val_truth = val_set.as_ref().map(ImageSet::labels_usize);
    // Sources: the classifier's trunk first, then the autoencoder's encoder when trained.
    let mut sources = vec![trained.source(n)];
    sources.extend(ae.as_ref().map(|a| Source::Autoencoder(&a.encoder)));
    let variants: Vec<(usize, bool, bool)> = match cfg.cluster_encoder {
        ClusterEncoder::Auto => (0..sources.len())
            .flat_map(|si| {
                [
                    (si, false, false),
                    (si, true, false),
                    (si, false, true),
                    (si, true, true),
                ]
            })
            .collect(),
        ClusterEncoder::Autoencoder => vec![(1, cfg.l2_normalize, cfg.whiten)],
        ClusterEncoder::Classifier => vec![(0, cfg.l2_normalize, cfg.whiten)],
    };
    let mut fitted = Vec::new();
    let mut raw: Vec<Option<encoders::RawFeatures>> = sources.iter().map(|_| None).collect();
    for (si, l2, whiten) in variants {
        let features = raw[si].get_or_insert_with(|| {
            let val = val_set.as_ref().map(|v| &v.images);
            encoders::RawFeatures::of(&sources[si], &train_set.images, val, device)
        });
        let f = encoders::fit_variant(
            features,
            l2,
            whiten.then_some(cfg.whiten_components),
            &train_truth,
            val_truth.as_deref(),
            &km_cfg,
        )
        .context("clustering the training features")?;
        eprintln!(
            "clustering {:?} (whiten {}, l2 {}): score {:.4}",
            f.variant.encoder,
            f.variant.whiten,
            f.variant.l2_normalize,
            f.variant.score()
        );
        fitted.push((si, f));
    }
    let encoder_comparison: Vec<encoders::Variant> =
        fitted.iter().map(|(_, f)| f.variant.clone()).collect();
    let best = (0..fitted.len())
        .max_by(|&a, &b| {
            fitted[a]
                .1
                .variant
                .score()
                .total_cmp(&fitted[b].1.variant.score())
                .then(b.cmp(&a))
        })
        .context("no clustering variant")?;
    let (source_index, chosen) = fitted.swap_remove(best);
    let source = &sources[source_index];
    let km = &chosen.kmeans;
    let dim = chosen.variant.dim;
    let stats = cluster::distance_stats(&chosen.train_features, km);
    let train_clustering = chosen.variant.train.clone();

    let majority: Vec<String> =
        onboard::metrics::cluster_majority_labels(&train_truth, &km.assignment, cfg.k)
            .iter()
            .map(|m| m.map_or("(empty)".to_string(), |c| classes[c].clone()))
            .collect();
    let (validation_classification, validation_clustering) = match &val_set {
        Some(v) => {
            let truth = v.labels_usize();
            let pred = evaluate::predict(trained.module(), &v.images, device);
            let assign = chosen.validation_assignment.clone().unwrap_or_default();
            write_validation_figures(
                &opts.work, &classes, &truth, &pred, &assign, v, cfg.k, &majority,
            )?;
            (
                Some(evaluate::classification(&truth, &pred, &classes)),
                Some(evaluate::clustering(&truth, &assign, cfg.k)),
            )
        }
        None => (None, None),
    };
    figures::loss_curves(
        &opts.work.join("training_curves.png"),
        &[
            ("autoencoder MSE per epoch", &ae_hist.epoch_loss),
            ("classifier loss per epoch", &stage.history.epoch_loss),
        ],
    )?;

    let staging = Staging::new(&opts.out)?;
    let name = opts
        .out
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    let image_shape = [1, 3, n, n];
    let mut enc_ops = source.ops();
    enc_ops.extend(chosen.whitening.as_ref().map(Whitening::op));
    let enc_entry = staging.write_graph(
        GraphRole::Encoder,
        &enc_ops,
        (GraphInput::Image, &image_shape),
        dim,
        match source.kind() {
            ClusterEncoder::Classifier => "classifier trunk: image -> pooled features",
            _ => "autoencoder encoder: image -> latent",
        },
    )?;
    // When k-means runs on the classifier's own (unwhitened) features, the classifier graph is
    // only its head and reads the encoder's output: the backbone runs once per image on board.
    let shared = source.kind() == ClusterEncoder::Classifier && chosen.whitening.is_none();
    let (head_ops, head) = trained.head();
    let cls_entry = if shared {
        staging.write_graph(
            GraphRole::Classifier,
            &head_ops,
            (GraphInput::Latent, &[1, dim as i64]),
            classes.len(),
            "classifier head: encoder output -> class logits",
        )?
    } else {
        staging.write_graph(
            GraphRole::Classifier,
            &trained.ops(n),
            (GraphInput::Image, &image_shape),
            classes.len(),
            "classifier: image -> class logits",
        )?
    };
    let parity_images = val_set.as_ref().map_or(&train_set.images, |v| &v.images);
    let enc_file = staging.dir.join(&enc_entry.file);
    let encoder_parity = match &chosen.whitening {
        Some(w) => {
            let whitened = w.after(source.module());
            evaluate::parity(
                &whitened,
                &enc_file,
                parity_images,
                cfg.parity_images,
                device,
            )?
        }
        None => evaluate::parity(
            source.module(),
            &enc_file,
            parity_images,
            cfg.parity_images,
            device,
        )?,
    };
    let classifier_parity = if shared {
        let count = (cfg.parity_images as i64).min(parity_images.size()[0]);
        let features = evaluate::infer(source.module(), &parity_images.narrow(0, 0, count), device);
        evaluate::parity(
            head.as_ref(),
            &staging.dir.join(&cls_entry.file),
            &features,
            cfg.parity_images,
            device,
        )?
    } else {
        evaluate::parity(
            trained.module(),
            &staging.dir.join(&cls_entry.file),
            parity_images,
            cfg.parity_images,
            device,
        )?
    };
    for (what, p) in [
        ("encoder", encoder_parity),
        ("classifier", classifier_parity),
    ] {
        anyhow::ensure!(
            p.max_abs_diff <= cfg.parity_tolerance,
            "{what}: tch and tract outputs differ by {:.3e} (> {:.0e}); the exported graph is wrong, the bundle was not written",
            p.max_abs_diff,
            cfg.parity_tolerance
        );
    }
    let files = [&enc_entry, &cls_entry]
        .iter()
        .map(|g| {
            let len = std::fs::metadata(staging.dir.join(&g.file))
                .map(|m| m.len())
                .unwrap_or(0);
            (g.file.clone(), len)
        })
        .collect();

    let mut report = RunReport {
        name: name.clone(),
        command: opts.command.clone(),
        device: format!("{device:?} on {}", machine()),
        source_commit: commit.clone(),
        train_images: train_set.len(),
        unlabeled_images,
        validation_split: opts.val_split.clone(),
        autoencoder: ae_hist,
        classifier: stage.history.clone(),
        semi: stage.semi.clone(),
        pretrained_sha256: stage.pretrained_sha256.clone(),
        kmeans_inertia: km.inertia,
        kmeans_iterations: km.iterations,
        train_clustering,
        cluster_encoder: chosen.variant.clone(),
        encoder_comparison,
        validation_classification,
        validation_clustering,
        encoder_parity,
        classifier_parity,
        files,
        config: cfg.clone(),
        calibration: None,
        protocol,
    };
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name,
        input: spec,
        graphs: vec![enc_entry, cls_entry],
        default_precision: Precision::F32,
        latent_dim: dim,
        clustering: Clustering {
            l2_normalize: chosen.variant.l2_normalize,
            centroids: km
                .centroids
                .chunks_exact(dim)
                .map(<[f32]>::to_vec)
                .collect(),
            distance_stats: stats
                .iter()
                .map(|&(count, mean, std, p95)| DistanceStats {
                    count,
                    mean,
                    std,
                    p95,
                })
                .collect(),
        },
        classes: classes
            .iter()
            .enumerate()
            .map(|(id, name)| ClassEntry {
                id: id as u32,
                name: name.clone(),
                science_value: cfg.science_value(name),
            })
            .collect(),
        provenance: Provenance {
            dataset: "msl-v1".into(),
            train_splits: opts.train_splits.clone(),
            validation_split: opts.val_split.clone(),
            seed: cfg.seed,
            config: serde_json::to_value(cfg)?,
            source_commit: commit,
            command: opts.command.clone(),
            quantization: None,
        },
        // Temperature 1 here; fitted below on the validation split when it is held out.
        calibration: Some(onboard::bundle::Calibration {
            temperature: 1.0,
            class_prior: onboard::bundle::class_prior(&train_set.labels_usize(), classes.len()),
            fitted_on: "none".into(),
        }),
        adaptation: onboard::bundle::Adaptation::default(),
    };
    staging.write_manifest(&manifest)?;
    let held_out = match (held_split, calibration_slice) {
        (Some(split), _) => crate::temperature::HeldOut::Split(split),
        (None, Some((every, held))) => crate::temperature::HeldOut::Slice {
            name: format!("every {every}th image of the training splits (not trained on)"),
            items: held
                .paths
                .iter()
                .zip(held.labels_usize())
                .map(|(p, class)| onboard::labels::Labeled {
                    file: p.to_string_lossy().into_owned(),
                    class,
                })
                .collect(),
        },
        (None, None) => crate::temperature::HeldOut::None,
    };
    report.calibration = Some(
        crate::temperature::calibrate(&crate::temperature::CalibrateOptions {
            bundle: staging.dir.clone(),
            data: opts.data.clone(),
            held_out,
            limit: cfg.limit_images,
        })
        .context("fitting the softmax temperature")?,
    );
    let metrics_json = serde_json::to_string_pretty(&report)?;
    staging.write_text("metrics.json", &metrics_json)?;
    staging.write_text(
        "MODEL_CARD.md",
        &report::model_card(&report, "MSL surface set v1 (msl-v1)"),
    )?;
    onboard::bundle::write_atomic(&opts.work.join("metrics.json"), metrics_json.as_bytes())
        .with_context(|| format!("{}: cannot write metrics", opts.work.display()))?;
    onboard::bundle::Bundle::load(&staging.dir).context("re-loading the staged bundle")?;
    let dest = staging.commit()?;
    eprintln!("bundle written: {}", dest.display());
    Ok(report)
}
