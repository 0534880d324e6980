//! The ImageNet EfficientNet-Lite0, Lite1 and Lite2 weights converted by
//! `scripts/convert_effnet.py` reproduce each package model's logits on a fixed input, in tch
//! and as exported ONNX run by tract.
//!
//! Needs `TRIAGE_WEIGHTS` (set by `scripts/env.sh`, folder made by `scripts/setup.sh`); each
//! weight file's `.reference.json` sibling holds the package model's logits.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use host_trainer::effnet::{self, EfficientNetLite, Lite};
use host_trainer::export::{self, Op};
use host_trainer::model::to_vec;
use tch::{nn, Device, Kind, Tensor};

fn weights(lite: Lite) -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("TRIAGE_WEIGHTS")?);
    let p = lite.weight_file(&dir);
    assert!(
        p.is_file(),
        "TRIAGE_WEIGHTS={} is set but holds no {}; run scripts/setup.sh",
        dir.display(),
        p.display()
    );
    Some(p)
}

/// `[1, 3, side, side]`, pixel `(7 row + 3 col + 11 channel) mod 256`, normalized
/// `(p - 127) / 128`.
fn fixed_input(side: i64) -> Tensor {
    let mut v = Vec::with_capacity((3 * side * side) as usize);
    for c in 0..3 {
        for i in 0..side {
            for j in 0..side {
                let p = (7 * i + 3 * j + 11 * c) % 256;
                v.push((p as f32 - 127.0) / 128.0);
            }
        }
    }
    Tensor::from_slice(&v).view([1, 3, side, side])
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn lite0_reproduces_the_package_logits() {
    check(Lite::Lite0);
}

#[test]
fn lite1_reproduces_the_package_logits() {
    check(Lite::Lite1);
}

#[test]
fn lite2_reproduces_the_package_logits() {
    check(Lite::Lite2);
}

fn check(lite: Lite) {
    let Some(file) = weights(lite) else {
        eprintln!("TRIAGE_WEIGHTS not set: skipping");
        return;
    };
    let reference_path = file.with_extension("reference.json");
    let text = std::fs::read_to_string(&reference_path).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let want: Vec<f32> = reference["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let top5: Vec<i64> = reference["top5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();

    let vs = nn::VarStore::new(Device::Cpu);
    let net = EfficientNetLite::new(&vs.root(), lite, 0, false);
    let fc = effnet::imagenet_fc(&vs.root());
    let set = effnet::load_pretrained(&vs, "", &file, &[]).unwrap();
    assert_eq!(set, vs.variables().len());

    // The package model pads for its native side, so the reference input has that side.
    let side = i64::from(lite.native_size());
    assert_eq!(
        reference["side"].as_i64(),
        Some(side),
        "{}",
        reference_path.display()
    );
    let x = fixed_input(side);
    let logits = tch::no_grad(|| net.embed(&x, false).apply(&fc));
    let got = to_vec(&logits);
    let max_diff = max_abs_diff(&got, &want);
    assert!(
        max_diff < 1e-3,
        "{}: tch vs package logits: max diff {max_diff}",
        lite.name()
    );
    let order = logits.squeeze().argsort(0, true);
    let got_top5: Vec<i64> = Vec::try_from(order.narrow(0, 0, 5).to_kind(Kind::Int64)).unwrap();
    assert_eq!(got_top5, top5);

    let mut ops = net.ops(side, side);
    ops.push(Op::Gemm {
        weight: to_vec(&fc.ws),
        out_dim: 1000,
        in_dim: effnet::FEATURES,
        bias: to_vec(fc.bs.as_ref().unwrap()),
    });
    let model = export::build_model("effnet", &ops, side, side, 1000, "test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("effnet.onnx");
    std::fs::write(&onnx, export::encode(&model)).unwrap();
    let mut graph =
        onboard::runtime::Graph::load(&onnx, side as usize, side as usize, 1000).unwrap();
    let mut out = vec![0f32; 1000];
    graph.run_into(&to_vec(&x), &mut out).unwrap();
    let max_diff = max_abs_diff(&out, &want);
    assert!(
        max_diff < 2e-3,
        "{}: tract vs package logits: max diff {max_diff}",
        lite.name()
    );
}
