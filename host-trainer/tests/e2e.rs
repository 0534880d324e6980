//! End to end on a small subset of the real MSL data: train tiny models, export a bundle, check
//! it with ONNX's checker and ONNX Runtime against tract, and evaluate it with `onboard eval`.
//! Needs `MSL_DATA` (the dataset root) and `TRIAGE_PYTHON` (the test venv's python, set by
//! `scripts/env.sh`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use host_trainer::config::{StageConfig, TrainConfig};
use host_trainer::device::DeviceChoice;
use host_trainer::run::{self, TrainOptions};

fn msl_data() -> Option<PathBuf> {
    let d = PathBuf::from(std::env::var_os("MSL_DATA")?);
    assert!(
        d.join("train-calibrated-shuffled.txt").is_file(),
        "MSL_DATA={} is set but holds no train-calibrated-shuffled.txt",
        d.display()
    );
    Some(d)
}

fn tiny_config() -> TrainConfig {
    let d = TrainConfig::default();
    TrainConfig {
        limit_images: Some(96),
        k: 6,
        kmeans_restarts: 2,
        autoencoder: StageConfig {
            epochs: 2,
            batch_size: 32,
            ..d.autoencoder.clone()
        },
        classifier: StageConfig {
            epochs: 2,
            batch_size: 32,
            ..d.classifier.clone()
        },
        parity_images: 16,
        // The whitened autoencoder latent: exercises the whitening Gemm in the exported encoder.
        cluster_encoder: host_trainer::encoders::ClusterEncoder::Autoencoder,
        whiten: true,
        whiten_components: 16,
        ..d
    }
}

fn onboard_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("onboard");
    assert!(
        bin.is_file(),
        "{} not built: run `cargo test --workspace`",
        bin.display()
    );
    bin
}

#[test]
fn train_export_check_and_eval() {
    let Some(data) = msl_data() else {
        eprintln!("MSL_DATA not set: skipping the end-to-end test");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("models/tiny");
    let opts = TrainOptions {
        data: data.clone(),
        train_splits: vec!["train-calibrated-shuffled.txt".into()],
        val_split: Some("val-calibrated-shuffled.txt".into()),
        unlabeled: vec![],
        pretrained: None,
        out: out.clone(),
        work: tmp.path().join("run"),
        device: DeviceChoice::Auto,
        config: tiny_config(),
        command: "e2e test".into(),
        protocol: None,
    };
    let report = run::run(&opts).expect("training runs");
    assert!(report.cluster_encoder.whiten && report.cluster_encoder.dim == 16);
    assert!(report.encoder_parity.max_abs_diff <= 1e-4 && report.encoder_parity.images == 16);
    assert!(report.classifier_parity.max_abs_diff <= 1e-4);
    assert!(tmp.path().join("run/autoencoder.safetensors").is_file());
    let saved: TrainConfig = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("run/classifier.config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved, opts.config);
    // The temperature is fitted on the held-out validation images (as many as the run's
    // image limit) and written with the training prior into the manifest.
    let cal = report.calibration.as_ref().expect("calibration report");
    assert_eq!(cal.held_out_images + cal.held_out_skipped, 96);
    assert!(
        cal.nll_fitted.unwrap() <= cal.nll_t1.unwrap() + 1e-9,
        "{cal:?}"
    );
    let written = onboard::bundle::Bundle::load(&out)
        .unwrap()
        .manifest
        .calibration
        .unwrap();
    assert_eq!(written.fitted_on, "val-calibrated-shuffled.txt");
    assert_eq!(written.temperature, cal.temperature);

    // Int8 graphs, then ONNX checker (full) and ONNX Runtime against tract on a real image for
    // every graph: f32 within 1e-4, int8 within one quantization step.
    common::quantize_small(&out, &data);
    let bundle = onboard::bundle::Bundle::load(&out).expect("bundle loads");
    let spec = &bundle.manifest.input;
    let first = onboard::labels::read_labels(&data.join("val-calibrated-shuffled.txt")).unwrap()[0]
        .file
        .clone();
    let x = onboard::preprocess::load_tensor(&data.join(first), spec).unwrap();
    common::assert_agree(&common::onnx_runtime_vs_tract(&out, &x, tmp.path()), 1e-4);

    // The onboard binary loads and evaluates the new bundle.
    let labels = tmp.path().join("val50.txt");
    let text = std::fs::read_to_string(data.join("val-calibrated-shuffled.txt")).unwrap();
    std::fs::write(
        &labels,
        text.lines().take(50).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let res = Command::new(onboard_bin())
        .args(["eval", "--data"])
        .arg(&data)
        .arg("--labels")
        .arg(&labels)
        .arg("--model")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "onboard eval failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(doc["images"], 50);
    assert_eq!(doc["k"], 6);
    assert!(doc["nmi"].as_f64().unwrap() > 0.0);
}

/// Trained on train + validation (nothing held out), the temperature is fitted on the slice of
/// training kept out of the classifier's training.
#[test]
fn trained_on_everything_the_temperature_uses_a_held_out_training_slice() {
    let Some(data) = msl_data() else {
        eprintln!("MSL_DATA not set: skipping");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("models/all");
    let mut config = tiny_config();
    config.limit_images = Some(40);
    config.calibration_holdout = 8;
    let opts = TrainOptions {
        data,
        train_splits: vec![
            "train-calibrated-shuffled.txt".into(),
            "val-calibrated-shuffled.txt".into(),
        ],
        val_split: None,
        unlabeled: vec![],
        pretrained: None,
        out: out.clone(),
        work: tmp.path().join("run"),
        device: DeviceChoice::Cpu,
        config,
        command: "e2e test".into(),
        protocol: None,
    };
    let report = run::run(&opts).expect("training runs");
    // 80 labeled images, every 8th held out: 70 trained on, 10 for the temperature.
    assert_eq!(report.train_images, 70);
    let cal = report.calibration.as_ref().unwrap();
    assert_eq!(cal.held_out_images + cal.held_out_skipped, 10);
    assert!(cal.fitted_on.starts_with("every 8th image"), "{cal:?}");
    assert!(cal.nll_fitted.unwrap() <= cal.nll_t1.unwrap() + 1e-9);
    let written = onboard::bundle::Bundle::load(&out)
        .unwrap()
        .manifest
        .calibration
        .unwrap();
    assert_eq!(written.fitted_on, cal.fitted_on);
    assert_eq!(written.temperature, cal.temperature);
    assert_ne!(written.temperature, 1.0);
}

#[test]
fn autoencoder_loss_falls_on_real_images() {
    let Some(data) = msl_data() else {
        eprintln!("MSL_DATA not set: skipping");
        return;
    };
    use host_trainer::{data as d, model::Autoencoder, train};
    let cfg = tiny_config();
    tch::manual_seed(3);
    let spec = host_trainer::data::input_spec(cfg.input_size);
    let classes = d::class_names(&data).unwrap();
    let set = d::load_split(&data, d::TRAIN_SPLIT, &spec, Some(64), classes.len()).unwrap();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let ae = Autoencoder::new(
        &vs.root(),
        i64::from(cfg.input_size),
        &cfg.ae_channels,
        cfg.latent_dim,
    );
    let stage = StageConfig {
        epochs: 6,
        batch_size: 16,
        lr: 1e-3,
        max_steps: None,
        weight_decay: 0.0,
    };
    let h = train::train_autoencoder(&ae, &vs, &set.images, &stage, 3, tch::Device::Cpu).unwrap();
    assert_eq!(h.epoch_loss.len(), 6);
    assert!(
        h.epoch_loss[5] < 0.8 * h.epoch_loss[0],
        "loss did not fall: {:?}",
        h.epoch_loss
    );
}
