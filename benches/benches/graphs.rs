//! Measures each graph of the default bundle at every precision it carries (tract, one input;
//! the encoders also with tract's own convolution kernels, f32 or integer, instead of
//! `onboard::convops`, and with only the project's f32 depthwise kernel as on aarch64) and the
//! whole per-image pipeline at the default precision.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use onboard::bundle::{Bundle, GraphInput, GraphRole};
use onboard::convops::Kernels;
use onboard::pipeline::Analyzer;
use onboard::runtime::{Graph, LoadOptions};

fn bench(c: &mut Criterion) {
    let root = triage_benches::repo_root();
    let Ok(bundle) = Bundle::load(&root.join("models/default")) else {
        eprintln!("models/default does not load; nothing to measure");
        return;
    };
    let (h, w) = (
        bundle.manifest.input.height as usize,
        bundle.manifest.input.width as usize,
    );
    let input = triage_benches::synthetic(3 * h * w, 4);
    let latent = triage_benches::synthetic(bundle.manifest.latent_dim, 5);
    let mut g = c.benchmark_group("graphs");
    g.throughput(Throughput::Elements(1));
    for precision in bundle.manifest.precisions() {
        for role in [GraphRole::Encoder, GraphRole::Classifier] {
            let Ok((entry, path)) = bundle.graph_at(role, precision) else {
                continue;
            };
            let x = match entry.input {
                GraphInput::Image => &input,
                GraphInput::Latent => &latent,
            };
            let Ok(mut graph) = Graph::load_at(&bundle, role, precision) else {
                eprintln!("{}: does not load", path.display());
                continue;
            };
            let mut out = vec![0.0f32; entry.output_dim];
            let name = format!("{}_{precision}", format!("{role:?}").to_lowercase());
            g.bench_function(&name, |b| b.iter(|| graph.run_into(x, &mut out)));
            let r = graph.replaced();
            if r.depthwise + r.pointwise + r.im2col + r.int8 == 0 {
                continue;
            }
            let shape = bundle.manifest.input_shape(entry);
            // tract's kernels throughout, and the aarch64 set-up (own depthwise kernel only).
            let depthwise_only = LoadOptions {
                kernels: Kernels {
                    depthwise: true,
                    dense: false,
                    int8: false,
                },
            };
            for (suffix, options) in [
                ("tract_kernels", LoadOptions::TRACT_ONLY),
                ("own_depthwise_only", depthwise_only),
            ] {
                if let Ok(mut graph) =
                    Graph::load_shaped_with(&path, &shape, entry.output_dim, options)
                {
                    g.bench_function(format!("{name}_{suffix}"), |b| {
                        b.iter(|| graph.run_into(x, &mut out))
                    });
                }
            }
        }
    }
    let image = root.join("testdata/pass/001_horizon.jpg");
    if let Ok(mut analyzer) = Analyzer::new(bundle) {
        g.bench_function("pipeline_per_image", |b| {
            b.iter(|| analyzer.analyze_file(&image))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
