//! Measures the nearest-centroid search for k in 24..256 centroids of dimension 64..256.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("nearest_centroid");
    g.throughput(Throughput::Elements(1));
    for &k in &[24usize, 64, 256] {
        for &d in &[64usize, 256] {
            let centroids = triage_benches::synthetic(k * d, 1);
            let latent = triage_benches::synthetic(d, 2);
            g.bench_with_input(BenchmarkId::new(format!("k{k}"), d), &d, |b, _| {
                b.iter(|| onboard::decide::nearest_centroid(&latent, &centroids))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
