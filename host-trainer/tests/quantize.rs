//! Int8 quantization: the rewritten graphs use integer ops only and stay close to f32 on a
//! synthetic network with every op the exporter writes, and the committed default bundle's
//! graphs (every precision) pass ONNX's checker and agree between ONNX Runtime and tract
//! (int8: op by op within one code).
//!
//! The committed-bundle test needs `TRIAGE_PYTHON` (set by `scripts/env.sh`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use host_trainer::calibrate::calibrate;
use host_trainer::export::{build_model, Op};
use host_trainer::quantize::{self, quantize_rows, ActQuant};
use onboard::bundle::{Bundle, GraphRole, Precision};
use rand::{Rng, SeedableRng};
use tract_onnx::prelude::*;

fn conv(rng: &mut impl Rng, cin: i64, cout: i64, k: i64, stride: i64, group: i64) -> Op {
    let n = (cout * cin / group * k * k) as usize;
    let fan_in = (cin / group * k * k) as f32;
    Op::Conv {
        weight: (0..n)
            .map(|_| rng.random_range(-1.0..1.0) / fan_in.sqrt())
            .collect(),
        shape: [cout, cin / group, k, k],
        bias: (0..cout).map(|_| rng.random_range(-0.1..0.1)).collect(),
        stride,
        pads: [k / 2; 4],
        group,
    }
}

/// Stem conv + ReLU6, a residual block (depthwise conv + ReLU6, 1x1 conv), 1x1 conv + ReLU,
/// pooling, flatten and a dense layer: input `[1, 3, 16, 16]`, output `[1, 5]`.
fn synthetic() -> tract_onnx::pb::ModelProto {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let ops = vec![
        conv(&mut rng, 3, 8, 3, 2, 1),
        Op::Relu6,
        Op::Residual(vec![
            conv(&mut rng, 8, 8, 3, 1, 8),
            Op::Relu6,
            conv(&mut rng, 8, 8, 1, 1, 1),
        ]),
        conv(&mut rng, 8, 16, 1, 1, 1),
        Op::Relu,
        Op::GlobalAveragePool,
        Op::Flatten,
        Op::Gemm {
            weight: (0..80).map(|_| rng.random_range(-0.5..0.5)).collect(),
            out_dim: 5,
            in_dim: 16,
            bias: (0..5).map(|_| rng.random_range(-0.1..0.1)).collect(),
        },
    ];
    build_model("synthetic", &ops, 16, 16, 5, "").unwrap()
}

fn inputs(seed: u64, n: usize) -> Vec<Vec<f32>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            (0..3 * 16 * 16)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect()
        })
        .collect()
}

fn run(model: &tract_onnx::pb::ModelProto, x: &[f32]) -> Vec<f32> {
    let plan = onboard::tract_isa::onnx()
        .model_for_proto_model(model)
        .unwrap()
        .with_input_fact(0, f32::fact([1, 3, 16, 16]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let t = Tensor::from_shape(&[1, 3, 16, 16], x).unwrap();
    let out = plan.run(tvec![t.into()]).unwrap();
    out[0]
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn per_row_weights_and_activation_parameters_round_trip_within_half_a_step() {
    let w = [0.5, -1.0, 0.25, 0.0, 0.0, 0.0, 3.0, -0.01, 2.0];
    let (codes, scales) = quantize_rows(&w, 3);
    assert_eq!(scales[1], 1.0, "an all-zero row gets scale 1");
    for (k, (&c, &v)) in codes.iter().zip(&w).enumerate() {
        let s = scales[k / 3];
        assert!((c as f32 * s - v).abs() <= s / 2.0 + 1e-7, "{k}");
    }
    assert_eq!(codes[1], -127);
    let p = ActQuant::from_range(-1.0, 3.0);
    assert_eq!(p.zero_point, 64);
    assert!((p.scale - 4.0 / 255.0).abs() < 1e-7);
    let relu = ActQuant::from_range(0.5, 6.0);
    assert_eq!(
        relu.zero_point, 0,
        "a non-negative range keeps 0 exact at code 0"
    );
}

#[test]
fn a_dead_channel_gets_a_scale_whose_bias_and_accumulator_fit_in_i32() {
    // Channel 0 is dead (weights ~1e-9) with a real bias; channel 1 is ordinary.
    let w = [1e-9, -1e-9, 0.0, 0.5, -0.25, 1.0];
    let b = [0.8f32, 0.1];
    let x_scale = 0.0078125;
    let products = 3;
    let min = quantize::bias_safe_scales(&b, x_scale, products).unwrap();
    let (codes, scales) = quantize::quantize_rows_at_least(&w, 2, &min);
    // Without the floor: scale 1e-9 / 127 and a bias code of 1e14, far outside i32.
    assert!(scales[0] >= min[0] && scales[0] > 1e-9 / 127.0);
    assert_eq!(&codes[..3], &[0, 0, 0], "the dead weights quantize to 0");
    let acc_max = products as f64 * 255.0 * 127.0;
    for (bias, s) in b.iter().zip(&scales) {
        let code = (f64::from(*bias) / (f64::from(x_scale) * f64::from(*s))).round();
        assert!(code.abs() + acc_max <= f64::from(i32::MAX), "{code}");
    }
    // The ordinary channel keeps its max|w| / 127 scale and full code range.
    assert_eq!(scales[1], 1.0 / 127.0);
    assert_eq!(codes[5], 127);
    assert!(quantize::bias_safe_scales(&b, x_scale, 40_000).is_err());
    assert!(quantize::bias_safe_scales(&b, 0.0, 3).is_err());
}

#[test]
fn integer_graph_uses_integer_ops_and_stays_close_to_f32() {
    let model = synthetic();
    let calib = inputs(1, 32);
    let ranges = calibrate(&model, &[1, 3, 16, 16], calib.iter().map(Vec::as_slice)).unwrap();
    let q = quantize::integer(&model, &ranges).unwrap();
    let ops: Vec<&str> = q
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    assert_eq!(ops.iter().filter(|o| **o == "QLinearConv").count(), 4);
    assert_eq!(ops.iter().filter(|o| **o == "MatMulInteger").count(), 1);
    assert!(!ops
        .iter()
        .any(|o| *o == "Conv" || *o == "Gemm" || *o == "Clip"));
    assert!(q
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .all(|n| n.domain.is_empty()));
    assert!(q.opset_import.iter().all(|o| o.domain.is_empty()));
    let step = quantize::one_step(&q).unwrap();
    assert!(step > 0.0);
    let w = quantize::weights_only(&model).unwrap();
    for x in inputs(2, 4) {
        let (f, i, wo) = (run(&model, &x), run(&q, &x), run(&w, &x));
        let scale = f.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max_diff(&f, &i) <= 0.05 * scale, "int8 {i:?} vs f32 {f:?}");
        assert!(
            max_diff(&f, &i) > 0.0,
            "the int8 graph computes in integers"
        );
        assert!(
            max_diff(&f, &wo) <= 0.02 * scale,
            "int8 weights {wo:?} vs f32 {f:?}"
        );
    }
}

#[test]
fn unsupported_ops_and_missing_ranges_are_errors() {
    let model = synthetic();
    let err = quantize::integer(&model, &Default::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("no calibration range"),
        "{err:#}"
    );
    let mut odd = model.clone();
    odd.graph.as_mut().unwrap().node[1].op_type = "Sigmoid".into();
    let ranges = calibrate(
        &model,
        &[1, 3, 16, 16],
        inputs(1, 2).iter().map(Vec::as_slice),
    );
    let err = quantize::integer(&odd, &ranges.unwrap()).unwrap_err();
    assert!(format!("{err:#}").contains("Sigmoid"), "{err:#}");
    let empty: Vec<&[f32]> = Vec::new();
    assert!(calibrate(&model, &[1, 3, 16, 16], empty).is_err());
}

#[test]
fn default_bundle_every_precision_passes_onnx_checks_and_matches_tract() {
    if std::env::var_os("TRIAGE_PYTHON").is_none() {
        eprintln!("TRIAGE_PYTHON not set: skipping (run scripts/test.sh)");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default");
    let bundle = Bundle::load(&dir).unwrap();
    assert_eq!(bundle.manifest.precisions(), Precision::ALL.to_vec());
    let int8_bytes: u64 = [GraphRole::Encoder, GraphRole::Classifier]
        .iter()
        .map(|&r| {
            let (_, p) = bundle.graph_at(r, Precision::Int8).unwrap();
            std::fs::metadata(p).unwrap().len()
        })
        .sum();
    assert!(
        int8_bytes <= 5 << 20,
        "int8 graphs {int8_bytes} bytes > 5 MiB"
    );
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/pass/000_ground.jpg");
    let x = onboard::preprocess::load_tensor(&image, &bundle.manifest.input).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let diffs = common::onnx_runtime_vs_tract(&dir, &x, tmp.path());
    assert_eq!(diffs.len(), 6);
    for d in &diffs {
        eprintln!(
            "{}: max |ORT - tract| {:.3e}{}",
            d.file,
            d.max_diff,
            d.int8.as_ref().map_or(String::new(), |q| format!(
                "; step {:.3e}, |int8 - f32| {:.3e}, {} ops",
                q.step,
                q.quantization_error,
                q.ops.len()
            ))
        );
    }
    common::assert_agree(&diffs, 1e-4);
}

/// The int8 graphs run over and over, in several threads at once, while libtorch's intra-op
/// threads multiply matrices in the same process and another thread churns the allocator:
/// the set-up in which tract's AMX integer kernel crashed this crate's tests (SIGSEGV, 3 runs
/// in 7, on an Intel Xeon with AMX). Every pass must give the first pass's values bit for bit,
/// with the project's integer kernels and with tract's own integer path.
#[test]
fn int8_graphs_never_crash_beside_busy_libtorch_threads() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use onboard::runtime::{Graph, LoadOptions};

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bundle = Arc::new(Bundle::load(&root.join("models/default")).unwrap());
    let images: Vec<Vec<f32>> = ["000_ground.jpg", "002_target.jpg"]
        .iter()
        .map(|n| {
            let path = root.join("testdata/pass").join(n);
            onboard::preprocess::load_tensor(&path, &bundle.manifest.input).unwrap()
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let torch_products = Arc::new(AtomicUsize::new(0));
    let torch = {
        let (stop, count) = (stop.clone(), torch_products.clone());
        std::thread::spawn(move || {
            let a = tch::Tensor::randn([384, 384], (tch::Kind::Float, tch::Device::Cpu));
            while !stop.load(Ordering::Relaxed) {
                let b = a.matmul(&a).relu();
                assert!(b.size() == [384, 384]);
                count.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let v: Vec<u64> = (0..4096).map(|i| i as u64 * 31 + n as u64).collect();
                n = n.wrapping_add(v[n % v.len()] as usize);
            }
            n
        })
    };
    let passes = 12;
    let workers: Vec<_> = [LoadOptions::default(), LoadOptions::TRACT_ONLY]
        .into_iter()
        .flat_map(|options| [options, options])
        .map(|options| {
            let (bundle, images) = (bundle.clone(), images.clone());
            std::thread::spawn(move || {
                let load = |role| {
                    let (entry, path) = bundle.graph_at(role, Precision::Int8).unwrap();
                    let shape = bundle.manifest.input_shape(entry);
                    let g = Graph::load_shaped_with(&path, &shape, entry.output_dim, options);
                    (g.unwrap(), entry.output_dim)
                };
                let ((mut enc, ed), (mut cls, cd)) =
                    (load(GraphRole::Encoder), load(GraphRole::Classifier));
                let mut first: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
                for pass in 0..passes {
                    for (i, x) in images.iter().enumerate() {
                        let (mut z, mut y) = (vec![0.0; ed], vec![0.0; cd]);
                        enc.run_into(x, &mut z).unwrap();
                        cls.run_into(&z, &mut y).unwrap();
                        if pass == 0 {
                            first.push((z, y));
                        } else {
                            assert!(first[i].0 == z && first[i].1 == y, "pass {pass} image {i}");
                        }
                    }
                }
                (options, enc.replaced().int8)
            })
        })
        .collect();
    let replaced: Vec<usize> = workers.into_iter().map(|w| w.join().unwrap().1).collect();
    stop.store(true, Ordering::Relaxed);
    torch.join().unwrap();
    churn.join().unwrap();
    assert_eq!(replaced, [49, 49, 0, 0]);
    assert!(torch_products.load(Ordering::Relaxed) > 0);
}
