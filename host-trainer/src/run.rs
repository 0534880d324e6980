//! The `train` command: data -> autoencoder -> k-means -> classifier -> ONNX bundle ->
//! evaluation and parity, with weights and config saved in a run folder.

use std::path::{Path, PathBuf};

use anyhow::Context;
use onboard::bundle::{
    ClassEntry, Clustering, DistanceStats, Manifest, Precision, Provenance, FORMAT_VERSION,
};
use tch::nn;

use crate::bundle_writer::Staging;
use crate::cluster::{self, KMeansConfig};
use crate::config::TrainConfig;
use crate::data::{self, ImageSet};
use crate::device::{self, DeviceChoice};
use crate::encoders::{self, ClusterEncoder, Source};
use crate::evaluate;
use crate::export_stage::{export_graphs, Exported, ParityCheck};
use crate::figures;
use crate::model::Autoencoder;
use crate::provenance::{machine, source_commit};
use crate::report::{self, RunReport};
use crate::train::{self, save_weights};
use crate::trained;

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

/// The data stage's output: labeled training images (less the calibration slice), the
/// validation split, unlabeled folders, and what the temperature is fitted on.
struct Data {
    classes: Vec<String>,
    train: ImageSet,
    val: Option<ImageSet>,
    unlabeled: Vec<ImageSet>,
    held_out: crate::temperature::HeldOut,
}

/// Loads the splits and folders; when no split outside the training splits is held out, every
/// `calibration_holdout`-th training image is set aside for the temperature.
fn load_data(opts: &TrainOptions) -> anyhow::Result<Data> {
    let cfg = &opts.config;
    let classes = data::class_names(&opts.data)?;
    let spec = data::input_spec(cfg.input_size);
    let (train, val) = data::load_train_val(
        &opts.data,
        &opts.train_splits,
        opts.val_split.as_deref(),
        &spec,
        cfg.limit_images,
        classes.len(),
    )?;
    let held_split = opts
        .val_split
        .clone()
        .filter(|v| !opts.train_splits.contains(v));
    let every = cfg.calibration_holdout;
    let (train, held_out) = match held_split {
        // The probe recipe fits its temperature on cross-fitted training logits.
        _ if cfg.probe.is_some() => (train, crate::temperature::HeldOut::None),
        Some(split) => (train, crate::temperature::HeldOut::Split(split)),
        None if every >= 2 && train.len() >= 2 * every => {
            let (kept, held) = train.split_every(every);
            let items = held
                .paths
                .iter()
                .zip(held.labels_usize())
                .map(|(p, class)| onboard::labels::Labeled {
                    file: p.to_string_lossy().into_owned(),
                    class,
                })
                .collect();
            let name = format!("every {every}th image of the training splits (not trained on)");
            (kept, crate::temperature::HeldOut::Slice { name, items })
        }
        None => (train, crate::temperature::HeldOut::None),
    };
    let mut unlabeled = Vec::new();
    for dir in &opts.unlabeled {
        unlabeled.push(data::load_folder(dir, &spec, cfg.limit_images)?);
    }
    eprintln!(
        "data: {} labeled training images, {} unlabeled, {} validation",
        train.len(),
        unlabeled.iter().map(ImageSet::len).sum::<usize>(),
        val.as_ref().map_or(0, ImageSet::len)
    );
    Ok(Data {
        classes,
        train,
        val,
        unlabeled,
        held_out,
    })
}

/// The recipe's protocol figures from `opts.protocol` (read before training, so that a wrong
/// report fails at once).
fn protocol_figures(opts: &TrainOptions) -> anyhow::Result<Option<crate::protocol::RecipeFigures>> {
    let cfg = &opts.config;
    match (&opts.protocol, &cfg.probe) {
        (None, _) => Ok(None),
        (Some(path), Some(recipe)) => {
            let space = crate::protocol::Space {
                whiten: cfg.whiten.then_some(cfg.whiten_components),
                l2: cfg.l2_normalize,
            };
            crate::protocol::recipe_figures(path, recipe, cfg.input_size, space).map(Some)
        }
        (Some(path), None) => anyhow::bail!(
            "{}: protocol figures are for the probe recipe; this config has no `probe` section",
            path.display()
        ),
    }
}

/// Trains the autoencoder on the labeled and unlabeled training images when it may be the
/// clustering encoder (`cluster_encoder` autoencoder or auto); else returns no model and an
/// empty history.
fn autoencoder_stage(
    opts: &TrainOptions,
    vs: &nn::VarStore,
    d: &Data,
    device: tch::Device,
) -> anyhow::Result<(Option<Autoencoder>, train::History)> {
    let cfg = &opts.config;
    if cfg.cluster_encoder == ClusterEncoder::Classifier {
        return Ok((None, train::History::default()));
    }
    let mut all = vec![d.train.images.shallow_clone()];
    all.extend(d.unlabeled.iter().map(|s| s.images.shallow_clone()));
    let images = tch::Tensor::cat(&all, 0);
    let n = i64::from(cfg.input_size);
    let ae = Autoencoder::new(&vs.root(), n, &cfg.ae_channels, cfg.latent_dim);
    let hist = train::train_autoencoder(&ae, vs, &images, &cfg.autoencoder, cfg.seed, device)?;
    save_weights(vs, cfg, &opts.work, "autoencoder")?;
    Ok((Some(ae), hist))
}

/// The bundle manifest (temperature 1 until the calibration stage fits it).
fn manifest(
    opts: &TrainOptions,
    d: &Data,
    exported: &Exported,
    chosen: &encoders::Chosen,
    commit: String,
) -> anyhow::Result<Manifest> {
    let cfg = &opts.config;
    let km = &chosen.fitted.kmeans;
    let dim = chosen.fitted.variant.dim;
    let stats = cluster::distance_stats(&chosen.fitted.train_features, km);
    let classes = &d.classes;
    Ok(Manifest {
        format_version: FORMAT_VERSION,
        name: bundle_name(&opts.out),
        input: data::input_spec(cfg.input_size),
        graphs: vec![exported.encoder.clone(), exported.classifier.clone()],
        default_precision: Precision::F32,
        latent_dim: dim,
        clustering: Clustering {
            l2_normalize: chosen.fitted.variant.l2_normalize,
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
        calibration: Some(onboard::bundle::Calibration {
            temperature: 1.0,
            class_prior: onboard::bundle::class_prior(&d.train.labels_usize(), classes.len()),
            fitted_on: "none".into(),
        }),
        adaptation: onboard::bundle::Adaptation::default(),
    })
}

/// The bundle's name: its folder's name.
fn bundle_name(out: &Path) -> String {
    out.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into())
}

/// Validation metrics (classifier and the chosen clustering) with their figures in the run
/// folder; `None` without a validation split.
fn validate_stage(
    opts: &TrainOptions,
    d: &Data,
    trained: &trained::Trained,
    chosen: &encoders::Chosen,
    device: tch::Device,
) -> anyhow::Result<(
    Option<evaluate::ClassificationMetrics>,
    Option<evaluate::ClusterMetrics>,
)> {
    let k = opts.config.k;
    let Some(v) = &d.val else {
        return Ok((None, None));
    };
    let majority: Vec<String> = onboard::metrics::cluster_majority_labels(
        &d.train.labels_usize(),
        &chosen.fitted.kmeans.assignment,
        k,
    )
    .iter()
    .map(|m| m.map_or("(empty)".to_string(), |c| d.classes[c].clone()))
    .collect();
    let truth = v.labels_usize();
    let pred = evaluate::predict(trained.module(), &v.images, device);
    let assign = chosen
        .fitted
        .validation_assignment
        .clone()
        .unwrap_or_default();
    write_validation_figures(
        &opts.work, &d.classes, &truth, &pred, &assign, v, k, &majority,
    )?;
    Ok((
        Some(evaluate::classification(&truth, &pred, &d.classes)),
        Some(evaluate::clustering(&truth, &assign, k)),
    ))
}

/// Runs the pipeline: data -> classifier -> (autoencoder) -> clustering -> validation ->
/// export -> calibration -> model card; returns the report (also written to disk).
pub fn run(opts: &TrainOptions) -> anyhow::Result<RunReport> {
    let cfg = &opts.config;
    cfg.validate()?;
    let protocol = protocol_figures(opts)?;
    let commit = source_commit();
    let device = device::resolve(opts.device)?;
    tch::manual_seed(cfg.seed as i64);
    tch::set_num_threads(cfg.threads);
    std::fs::create_dir_all(&opts.work)
        .with_context(|| format!("{}: cannot create the run folder", opts.work.display()))?;
    let d = load_data(opts)?;
    let n = i64::from(cfg.input_size);
    let cls_vs = nn::VarStore::new(device);
    let pool = || {
        let mut parts = vec![d.train.images.shallow_clone()];
        parts.extend(d.val.iter().map(|v| v.images.shallow_clone()));
        parts.extend(d.unlabeled.iter().map(|s| s.images.shallow_clone()));
        tch::Tensor::cat(&parts, 0)
    };
    let stage = trained::train_classifier(
        cfg,
        opts.pretrained.as_deref(),
        &opts.work,
        &cls_vs,
        &d.train,
        pool,
        d.classes.len(),
        device,
    )?;
    let trained = &stage.trained;
    let ae_vs = nn::VarStore::new(device);
    let (ae, ae_hist) = autoencoder_stage(opts, &ae_vs, &d, device)?;
    let mut sources = vec![trained.source(n)];
    sources.extend(ae.as_ref().map(|a| Source::Autoencoder(&a.encoder)));
    let (choice, km_cfg) = clustering_settings(cfg);
    let chosen = encoders::choose(choice, &sources, &d.train, d.val.as_ref(), &km_cfg, device)?;
    let validation = validate_stage(opts, &d, trained, &chosen, device)?;
    figures::loss_curves(
        &opts.work.join("training_curves.png"),
        &[
            ("autoencoder MSE per epoch", &ae_hist.epoch_loss),
            ("classifier loss per epoch", &stage.history.epoch_loss),
        ],
    )?;

    let staging = Staging::new(&opts.out)?;
    let check = ParityCheck {
        images: d.val.as_ref().map_or(&d.train.images, |v| &v.images),
        count: cfg.parity_images,
        tolerance: cfg.parity_tolerance,
    };
    let exported = export_graphs(
        &staging,
        trained,
        &sources[chosen.source],
        chosen.fitted.whitening.as_ref(),
        chosen.fitted.variant.dim,
        n,
        d.classes.len(),
        check,
        device,
    )?;
    let parts = ReportParts {
        stage: &stage,
        autoencoder: ae_hist,
        chosen: &chosen,
        exported: &exported,
        validation,
        protocol,
    };
    let mut report = run_report(opts, &d, parts, &commit, device);
    staging.write_manifest(&manifest(opts, &d, &exported, &chosen, commit)?)?;
    report.calibration = Some(
        crate::temperature::calibrate(&crate::temperature::CalibrateOptions {
            bundle: staging.dir.clone(),
            data: opts.data.clone(),
            held_out: stage.temperature.clone().map_or_else(
                || d.held_out.clone(),
                crate::temperature::HeldOut::CrossFitted,
            ),
            limit: cfg.limit_images,
        })
        .context("fitting the softmax temperature")?,
    );
    finish(opts, staging, &report)?;
    Ok(report)
}

/// What the stages produced that the run report records.
struct ReportParts<'a> {
    stage: &'a trained::ClassifierStage,
    autoencoder: train::History,
    chosen: &'a encoders::Chosen,
    exported: &'a Exported,
    validation: (
        Option<evaluate::ClassificationMetrics>,
        Option<evaluate::ClusterMetrics>,
    ),
    protocol: Option<crate::protocol::RecipeFigures>,
}

/// The clustering stage's settings from the config.
fn clustering_settings(cfg: &TrainConfig) -> (encoders::Choice, KMeansConfig) {
    let choice = encoders::Choice {
        mode: cfg.cluster_encoder,
        l2: cfg.l2_normalize,
        whiten: cfg.whiten,
        whiten_components: cfg.whiten_components,
    };
    let km = KMeansConfig {
        k: cfg.k,
        restarts: cfg.kmeans_restarts,
        max_iter: cfg.kmeans_max_iter,
        tol: cfg.kmeans_tol,
        seed: cfg.seed,
    };
    (choice, km)
}

/// The run report (calibration filled in by the calibration stage).
fn run_report(
    opts: &TrainOptions,
    d: &Data,
    p: ReportParts<'_>,
    commit: &str,
    device: tch::Device,
) -> RunReport {
    let km = &p.chosen.fitted.kmeans;
    RunReport {
        name: bundle_name(&opts.out),
        command: opts.command.clone(),
        device: format!("{device:?} on {}", machine()),
        source_commit: commit.to_string(),
        train_images: d.train.len(),
        unlabeled_images: d.unlabeled.iter().map(ImageSet::len).sum(),
        validation_split: opts.val_split.clone(),
        autoencoder: p.autoencoder,
        classifier: p.stage.history.clone(),
        semi: p.stage.semi.clone(),
        pretrained_sha256: p.stage.pretrained_sha256.clone(),
        kmeans_inertia: km.inertia,
        kmeans_iterations: km.iterations,
        train_clustering: p.chosen.fitted.variant.train.clone(),
        cluster_encoder: p.chosen.fitted.variant.clone(),
        encoder_comparison: p.chosen.compared.clone(),
        validation_classification: p.validation.0,
        validation_clustering: p.validation.1,
        encoder_parity: p.exported.encoder_parity,
        classifier_parity: p.exported.classifier_parity,
        files: p.exported.files.clone(),
        config: opts.config.clone(),
        calibration: None,
        protocol: p.protocol,
    }
}

/// Writes the metrics and the model card, re-loads the staged bundle and moves it into place.
fn finish(opts: &TrainOptions, staging: Staging, report: &RunReport) -> anyhow::Result<()> {
    let metrics_json = serde_json::to_string_pretty(report)?;
    staging.write_text("metrics.json", &metrics_json)?;
    staging.write_text(
        "MODEL_CARD.md",
        &report::model_card(report, "MSL surface set v1 (msl-v1)"),
    )?;
    onboard::bundle::write_atomic(&opts.work.join("metrics.json"), metrics_json.as_bytes())
        .with_context(|| format!("{}: cannot write metrics", opts.work.display()))?;
    onboard::bundle::Bundle::load(&staging.dir).context("re-loading the staged bundle")?;
    let dest = staging.commit()?;
    eprintln!("bundle written: {}", dest.display());
    Ok(())
}
