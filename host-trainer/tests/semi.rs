//! The semi-supervised classifier on real images: one step lowers the objective, and a tiny
//! run through `host-trainer train` ships an EfficientNet bundle that ONNX Runtime and tract
//! agree on.
//!
//! Needs `MSL_DATA`, `TRIAGE_EFFNET_LITE0` and `TRIAGE_PYTHON` (set by `scripts/env.sh`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use host_trainer::config::{StageConfig, TrainConfig};
use host_trainer::device::DeviceChoice;
use host_trainer::encoders::ClusterEncoder;
use host_trainer::run::{self, TrainOptions};
use host_trainer::semi::{SemiConfig, SemiNet};
use host_trainer::semi_train::{self, SemiData};
use host_trainer::{data as d, effnet};

fn env_path(var: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os(var)?);
    assert!(
        p.exists(),
        "{var}={} is set but does not exist; run scripts/setup.sh",
        p.display()
    );
    Some(p)
}

fn small_semi() -> SemiConfig {
    SemiConfig {
        frozen_blocks: 8,
        batch_cls: 8,
        batch_contrastive: 12,
        batch_unlabeled: 6,
        lr_backbone: 1e-4,
        lr_projection: 1e-3,
        ..SemiConfig::default()
    }
}

#[test]
fn one_step_lowers_the_objective_on_real_images() {
    let (Some(data), Some(weights)) = (env_path("MSL_DATA"), env_path("TRIAGE_EFFNET_LITE0"))
    else {
        eprintln!("MSL_DATA or TRIAGE_EFFNET_LITE0 not set: skipping");
        return;
    };
    let spec = host_trainer::data::input_spec(64);
    let classes = d::class_names(&data).unwrap();
    let set = d::load_split(&data, d::TRAIN_SPLIT, &spec, Some(96), classes.len()).unwrap();
    // No dropout: the comparison must not depend on the global torch RNG (tests share it).
    let cfg = SemiConfig {
        dropout: 0.0,
        ..small_semi()
    };
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = SemiNet::new(&vs, &cfg, classes.len() as i64);
    effnet::load_pretrained(&vs, "backbone.", &weights, &["_fc."]).unwrap();
    let data = SemiData {
        images: &set.images,
        labels: &set.labels,
        unlabeled: Some(&set.images),
    };
    let cpu = tch::Device::Cpu;
    let n = classes.len();
    let before = semi_train::first_step_loss(&net, &data, n, &cfg, 5, cpu).unwrap();
    let h =
        semi_train::train_semi(&net, &vs, &data, n, &cfg, 5, cpu, Some(1), |_, _| Ok(())).unwrap();
    assert_eq!(h.steps, 1);
    assert!((h.epoch_loss[0] - before).abs() < 1e-4, "{h:?} vs {before}");
    let parts = h.epoch_cls[0]
        + cfg.lambda_s * h.epoch_contrastive[0]
        + cfg.lambda_u * h.epoch_unlabeled[0];
    assert!((h.epoch_loss[0] - parts).abs() < 1e-4, "components {h:?}");
    assert!(h.epoch_contrastive[0] != 0.0 && h.epoch_unlabeled[0] != 0.0);
    let after = semi_train::first_step_loss(&net, &data, n, &cfg, 5, cpu).unwrap();
    assert!(after < before, "loss {before} -> {after} after one step");
}

#[test]
fn semi_bundle_exports_and_onnx_runtime_agrees_with_tract() {
    let (Some(data), Some(weights)) = (env_path("MSL_DATA"), env_path("TRIAGE_EFFNET_LITE0"))
    else {
        eprintln!("MSL_DATA or TRIAGE_EFFNET_LITE0 not set: skipping");
        return;
    };
    let base = TrainConfig::default();
    let config = TrainConfig {
        limit_images: Some(64),
        k: 4,
        kmeans_restarts: 1,
        autoencoder: StageConfig {
            epochs: 1,
            batch_size: 32,
            ..base.autoencoder.clone()
        },
        classifier: StageConfig {
            max_steps: Some(2),
            ..base.classifier.clone()
        },
        parity_images: 4,
        parity_tolerance: 1e-4,
        semi: Some(small_semi()),
        cluster_encoder: ClusterEncoder::Classifier,
        ..base
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("models/semi");
    let opts = TrainOptions {
        data: data.clone(),
        train_splits: vec![d::TRAIN_SPLIT.into()],
        val_split: Some(d::VAL_SPLIT.into()),
        unlabeled: vec![],
        pretrained: Some(weights),
        out: out.clone(),
        work: tmp.path().join("run"),
        device: DeviceChoice::Cpu,
        config,
        command: "semi test".into(),
        protocol: None,
    };
    let report = run::run(&opts).unwrap();
    assert_eq!(report.semi.as_ref().unwrap().steps, 2);
    assert!(report.pretrained_sha256.is_some());
    assert!(report.classifier_parity.max_abs_diff <= 1e-4);
    assert!(report.encoder_parity.max_abs_diff <= 1e-4);
    common::quantize_small(&out, &data);
    let bundle = onboard::bundle::Bundle::load(&out).unwrap();
    let first = onboard::labels::read_labels(&data.join(d::VAL_SPLIT)).unwrap()[0]
        .file
        .clone();
    let x = onboard::preprocess::load_tensor(&data.join(&first), &bundle.manifest.input).unwrap();
    common::assert_agree(&common::onnx_runtime_vs_tract(&out, &x, tmp.path()), 1e-4);
    // k-means runs on the classifier's own features, so the classifier graph is its head alone,
    // reading the encoder's output; the onboard analyzer runs it so.
    let (cls, _) = bundle.graph(onboard::bundle::GraphRole::Classifier);
    assert_eq!(cls.input, onboard::bundle::GraphInput::Latent);
    let mut analyzer = onboard::pipeline::Analyzer::new(bundle).unwrap();
    let a = analyzer.analyze_file(&data.join(&first)).unwrap();
    assert!(a.confidence > 0.0 && a.class < 25 && a.probs.len() == 25);
}
