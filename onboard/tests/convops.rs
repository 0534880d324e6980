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
