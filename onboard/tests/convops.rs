//! The default bundle's encoders give the same latent with the project's convolution kernels
//! (`onboard::convops`) as with tract's own.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use onboard::bundle::{Bundle, GraphRole, Precision};
use onboard::runtime::{Graph, LoadOptions};

#[test]
fn own_convolution_kernels_match_tracts_on_the_default_encoders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bundle = Bundle::load(&root.join("models/default")).unwrap();
    let image = root.join("testdata/pass/000_ground.jpg");
    let x = onboard::preprocess::load_tensor(&image, &bundle.manifest.input).unwrap();
    for precision in [Precision::F32, Precision::Int8Weights] {
        let (entry, path) = bundle.graph_at(GraphRole::Encoder, precision).unwrap();
        let shape = bundle.manifest.input_shape(entry);
        let mut own = Graph::load_shaped(&path, &shape, entry.output_dim).unwrap();
        let mut theirs =
            Graph::load_shaped_with(&path, &shape, entry.output_dim, LoadOptions::TRACT_ONLY)
                .unwrap();
        let (r, t) = (own.replaced(), theirs.replaced());
        assert_eq!(r.depthwise, 16, "{precision}");
        // EfficientNet-Lite0: a 3x3 stem, 15 expansion and 16 projection 1x1 convolutions and
        // the 1x1 head; a ReLU6 (Max, Min) after the stem, every depthwise, every expansion and
        // the head.
        let simd = onboard::convops::has_simd();
        assert_eq!(r.pointwise, if simd { 32 } else { 0 }, "{precision}");
        assert_eq!(r.im2col, usize::from(simd), "{precision}");
        let relu6 = 16 + if simd { 1 + 15 + 1 } else { 0 };
        assert_eq!(r.clamps, 2 * relu6, "{precision}");
        assert_eq!((t.depthwise, t.pointwise, t.im2col, t.clamps), (0, 0, 0, 0));
        let (mut a, mut b) = (vec![0.0; entry.output_dim], vec![0.0; entry.output_dim]);
        own.run_into(&x, &mut a).unwrap();
        theirs.run_into(&x, &mut b).unwrap();
        // Summation order differs (fused multiply-adds, other tiles): relative to the magnitude.
        let max = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs() / (1.0 + q.abs()))
            .fold(0.0f32, f32::max);
        assert!(max <= 1e-5, "{precision}: max relative difference {max}");
        assert!(a.iter().any(|v| *v != 0.0));
    }
}

#[test]
fn own_integer_kernels_track_tracts_on_the_default_int8_encoder() {
    // Node by node the project's integer kernels equal ONNX's QLinearConv definition exactly
    // and tract's evaluation is within one code of it (the lib test
    // `every_qlinearconv_of_the_default_int8_encoder_equals_the_definition`); end to end those
    // single codes compound through 49 layers. The two int8 encoders must differ by less than
    // int8 differs from f32 (the quantization error itself).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bundle = Bundle::load(&root.join("models/default")).unwrap();
    let load = |precision, options| {
        let (entry, path) = bundle.graph_at(GraphRole::Encoder, precision).unwrap();
        let shape = bundle.manifest.input_shape(entry);
        Graph::load_shaped_with(&path, &shape, entry.output_dim, options).unwrap()
    };
    let mut own = load(Precision::Int8, LoadOptions::default());
    let mut theirs = load(Precision::Int8, LoadOptions::TRACT_ONLY);
    let mut f32_graph = load(Precision::F32, LoadOptions::default());
    // Every QLinearConv: the stem, 16 depthwise, 32 1x1.
    assert_eq!(own.replaced().int8, 49);
    assert_eq!(theirs.replaced().int8, 0);
    // The input image and the residual stream after each of the 9 skip connections.
    assert_eq!(own.replaced().quantize, 10);
    // Those 9 adds run fused with their dequantizations (and, where the sum feeds nothing
    // else, its quantization); the input's quantization with its move to channels-last.
    assert_eq!(own.replaced().residual, 9);
    assert_eq!(own.replaced().quantize_channels_last, 1);
    assert_eq!(own.replaced().dequantize_sum, 1);
    assert_eq!(theirs.replaced().residual, 0);
    let dim = bundle.manifest.latent_dim;
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max)
    };
    for name in ["000_ground.jpg", "002_target.jpg"] {
        let image = root.join("testdata/pass").join(name);
        let x = onboard::preprocess::load_tensor(&image, &bundle.manifest.input).unwrap();
        let (mut a, mut b, mut f) = (vec![0.0; dim], vec![0.0; dim], vec![0.0; dim]);
        own.run_into(&x, &mut a).unwrap();
        theirs.run_into(&x, &mut b).unwrap();
        f32_graph.run_into(&x, &mut f).unwrap();
        let (kernels, quantization) = (max_diff(&a, &b), max_diff(&b, &f));
        assert!(
            kernels < quantization,
            "{name}: own vs tract int8 {kernels}, int8 vs f32 {quantization}"
        );
        assert!(a.iter().any(|v| *v != 0.0));
    }
}
