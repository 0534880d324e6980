//! Measures JPEG decode + resize + normalization of one fixture image into the input tensor.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use onboard::bundle::Bundle;

fn bench(c: &mut Criterion) {
    let root = triage_benches::repo_root();
    let Ok(bundle) = Bundle::load(&root.join("models/default")) else {
        eprintln!("models/default does not load; nothing to measure");
        return;
    };
    let spec = bundle.manifest.input.clone();
    let bytes = std::fs::read(root.join("testdata/pass/001_horizon.jpg")).unwrap_or_default();
    let mut out = vec![0.0f32; 3 * spec.width as usize * spec.height as usize];
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("jpeg_128_to_input", |b| {
        b.iter(|| {
            let img = onboard::preprocess::decode_bytes(&bytes).ok();
            if let Some(img) = img {
                let rgb = onboard::preprocess::resize_rgb(&img, &spec);
                onboard::preprocess::normalize_into(&rgb, &spec, &mut out);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
