//! Measures the 1x1 convolutions of EfficientNet-Lite0 at 96x96 input, one distinct
//! `(pixels, input channels, output channels)` shape each, with `onboard::convops`'s pointwise
//! kernel (run-time dispatched, and portable) and ReLU6 fused; throughput in
//! multiply-accumulates.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use onboard::convops::{pointwise, pointwise_portable, Clamp, Packed};

/// `(pixels, ci, co)` of each distinct 1x1 layer (the stem's patch rows included: 2304 x 27).
const LAYERS: [(usize, usize, usize); 15] = [
    (2304, 27, 32),
    (2304, 32, 16),
    (2304, 16, 96),
    (576, 96, 24),
    (576, 24, 144),
    (576, 144, 24),
    (144, 144, 40),
    (144, 40, 240),
    (144, 240, 40),
    (36, 240, 80),
    (36, 80, 480),
    (36, 480, 112),
    (36, 112, 672),
    (9, 1152, 192),
    (9, 320, 1280),
];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pointwise");
    let relu6 = Clamp { lo: 0.0, hi: 6.0 };
    for (pixels, ci, co) in LAYERS {
        let x = triage_benches::synthetic(pixels * ci, 1);
        let w = triage_benches::synthetic(co * ci, 2);
        let bias = triage_benches::synthetic(co, 3);
        let Some(packed) = Packed::new(&w, &bias, co, ci) else {
            continue;
        };
        let mut out = vec![0.0; pixels * co];
        g.throughput(Throughput::Elements((pixels * ci * co) as u64));
        let name = format!("p{pixels}_{ci}x{co}");
        g.bench_with_input(BenchmarkId::new("dispatched", &name), &(), |b, _| {
            b.iter(|| pointwise(&x, &packed, relu6, &mut out))
        });
        g.bench_with_input(BenchmarkId::new("portable", &name), &(), |b, _| {
            b.iter(|| pointwise_portable(&x, &packed, relu6, &mut out))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
