//! Measures budgeted downlink planning of 100..10000 images (25 classes, 24 clusters).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use onboard::decide::{plan, Outcome, PlanItem, PlanWeights};

const CLASSES: usize = 25;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    let values: Vec<f32> = (0..CLASSES).map(|i| 0.5 + (i % 4) as f32 * 0.5).collect();
    for &n in &[100usize, 1000, 10000] {
        let raw = triage_benches::synthetic(n * CLASSES, 3);
        let probs: Vec<f32> = raw
            .chunks_exact(CLASSES)
            .flat_map(|row| {
                let e: Vec<f32> = row.iter().map(|v| (4.0 * v).exp()).collect();
                let s: f32 = e.iter().sum();
                e.into_iter().map(move |v| v / s)
            })
            .collect();
        let items: Vec<PlanItem<'_>> = (0..n)
            .map(|i| PlanItem {
                bytes: 4000 + (i as u64 * 7919) % 4000,
                probs: &probs[i * CLASSES..(i + 1) * CLASSES],
                cluster: (i % 24) as u16,
                novelty: (i % 5) as f32 * 0.5,
                duplicate_of: (i % 2 == 1).then(|| i - 1),
                quality: 1.0,
            })
            .collect();
        let budget = items.iter().map(|it| it.bytes).sum::<u64>() * 15 / 100;
        let mut chosen = vec![false; n];
        let mut out = vec![Outcome::default(); n];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                plan::<16384>(
                    &items,
                    &values,
                    &PlanWeights::default(),
                    budget,
                    &mut chosen,
                    &mut out,
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
