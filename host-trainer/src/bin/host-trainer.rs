//! `host-trainer`: trains the onboard models on rover images and writes a model bundle.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use host_trainer::config::TrainConfig;
use host_trainer::data::{TRAIN_SPLIT, VAL_SPLIT};
use host_trainer::device::DeviceChoice;
use host_trainer::quantize_bundle::{self, QuantizeConfig, QuantizeOptions};
use host_trainer::run::{self, TrainOptions};
use host_trainer::temperature;
use onboard::bundle::Precision;

#[derive(Debug, Parser)]
#[command(
    name = "host-trainer",
    version,
    about = "Train the rover triage models and export a model bundle"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train autoencoder + k-means and the classifier, export and check the bundle.
    Train(TrainArgs),
    /// Add int8 graphs (integer compute, and int8 weights with f32 compute) to a bundle,
    /// measure every precision on validation and record the default precision.
    Quantize(QuantizeArgs),
    /// Write the classifier's calibration into a bundle: the training class prior (from its
    /// training splits) and a softmax temperature fitted on a held-out split, which on-board
    /// class-prior adaptation needs. Example:
    /// `host-trainer calibrate --bundle models/default --data $MSL_DATA --held-out none`
    Calibrate(CalibrateArgs),
    /// The development protocol that sees shift: frozen-backbone features (cached), linear probes
    /// fitted on the train split and k-means centroids, measured on validation in sol order with
    /// on-board adaptation off and on (macro-F1, balanced accuracy, per-class recall, clusters).
    /// Example: `host-trainer protocol --data $MSL_DATA --backbone lite0 --side 128 --side 224`
    Protocol(ProtocolArgs),
    /// Print the default training configuration as JSON (the classifier is the small CNN
    /// unless a `probe` or `semi` section is given; `configs/` holds the recipes).
    DefaultConfig,
}

#[derive(Debug, clap::Args)]
struct CalibrateArgs {
    /// Bundle folder (its manifest is rewritten atomically).
    #[arg(long, default_value = "models/default")]
    bundle: PathBuf,
    /// MSL dataset root (holds calibrated/ and the split files).
    #[arg(long)]
    data: PathBuf,
    /// Labeled split held out of the bundle's training, to fit the temperature on; `none`
    /// keeps temperature 1.
    #[arg(long, default_value = VAL_SPLIT)]
    held_out: String,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ProtocolArgs {
    /// MSL dataset root (holds calibrated/, the split files and the synset file).
    #[arg(long)]
    data: PathBuf,
    /// Split the probes and centroids are fitted on.
    #[arg(long, default_value = TRAIN_SPLIT)]
    train_split: String,
    /// Split evaluated in sol order (sorted by file name).
    #[arg(long, default_value = VAL_SPLIT)]
    val_split: String,
    /// Backbone(s): lite0, lite1, lite2.
    #[arg(long, default_values_t = ["lite0".to_string()])]
    backbone: Vec<String>,
    /// Input side(s); every backbone runs at every side.
    #[arg(long, default_values_t = [224u32])]
    side: Vec<u32>,
    /// L2 penalties of the probes compared.
    #[arg(long, default_values_t = [1e-3f64])]
    l2: Vec<f64>,
    /// Logit-adjustment strengths of the probes compared (0 = plain cross-entropy).
    #[arg(long, default_values_t = [0.0f64, 1.0])]
    logit_adjust: Vec<f64>,
    /// ImageNet EfficientNet-Lite weights folder (written by scripts/setup.sh).
    #[arg(long, env = "TRIAGE_WEIGHTS")]
    weights: PathBuf,
    /// Feature cache folder.
    #[arg(long, default_value = "runs/features")]
    cache: PathBuf,
    /// Clusters.
    #[arg(long, default_value_t = 24)]
    k: usize,
    /// k-means restarts.
    #[arg(long, default_value_t = 4)]
    restarts: usize,
    /// PCA-whitening components of the whitened clustering spaces (each also L2-normalized).
    #[arg(long, default_values_t = [64usize])]
    whiten: Vec<usize>,
    /// Cross-fit the probes' temperature in 5 contiguous sol blocks (by file name) instead of
    /// 5 round-robin folds.
    #[arg(long)]
    sol_blocked_temperature: bool,
    /// Write the JSON report here too (atomically).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the report as JSON on stdout instead of markdown tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct QuantizeArgs {
    /// Bundle folder holding the f32 graphs (rewritten in place, atomically).
    #[arg(long, default_value = "models/default")]
    bundle: PathBuf,
    /// MSL dataset root (holds calibrated/ and the split files).
    #[arg(long)]
    data: PathBuf,
    /// Split file whose first images calibrate the activation ranges.
    #[arg(long, default_value = TRAIN_SPLIT)]
    calibration_split: String,
    /// Number of calibration images.
    #[arg(long, default_value_t = QuantizeConfig::default().calibration_images)]
    calibration_images: usize,
    /// Validation split measured at every precision; `none` to skip.
    #[arg(long, default_value = VAL_SPLIT)]
    val_split: String,
    /// Largest validation top-1 drop from f32 (fraction) for the automatic default choice.
    #[arg(long, default_value_t = QuantizeConfig::default().max_top1_drop)]
    max_top1_drop: f64,
    /// Default precision to record instead of the automatic choice.
    #[arg(long, value_enum)]
    default_precision: Option<Precision>,
    /// Quantize the classifier too at int8 (by default the int8 precision keeps the f32
    /// classifier graph: its integer probabilities cost the stream adaptation accuracy).
    #[arg(long)]
    int8_classifier: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// MSL dataset root (holds calibrated/, the split files and the synset file).
    #[arg(long)]
    data: PathBuf,
    /// Training split file(s) relative to --data.
    #[arg(long = "train-split", default_values_t = [TRAIN_SPLIT.to_string()])]
    train_splits: Vec<String>,
    /// Validation split relative to --data; `none` to skip validation.
    #[arg(long, default_value = VAL_SPLIT)]
    val_split: String,
    /// Extra folder(s) of unlabeled images for the autoencoder.
    #[arg(long)]
    unlabeled: Vec<PathBuf>,
    /// Training configuration JSON (see `host-trainer default-config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// ImageNet EfficientNet-Lite weights (the folder scripts/setup.sh writes, or one file),
    /// for a config with a pretrained backbone.
    #[arg(long, env = "TRIAGE_WEIGHTS")]
    pretrained: Option<PathBuf>,
    /// Override the configuration's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Bundle folder to write.
    #[arg(long, default_value = "models/default")]
    out: PathBuf,
    /// Run folder for weights, configs and metrics.
    #[arg(long, default_value = "runs/default")]
    work: PathBuf,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Protocol report (`host-trainer protocol --out FILE`) holding the probe recipe's row at
    /// this input side: its figures go into the report and the model card.
    #[arg(long)]
    protocol: Option<PathBuf>,
    /// Print the run report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// The command line as a user would retype it: the program by name, and the dataset root as
/// `$MSL_DATA` when it equals that variable.
fn command_line() -> String {
    let data = std::env::var("MSL_DATA").ok().filter(|d| !d.is_empty());
    std::env::args()
        .enumerate()
        .map(|(i, a)| match (&data, i) {
            (_, 0) => "host-trainer".to_string(),
            (Some(d), _) if a.trim_end_matches('/') == d.trim_end_matches('/') => {
                "$MSL_DATA".to_string()
            }
            _ => a,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    let mut config = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::default(),
    };
    if let Some(s) = a.seed {
        config.seed = s;
    }
    let opts = TrainOptions {
        data: a.data,
        train_splits: a.train_splits,
        val_split: (a.val_split != "none").then_some(a.val_split),
        unlabeled: a.unlabeled,
        pretrained: a.pretrained,
        out: a.out,
        work: a.work,
        device: a.device,
        config,
        command: command_line(),
        protocol: a.protocol,
    };
    let report = run::run(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if let (Some(c), Some(k)) = (
        &report.validation_classification,
        &report.validation_clustering,
    ) {
        println!(
            "validation: top1 {:.4}, macro-F1 {:.4}; clusters: hungarian {:.4}, majority {:.4}, NMI {:.4}, ARI {:.4}",
            c.top1, c.macro_f1, k.hungarian_acc, k.majority_acc, k.nmi, k.ari
        );
    }
    Ok(())
}

fn calibrate(a: CalibrateArgs) -> anyhow::Result<()> {
    let opts = temperature::CalibrateOptions {
        bundle: a.bundle,
        data: a.data,
        held_out: temperature::HeldOut::split((a.held_out != "none").then_some(a.held_out)),
        limit: None,
    };
    let r = temperature::calibrate(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let nll = match (r.nll_t1, r.nll_fitted) {
            (Some(a), Some(b)) => format!(
                "; held-out NLL {a:.4} at T=1 -> {b:.4} ({} images, {} skipped)",
                r.held_out_images, r.held_out_skipped
            ),
            _ => String::new(),
        };
        println!(
            "{}: temperature {:.4}, class prior from {} training labels{nll}",
            opts.bundle.display(),
            r.temperature,
            r.train_labels
        );
    }
    Ok(())
}

fn protocol(a: ProtocolArgs) -> anyhow::Result<()> {
    use host_trainer::effnet::Lite;
    use host_trainer::features::FeatureSpec;
    use host_trainer::probe::ProbeConfig;
    tch::set_num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()) as i32);
    let mut features = Vec::new();
    for b in &a.backbone {
        let lite = Lite::parse(b)
            .ok_or_else(|| anyhow::anyhow!("--backbone {b}: not one of lite0, lite1, lite2"))?;
        for &side in &a.side {
            anyhow::ensure!(
                (32..=512).contains(&side) && side % 32 == 0,
                "--side {side}: must be a multiple of 32 in 32..=512"
            );
            features.push(FeatureSpec {
                lite,
                side,
                weights: a.weights.clone(),
                cache: a.cache.clone(),
            });
        }
    }
    let probes =
        a.l2.iter()
            .flat_map(|&l2| {
                a.logit_adjust.iter().map(move |&logit_adjust| ProbeConfig {
                    l2,
                    logit_adjust,
                    ..Default::default()
                })
            })
            .collect();
    let opts = host_trainer::protocol::ProtocolOptions {
        data: a.data.clone(),
        train_split: a.train_split,
        val_split: a.val_split,
        features,
        probes,
        kmeans: host_trainer::cluster::KMeansConfig {
            k: a.k,
            restarts: a.restarts,
            max_iter: 300,
            tol: 1e-5,
            seed: 17,
        },
        whiten: a.whiten.clone(),
        sol_blocked_temperature: a.sol_blocked_temperature,
        adaptation: onboard::bundle::Adaptation::default(),
    };
    let classes = host_trainer::data::class_names(&a.data)?;
    let reports = host_trainer::protocol::run(&opts, &classes)?;
    let json = serde_json::to_string_pretty(&reports)?;
    if let Some(out) = &a.out {
        onboard::bundle::write_atomic(out, json.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: cannot write the report: {e}", out.display()))?;
    }
    if a.json {
        println!("{json}");
    } else {
        println!("{}", host_trainer::protocol::markdown(&reports));
    }
    Ok(())
}

fn quantize(a: QuantizeArgs) -> anyhow::Result<()> {
    let opts = QuantizeOptions {
        bundle: a.bundle,
        data: a.data,
        val_split: (a.val_split != "none").then_some(a.val_split),
        default_precision: a.default_precision,
        config: QuantizeConfig {
            calibration_split: a.calibration_split,
            calibration_images: a.calibration_images,
            max_top1_drop: a.max_top1_drop,
            int8_classifier: a.int8_classifier,
        },
    };
    let report = quantize_bundle::run(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for r in &report.precisions {
        let sizes = format!(
            "{:>12}: encoder {:>9} B, classifier {:>8} B",
            r.precision.name(),
            r.encoder_bytes,
            r.classifier_bytes
        );
        match &r.validation {
            Some(v) => println!(
                "{sizes}; top1 {:.4}, macro-F1 {:.4}, agreement with f32 {:.4}, {:.2} ms/image",
                v.top1, v.macro_f1, v.class_agreement_with_f32, v.ms_per_image
            ),
            None => println!("{sizes}"),
        }
    }
    println!("default precision: {}", report.default_precision);
    Ok(())
}

fn main() -> ExitCode {
    onboard::tract_isa::apply();
    let result = match Cli::parse().command {
        Command::Train(a) => train(a),
        Command::Quantize(a) => quantize(a),
        Command::Calibrate(a) => calibrate(a),
        Command::Protocol(a) => protocol(a),
        Command::DefaultConfig => serde_json::to_string_pretty(&TrainConfig::default())
            .map(|s| println!("{s}"))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
