//! Shared by the integration tests: ONNX checker + ONNX Runtime against tract on a bundle.

use std::path::Path;
use std::process::Command;

use onboard::bundle::{Bundle, GraphInput, GraphRole, Precision};
use prost::Message;

/// One graph of a bundle run by ONNX Runtime and by tract on the same input.
#[derive(Debug)]
pub struct GraphDiff {
    /// Graph file.
    pub file: String,
    /// Its precision.
    pub precision: Precision,
    /// Largest |ORT - tract| over the output.
    pub max_diff: f32,
    /// For an int8 graph: one quantization step of its output
    /// ([`host_trainer::quantize::one_step`]), the largest |int8 - f32| of tract's outputs on
    /// the same input, and the op-by-op comparison ([`int8_ops_vs_tract`]).
    pub int8: Option<Int8Check>,
}

/// What an int8 graph is held to.
#[derive(Debug)]
pub struct Int8Check {
    /// One quantization step of the output.
    pub step: f32,
    /// Largest |tract int8 - tract f32| over the output.
    pub quantization_error: f32,
    /// Every node run alone on tract's inputs.
    pub ops: Vec<OpCheck>,
}

/// One node of an int8 graph, run alone on tract's values of its inputs.
#[derive(Debug)]
pub struct OpCheck {
    /// Node name.
    pub node: String,
    /// ONNX op type.
    pub op: String,
    /// Output type (`u8`, `i8`, `i32`, `f32`).
    pub dtype: String,
    /// Largest |ONNX Runtime - tract| (codes for integer outputs).
    pub ort_vs_tract: f64,
    /// Largest |tract - the ONNX definition| where `scripts/check_int8_ops.py` computes the
    /// definition (QLinearConv, MatMulInteger).
    pub tract_vs_definition: Option<f64>,
    /// Largest |ONNX Runtime - the ONNX definition|, likewise.
    pub ort_vs_definition: Option<f64>,
}

/// Runs `scripts/check_onnx.py` (ONNX checker with full check, then ONNX Runtime) on every graph
/// of the bundle at `dir` with the preprocessed image `x` (`[3, h, w]`), runs the same graphs
/// with tract, and returns the differences. Graphs reading the latent get tract's f32 encoder
/// output on both sides.
pub fn onnx_runtime_vs_tract(dir: &Path, x: &[f32], scratch: &Path) -> Vec<GraphDiff> {
    let bundle = Bundle::load(dir).unwrap();
    let mut latent = vec![0f32; bundle.manifest.latent_dim];
    onboard::runtime::Graph::load_at(&bundle, GraphRole::Encoder, Precision::F32)
        .unwrap()
        .run_into(x, &mut latent)
        .unwrap();
    let raw = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let (input, latent_file) = (scratch.join("x.bin"), scratch.join("latent.bin"));
    std::fs::write(&input, raw(x)).unwrap();
    std::fs::write(&latent_file, raw(&latent)).unwrap();
    let doc = python_json(
        "check_onnx.py",
        &[dir.as_os_str(), input.as_os_str(), latent_file.as_os_str()],
    );
    let graphs = doc["graphs"].as_array().unwrap();
    assert_eq!(graphs.len(), bundle.manifest.graphs.len());
    graphs
        .iter()
        .map(|g| {
            let file = g["file"].as_str().unwrap();
            let precision = g["precision"].as_str().unwrap();
            let entry = bundle
                .manifest
                .graphs
                .iter()
                .find(|e| e.file == file && e.precision.name() == precision)
                .unwrap();
            // The int8 precision may run an f32 graph (the classifier kept in f32).
            let integer = entry.precision == Precision::Int8
                && !bundle
                    .manifest
                    .graphs
                    .iter()
                    .any(|e| e.file == file && e.precision == Precision::F32);
            let feed = match entry.input {
                GraphInput::Image => x,
                GraphInput::Latent => latent.as_slice(),
            };
            let mut graph =
                onboard::runtime::Graph::load_at(&bundle, entry.role, entry.precision).unwrap();
            let mut out = vec![0f32; entry.output_dim];
            graph.run_into(feed, &mut out).unwrap();
            let ort = g["output"].as_array().unwrap();
            assert_eq!(ort.len(), out.len());
            let max_diff = ort
                .iter()
                .zip(&out)
                .map(|(a, b)| (a.as_f64().unwrap() as f32 - b).abs())
                .fold(0f32, f32::max);
            let int8 = integer.then(|| {
                let bytes = std::fs::read(dir.join(file)).unwrap();
                let model = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
                let mut reference = vec![0f32; entry.output_dim];
                onboard::runtime::Graph::load_at(&bundle, entry.role, Precision::F32)
                    .unwrap()
                    .run_into(feed, &mut reference)
                    .unwrap();
                let shape = bundle.manifest.input_shape(entry);
                let scratch = scratch.join(file);
                Int8Check {
                    step: host_trainer::quantize::one_step(&model).unwrap(),
                    quantization_error: max_abs(&out, &reference),
                    ops: int8_ops_vs_tract(&dir.join(file), &shape, feed, &scratch),
                }
            });
            GraphDiff {
                file: file.to_string(),
                precision: entry.precision,
                max_diff,
                int8,
            }
        })
        .collect()
}

/// Runs `scripts/SCRIPT` with the test venv's python and `args`, asserts it succeeded, and
/// parses its standard output as one JSON value.
fn python_json(script: &str, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let python = std::env::var("TRIAGE_PYTHON")
        .expect("TRIAGE_PYTHON is set by scripts/env.sh (run scripts/test.sh)");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(script);
    let res = Command::new(python).arg(path).args(args).output().unwrap();
    assert!(
        res.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    serde_json::from_slice(&res.stdout).unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Asserts ONNX Runtime agrees with tract: a float-compute graph within `f32_tolerance`; an
/// int8 graph op by op ([`assert_op_agrees`]: tract within one code of the ONNX definition, and
/// of ONNX Runtime), and end to end (where single-code rounding differences compound through
/// the layers) by no more than its own quantization error, or one output step when that is
/// larger; the end-to-end comparison is left out where ONNX Runtime departs from the
/// definition on this CPU.
pub fn assert_agree(diffs: &[GraphDiff], f32_tolerance: f32) {
    for d in diffs {
        let tol = match &d.int8 {
            None => f32_tolerance,
            Some(q) => {
                let exact: Vec<bool> = q.ops.iter().map(|o| assert_op_agrees(&d.file, o)).collect();
                if exact.contains(&false) {
                    // ONNX Runtime is not a reference on this CPU (see assert_op_agrees); tract
                    // was held to the definition node by node instead.
                    continue;
                }
                q.step.max(q.quantization_error)
            }
        };
        assert!(
            d.max_diff <= tol,
            "{} ({}): ONNX Runtime vs tract differ by {} (allowed {tol})",
            d.file,
            d.precision,
            d.max_diff
        );
    }
}

/// Asserts one node of an int8 graph: tract within one code of the ONNX definition (where the
/// script computes it), and ONNX Runtime within one code of tract (1e-5 for float outputs).
/// ONNX Runtime's x86 u8 x s8 kernels without VNNI (AVX2) add pairs of products in 16 bits with
/// saturation, so on such a CPU it can itself depart from the definition: then the node is held
/// to the definition alone, a note is printed, and `false` is returned.
fn assert_op_agrees(file: &str, o: &OpCheck) -> bool {
    let int = o.dtype != "f32";
    if let (true, Some(t)) = (int, o.tract_vs_definition) {
        assert!(
            t <= 1.0,
            "{file} node {} ({} -> {}): tract differs from the ONNX definition by {t} codes (ONNX Runtime: {:?} from the definition, {} from tract)",
            o.node,
            o.op,
            o.dtype,
            o.ort_vs_definition,
            o.ort_vs_tract
        );
    }
    if let (true, Some(e)) = (int, o.ort_vs_definition.filter(|e| *e > 1.0)) {
        eprintln!(
            "note: {file} node {} ({}): ONNX Runtime differs from the ONNX definition by {e} codes on this CPU (u8 x s8 without VNNI saturates); tract is within {} of it",
            o.node,
            o.op,
            o.tract_vs_definition.unwrap_or(0.0)
        );
        return false;
    }
    let allowed = if int { 1.0 } else { 1e-5 };
    assert!(
        o.ort_vs_tract <= allowed,
        "{file} node {} ({} -> {}): ONNX Runtime vs tract differ by {} (allowed {allowed})",
        o.node,
        o.op,
        o.dtype,
        o.ort_vs_tract
    );
    true
}

#[allow(
    dead_code,
    reason = "each test crate compiles this module; not all use every helper"
)]
/// Adds the int8 precisions to the bundle at `dir`, calibrated on 16 training images (no
/// validation), and checks the manifest lists all three precisions with f32 still the default.
pub fn quantize_small(dir: &Path, data: &Path) {
    use host_trainer::quantize_bundle::{self, QuantizeConfig, QuantizeOptions};
    let report = quantize_bundle::run(&QuantizeOptions {
        bundle: dir.to_path_buf(),
        data: data.to_path_buf(),
        val_split: None,
        default_precision: None,
        config: QuantizeConfig {
            calibration_images: 16,
            ..QuantizeConfig::default()
        },
    })
    .unwrap();
    assert_eq!(report.calibration_images, 16);
    let bundle = Bundle::load(dir).unwrap();
    assert_eq!(bundle.manifest.precisions(), Precision::ALL.to_vec());
    assert_eq!(bundle.manifest.default_precision, Precision::F32);
    let card = std::fs::read_to_string(dir.join("MODEL_CARD.md")).unwrap();
    assert!(card.contains("## Precisions"), "{card}");
}

/// Largest difference per node between ONNX Runtime and tract on the int8 graph at `model`
/// (input `x` of shape `shape`): tract's value of every tensor is dumped, then
/// `scripts/check_int8_ops.py` runs each node alone in ONNX Runtime on tract's inputs.
/// Returns every node's differences, in codes for integer outputs.
#[allow(
    dead_code,
    reason = "each test crate compiles this module; not all use every helper"
)]
pub fn int8_ops_vs_tract(model: &Path, shape: &[usize], x: &[f32], scratch: &Path) -> Vec<OpCheck> {
    use tract_onnx::prelude::*;
    let bytes = std::fs::read(model).unwrap();
    let proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_ref().unwrap();
    let (names, plan) = host_trainer::calibrate::every_tensor_plan(&proto, shape).unwrap();
    let input = Tensor::from_shape(shape, x).unwrap();
    let outs = plan.run(tvec![input.clone().into()]).unwrap();
    let dump = scratch.join("dump");
    std::fs::create_dir_all(&dump).unwrap();
    let mut index = serde_json::Map::new();
    let input_name = graph.input[0].name.clone();
    let all = std::iter::once((&input_name, &input))
        .chain(names.iter().zip(outs.iter().map(|t| -> &Tensor { t })));
    for (name, t) in all {
        let dtype = match t.datum_type() {
            DatumType::U8 => "u8",
            DatumType::I8 => "i8",
            DatumType::I32 => "i32",
            DatumType::F32 => "f32",
            other => panic!("{name}: unexpected type {other:?}"),
        };
        index.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": t.shape()}),
        );
        let raw = t.try_as_plain_ram().unwrap().as_bytes().to_vec();
        std::fs::write(dump.join(format!("{name}.bin")), raw).unwrap();
    }
    std::fs::write(
        dump.join("index.json"),
        serde_json::to_vec(&serde_json::Value::Object(index)).unwrap(),
    )
    .unwrap();
    let doc = python_json("check_int8_ops.py", &[model.as_os_str(), dump.as_os_str()]);
    doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| OpCheck {
            node: n["node"].as_str().unwrap().to_string(),
            op: n["op"].as_str().unwrap().to_string(),
            dtype: n["dtype"].as_str().unwrap().to_string(),
            ort_vs_tract: n["max_diff"].as_f64().unwrap(),
            tract_vs_definition: n["tract_vs_definition"].as_f64(),
            ort_vs_definition: n["ort_vs_definition"].as_f64(),
        })
        .collect()
}
