//! The probe recipe end to end on a few real MSL images: a frozen ImageNet EfficientNet-Lite0
//! and a logit-adjusted linear probe are exported as the backbone graph and a Gemm head, the
//! autoencoder is not trained (the clusters use the backbone's features), and the calibration
//! holds the prior the probe's probabilities refer to (uniform for full logit adjustment) with
//! a temperature fitted on the training images' cross-fitted logits. Needs `MSL_DATA` and `TRIAGE_WEIGHTS`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use host_trainer::config::TrainConfig;
use host_trainer::device::DeviceChoice;
use host_trainer::encoders::ClusterEncoder;
use host_trainer::probe_recipe::ProbeRecipe;
use host_trainer::run::{self, TrainOptions};
use onboard::bundle::{Bundle, GraphInput, GraphRole};

fn env_dir(var: &str, must_hold: &str) -> Option<PathBuf> {
    let d = PathBuf::from(std::env::var_os(var)?);
    assert!(
        d.join(must_hold).is_file(),
        "{var}={} is set but holds no {must_hold}",
        d.display()
    );
    Some(d)
}

#[test]
fn probe_recipe_exports_the_frozen_backbone_and_a_calibrated_probe() {
    let (Some(data), Some(weights)) = (
        env_dir("MSL_DATA", "train-calibrated-shuffled.txt"),
        env_dir("TRIAGE_WEIGHTS", "efficientnet-lite0.safetensors"),
    ) else {
        eprintln!("MSL_DATA or TRIAGE_WEIGHTS not set: skipping");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("models/probe");
    let config = TrainConfig {
        input_size: 64,
        limit_images: Some(48),
        k: 4,
        kmeans_restarts: 2,
        cluster_encoder: ClusterEncoder::Classifier,
        l2_normalize: false,
        parity_images: 8,
        parity_tolerance: 1e-3,
        probe: Some(ProbeRecipe::default()),
        ..TrainConfig::default()
    };
    let opts = TrainOptions {
        data,
        train_splits: vec!["train-calibrated-shuffled.txt".into()],
        val_split: Some("val-calibrated-shuffled.txt".into()),
        unlabeled: vec![],
        pretrained: Some(weights),
        out: out.clone(),
        work: tmp.path().join("run"),
        device: DeviceChoice::Cpu,
        config,
        command: "probe recipe test".into(),
        protocol: None,
    };
    let report = run::run(&opts).expect("training runs");
    assert!(report.pretrained_sha256.is_some());
    assert_eq!(report.autoencoder.steps, 0, "the autoencoder was trained");
    assert!(!tmp.path().join("run/autoencoder.safetensors").exists());
    assert!(report.encoder_parity.max_abs_diff <= 1e-3);
    assert!(report.classifier_parity.max_abs_diff <= 1e-3);

    let bundle = Bundle::load(&out).unwrap();
    let m = &bundle.manifest;
    assert_eq!(m.latent_dim, 1280);
    let head = m
        .graphs
        .iter()
        .find(|g| g.role == GraphRole::Classifier)
        .unwrap();
    assert_eq!(head.input, GraphInput::Latent, "the head reads the encoder");
    let cal = m.calibration.as_ref().unwrap();
    let uniform = 1.0 / cal.class_prior.len() as f32;
    assert!(
        cal.class_prior.iter().all(|p| (p - uniform).abs() < 1e-4),
        "a fully logit-adjusted probe refers to the uniform prior: {:?}",
        cal.class_prior
    );
    let fitted = report.calibration.as_ref().unwrap();
    assert_eq!(fitted.logit_adjust, 1.0);
    // The temperature comes from the 48 training images' cross-fitted logits; the validation
    // split stays evaluation only.
    assert_eq!(fitted.held_out_images, 48);
    assert!(cal.fitted_on.contains("cross-fitted in 5 folds"), "{cal:?}");
    assert!(fitted.nll_fitted.unwrap() <= fitted.nll_t1.unwrap() + 1e-9);
    assert_ne!(cal.temperature, 1.0);
}
