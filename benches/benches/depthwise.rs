//! Measures the depthwise convolutions of EfficientNet-Lite0 at 96x96 input, one layer shape
//! each, with `onboard::convops`'s channels-last kernel (run-time dispatched, and portable) and
//! ReLU6 fused; throughput in multiply-accumulates.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use onboard::convops::{depthwise_hwc, depthwise_hwc_portable, Clamp, Geometry};

/// `(channels, input side, kernel, stride, padding)` of each distinct depthwise layer.
const LAYERS: [(usize, usize, usize, usize, usize); 12] = [
    (32, 48, 3, 1, 1),
    (96, 48, 3, 2, 0),
    (144, 24, 3, 1, 1),
    (144, 24, 5, 2, 1),
    (240, 12, 5, 1, 2),
    (240, 12, 3, 2, 0),
    (480, 6, 3, 1, 1),
    (480, 6, 5, 1, 2),
    (672, 6, 5, 1, 2),
    (672, 6, 5, 2, 1),
    (1152, 3, 5, 1, 2),
    (1152, 3, 3, 1, 1),
];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("depthwise");
    for (ch, h, k, s, p) in LAYERS {
        let ho = (h + 2 * p - k) / s + 1;
        let geometry = Geometry {
            channels: ch,
            input: [h, h],
            output: [ho, ho],
            kernel: [k, k],
            stride: s,
            pad: [p, p],
        };
        let x = triage_benches::synthetic(ch * h * h, 1);
        let w = triage_benches::synthetic(ch * k * k, 2);
        let bias = triage_benches::synthetic(ch, 3);
        let mut out = vec![0.0; ch * ho * ho];
        let relu6 = Clamp { lo: 0.0, hi: 6.0 };
        g.throughput(Throughput::Elements((ch * ho * ho * k * k) as u64));
        let name = format!("c{ch}_{h}x{h}_k{k}_s{s}");
        g.bench_with_input(BenchmarkId::new("dispatched", &name), &(), |b, _| {
            b.iter(|| depthwise_hwc(&x, &w, &bias, &geometry, relu6, &mut out))
        });
        g.bench_with_input(BenchmarkId::new("portable", &name), &(), |b, _| {
            b.iter(|| depthwise_hwc_portable(&x, &w, &bias, &geometry, relu6, &mut out))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
