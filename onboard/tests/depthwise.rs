//! The default bundle's encoders give the same latent with the project's depthwise kernel
//! (`onboard::dwconv`) as with tract's own.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use onboard::bundle::{Bundle, GraphRole, Precision};
use onboard::runtime::{Graph, LoadOptions};

#[test]
fn own_depthwise_kernel_matches_tracts_on_the_default_encoders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bundle = Bundle::load(&root.join("models/default")).unwrap();
    let image = root.join("testdata/pass/000_ground.jpg");
    let x = onboard::preprocess::load_tensor(&image, &bundle.manifest.input).unwrap();
    for precision in [Precision::F32, Precision::Int8Weights] {
        let (entry, path) = bundle.graph_at(GraphRole::Encoder, precision).unwrap();
        let shape = bundle.manifest.input_shape(entry);
        let mut own = Graph::load_shaped(&path, &shape, entry.output_dim).unwrap();
        let tract = LoadOptions {
            own_depthwise: false,
        };
        let mut theirs = Graph::load_shaped_with(&path, &shape, entry.output_dim, tract).unwrap();
        assert_eq!(own.depthwise_replaced(), 16, "{precision}");
        assert_eq!(theirs.depthwise_replaced(), 0);
        let (mut a, mut b) = (vec![0.0; entry.output_dim], vec![0.0; entry.output_dim]);
        own.run_into(&x, &mut a).unwrap();
        theirs.run_into(&x, &mut b).unwrap();
        let max = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(max <= 1e-5, "{precision}: max difference {max}");
        assert!(a.iter().any(|v| *v != 0.0));
    }
}
