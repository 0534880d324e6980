//! Measures the integer 1x1 convolutions of EfficientNet-Lite0 at 128x128 input (the default
//! bundle's side), one distinct `(pixels, input channels, output channels)` shape each, with
//! `onboard::convops`'s u8 x i8 kernel and the requantization fused (run-time dispatched:
//! AVX-512 VNNI where the CPU has it; and portable); throughput in multiply-accumulates.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use onboard::convops::{pointwise_q8, pointwise_q8_portable, PackedQ8, Requant};
use triage_benches::codes;

/// `(pixels, ci, co)` of each distinct 1x1 layer (the stem's patch rows included: 4096 x 27).
const LAYERS: [(usize, usize, usize); 15] = [
    (4096, 27, 32),
    (4096, 32, 16),
    (4096, 16, 96),
    (1024, 96, 24),
    (1024, 24, 144),
    (1024, 144, 24),
    (256, 144, 40),
    (256, 40, 240),
    (256, 240, 40),
    (64, 240, 80),
    (64, 80, 480),
    (64, 480, 112),
    (64, 112, 672),
    (16, 1152, 192),
    (16, 320, 1280),
];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pointwise_q8");
    for (pixels, ci, co) in LAYERS {
        let x = codes(pixels * ci, 1);
        let w: Vec<i8> = codes(co * ci, 2).iter().map(|&v| v as i8).collect();
        let bias: Vec<i32> = (0..co as i32).map(|o| o * 37 - 500).collect();
        let (Some(packed), Some(rq)) = (
            PackedQ8::new(&w, &bias, co, ci, 117),
            Requant::new(0.02, &vec![0.004; co], 0.05, 3, co),
        ) else {
            continue;
        };
        let mut out = vec![0u8; pixels * co];
        g.throughput(Throughput::Elements((pixels * ci * co) as u64));
        let name = format!("p{pixels}_{ci}x{co}");
        g.bench_with_input(BenchmarkId::new("dispatched", &name), &(), |b, _| {
            b.iter(|| pointwise_q8(&x, &packed, &rq, &mut out))
        });
        g.bench_with_input(BenchmarkId::new("portable", &name), &(), |b, _| {
            b.iter(|| pointwise_q8_portable(&x, &packed, &rq, &mut out))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
