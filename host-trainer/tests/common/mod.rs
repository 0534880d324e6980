//! Shared by the integration tests: ONNX checker + ONNX Runtime against tract on a bundle.

use std::path::Path;
use std::process::Command;

use onboard::bundle::{Bundle, GraphInput, GraphRole};

/// Runs `scripts/check_onnx.py` (ONNX checker, then ONNX Runtime) on the bundle at `dir` with
/// the preprocessed image `x` (`[3, h, w]`), runs the same graphs with tract (a graph reading
/// the latent gets the encoder's output), and returns the largest |ORT - tract| per graph file.
pub fn onnx_runtime_vs_tract(dir: &Path, x: &[f32], scratch: &Path) -> Vec<(String, f32)> {
    let bundle = Bundle::load(dir).unwrap();
    let input = scratch.join("x.bin");
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&input, bytes).unwrap();
    let python = std::env::var("TRIAGE_PYTHON")
        .expect("TRIAGE_PYTHON is set by scripts/env.sh (run scripts/test.sh)");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check_onnx.py");
    let res = Command::new(python)
        .arg(script)
        .arg(dir)
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "check_onnx.py failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    let (enc, _) = bundle.graph(GraphRole::Encoder);
    let mut latent = vec![0f32; enc.output_dim];
    onboard::runtime::Graph::load_role(&bundle, GraphRole::Encoder)
        .unwrap()
        .run_into(x, &mut latent)
        .unwrap();
    let graphs = doc["graphs"].as_array().unwrap();
    assert_eq!(graphs.len(), 2);
    graphs
        .iter()
        .map(|g| {
            let file = g["file"].as_str().unwrap();
            let entry = bundle
                .manifest
                .graphs
                .iter()
                .find(|e| e.file == file)
                .unwrap();
            let feed = match entry.input {
                GraphInput::Image => x,
                GraphInput::Latent => latent.as_slice(),
            };
            let mut graph = onboard::runtime::Graph::load_role(&bundle, entry.role).unwrap();
            let mut out = vec![0f32; entry.output_dim];
            graph.run_into(feed, &mut out).unwrap();
            let ort = g["output"].as_array().unwrap();
            assert_eq!(ort.len(), out.len());
            let max = ort
                .iter()
                .zip(&out)
                .map(|(a, b)| (a.as_f64().unwrap() as f32 - b).abs())
                .fold(0f32, f32::max);
            (file.to_string(), max)
        })
        .collect()
}
