//! Measures the integer depthwise convolutions of EfficientNet-Lite0 at 128x128 input (the
//! default bundle's side), one distinct layer shape each, on every path of
//! `onboard::convops::depthwise_q8_paths` this CPU runs (dispatched, portable, and the x86
//! AVX2 / AVX-512 / AVX-512 VNNI ones), requantization fused; throughput in
//! multiply-accumulates.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use onboard::convops::{depthwise_q8_paths, DepthwiseQ8, Geometry, Requant};
use triage_benches::codes;

/// `(channels, input side, kernel, stride, padding top-left, padding bottom-right)` of each
/// distinct depthwise layer (TensorFlow "same" padding, as the exported graphs have it).
const LAYERS: [(usize, usize, usize, usize, usize, usize); 12] = [
    (32, 64, 3, 1, 1, 1),
    (96, 64, 3, 2, 0, 1),
    (144, 32, 3, 1, 1, 1),
    (144, 32, 5, 2, 1, 2),
    (240, 16, 5, 1, 2, 2),
    (240, 16, 3, 2, 0, 1),
    (480, 8, 3, 1, 1, 1),
    (480, 8, 5, 1, 2, 2),
    (672, 8, 5, 1, 2, 2),
    (672, 8, 5, 2, 1, 2),
    (1152, 4, 5, 1, 2, 2),
    (1152, 4, 3, 1, 1, 1),
];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("depthwise_q8");
    let paths = depthwise_q8_paths();
    for (ch, h, k, s, p, p_end) in LAYERS {
        let ho = (h + p + p_end - k) / s + 1;
        let geometry = Geometry {
            channels: ch,
            input: [h, h],
            output: [ho, ho],
            kernel: [k, k],
            stride: s,
            pad: [p, p],
        };
        let x = codes(h * h * ch, 1);
        let w: Vec<i8> = codes(ch * k * k, 2).iter().map(|&v| v as i8).collect();
        let bias: Vec<i32> = (0..ch as i32).map(|o| o * 37 - 500).collect();
        let (Some(packed), Some(rq)) = (
            DepthwiseQ8::new(&w, &bias, &geometry, 117),
            Requant::new(0.02, &vec![0.004; ch], 0.05, 3, ch),
        ) else {
            continue;
        };
        let mut out = vec![0u8; ho * ho * ch];
        g.throughput(Throughput::Elements((ho * ho * ch * k * k) as u64));
        let name = format!("c{ch}_{h}px_k{k}_s{s}");
        for &(path, kernel) in &paths {
            g.bench_with_input(BenchmarkId::new(path, &name), &(), |b, _| {
                b.iter(|| kernel(&x, &packed, &rq, &mut out))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
