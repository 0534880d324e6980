use std::path::PathBuf;
use std::time::Instant;

use onboard::pipeline::Analyzer;

use crate::alloc_count::allocations;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: onboard bench --data testdata/msl-sample/images --limit 38 --json"
)]
pub struct Args {
    /// Folder of images (not recursive).
    #[arg(long)]
    data: PathBuf,
    /// Use at most this many images (sorted by name).
    #[arg(long, default_value_t = 200)]
    limit: usize,
    #[command(flatten)]
    model: crate::ModelArgs,
    /// ONNX Runtime shared library (`libonnxruntime.so`): after the tract pass, run the same
    /// graphs on the same images in ONNX Runtime (one thread), alternating image by image with
    /// tract, and report `tract_vs_ort_ratio` from that alternating pass.
    #[cfg(feature = "ort")]
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_lib: Option<PathBuf>,
    /// After the timed pass, run the encoder again on the same images timing every tract op,
    /// and report each op kind's milliseconds per image and share (`encoder_profile`).
    #[arg(long)]
    profile: bool,
    /// Two precisions, e.g. `f32,int8`: after the timed pass, run encoder + classifier at both
    /// on the same images, alternating image by image (which goes first alternates too), and
    /// report each one's median and `<second>_vs_<first>_ratio` from that one pass.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "A,B")]
    precisions: Vec<onboard::bundle::Precision>,
    /// Print compact JSON (the default is pretty-printed).
    #[arg(long)]
    json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident set size of this process in KiB (Linux `VmHWM`), if known.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Times one step and counts its allocations.
fn step<T>(ms: &mut Vec<f64>, allocs: &mut u64, f: impl FnOnce() -> T) -> T {
    let a0 = allocations();
    let t0 = Instant::now();
    let out = f();
    let elapsed = t0.elapsed();
    *allocs += allocations() - a0;
    ms.push(elapsed.as_secs_f64() * 1e3);
    out
}

/// ONNX Runtime on the images tract analysed, and how its class probabilities compare.
#[cfg(feature = "ort")]
#[derive(Debug, serde::Serialize)]
struct OrtReport {
    library: String,
    images: usize,
    encoder_ms: f64,
    classifier_ms: f64,
    /// Median of encoder + classifier per image.
    model_ms: f64,
    /// Median of tract's encoder + classifier in the same pass, image by image alternating with
    /// ONNX Runtime (which runs first alternates too), so both see the same machine state.
    tract_model_ms: f64,
    /// Fraction of images where ONNX Runtime's arg-max class equals tract's.
    same_class: f64,
    /// Largest |ORT - tract| over every class probability of every image.
    max_abs_diff_probs: f32,
}

/// Decodes each image again and runs it through ONNX Runtime and tract, alternately, at the
/// analyzer's precision.
#[cfg(feature = "ort")]
fn ort_pass(
    lib: &std::path::Path,
    analyzer: &mut Analyzer,
    analysed: &[(&PathBuf, Vec<f32>)],
) -> anyhow::Result<OrtReport> {
    let mut ort = crate::ort_side::OrtPipeline::load(lib, &analyzer.bundle, analyzer.precision)?;
    let mut logits = vec![0f32; analyzer.logits().len()];
    let (mut enc, mut cls, mut model) = (Vec::new(), Vec::new(), Vec::new());
    let mut tract_model = Vec::new();
    let (mut same, mut max_diff) = (0usize, 0f32);
    for (i, (path, tract_probs)) in analysed.iter().enumerate() {
        analyzer.load_input(path)?;
        let tract = |analyzer: &mut Analyzer| -> anyhow::Result<f64> {
            let t = Instant::now();
            analyzer.encode()?;
            analyzer.run_classifier()?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        };
        if i % 2 == 1 {
            tract_model.push(tract(analyzer)?);
        }
        let (e, c) = ort.run(analyzer.input(), &mut logits)?;
        if i % 2 == 0 {
            tract_model.push(tract(analyzer)?);
        }
        enc.push(e);
        cls.push(c);
        model.push(e + c);
        let (class, _) = onboard::decide::softmax_argmax(&mut logits)
            .ok_or_else(|| anyhow::anyhow!("{}: ONNX Runtime logits not finite", path.display()))?;
        let (tract_class, _) = tract_probs
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |m, (i, &p)| if p > m.1 { (i, p) } else { m });
        same += usize::from(class == tract_class);
        for (a, b) in logits.iter().zip(tract_probs) {
            max_diff = max_diff.max((a - b).abs());
        }
    }
    Ok(OrtReport {
        library: ort.library.clone(),
        images: analysed.len(),
        encoder_ms: median(enc),
        classifier_ms: median(cls),
        model_ms: median(model),
        tract_model_ms: median(tract_model),
        same_class: same as f64 / analysed.len().max(1) as f64,
        max_abs_diff_probs: max_diff,
    })
}

/// Encoder + classifier at each of `precisions` (two) on the analysed images, alternating
/// image by image and rotating which precision goes first: `{"precisions": {name:
/// {"model_ms", "runtime_heap_allocs_per_image"}}, "<b>_vs_<a>_ratio": ...}`.
fn precision_pass(
    dir: &std::path::Path,
    precisions: &[onboard::bundle::Precision],
    analysed: &[(&PathBuf, Vec<f32>)],
) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let [a, b] = precisions else {
        anyhow::bail!("--precisions takes two precisions, e.g. f32,int8");
    };
    let mut runs = Vec::new();
    for &p in [a, b] {
        let bundle = onboard::bundle::Bundle::load(dir)
            .with_context(|| format!("loading model bundle {}", dir.display()))?;
        let analyzer = Analyzer::with_precision(bundle, p)
            .with_context(|| format!("loading the {p} graphs of bundle {}", dir.display()))?;
        runs.push((analyzer, Vec::new(), 0u64));
    }
    for (i, (path, _)) in analysed.iter().enumerate() {
        for (analyzer, _, _) in runs.iter_mut() {
            analyzer.load_input(path)?;
        }
        for k in 0..runs.len() {
            let (analyzer, ms, allocs) = &mut runs[(i + k) % 2];
            step(
                ms,
                allocs,
                || -> Result<(), onboard::pipeline::AnalyzeError> {
                    analyzer.encode()?;
                    analyzer.run_classifier()?;
                    Ok(())
                },
            )?;
        }
    }
    let n = analysed.len().max(1) as f64;
    let mut each = serde_json::Map::new();
    let mut medians = Vec::new();
    for (analyzer, ms, allocs) in runs {
        let m = median(ms);
        medians.push(m);
        let v =
            serde_json::json!({"model_ms": m, "runtime_heap_allocs_per_image": allocs as f64 / n});
        each.insert(analyzer.precision.name().to_string(), v);
    }
    let mut doc = serde_json::json!({ "precisions": each, "images": analysed.len() });
    let ratio = format!("{}_vs_{}_ratio", b.name(), a.name()).replace('-', "_");
    doc[ratio] = (medians[1] / medians[0].max(f64::MIN_POSITIVE)).into();
    Ok(doc)
}

/// The encoder's time per tract op kind over the analysed images: `{op: {ms_per_image, share}}`.
fn encoder_profile(
    analyzer: &mut Analyzer,
    analysed: &[(&PathBuf, Vec<f32>)],
) -> anyhow::Result<serde_json::Value> {
    use onboard::bundle::GraphRole;
    let mut graph =
        onboard::runtime::Graph::load_at(&analyzer.bundle, GraphRole::Encoder, analyzer.precision)?;
    let mut out = vec![0f32; analyzer.bundle.manifest.latent_dim];
    let mut times = std::collections::BTreeMap::new();
    for (path, _) in analysed {
        analyzer.load_input(path)?;
        graph.run_profiled(analyzer.input(), &mut out, &mut times)?;
    }
    let sum: f64 = times.values().sum();
    let n = analysed.len().max(1) as f64;
    Ok(times
        .into_iter()
        .map(|(op, ms)| {
            let v = serde_json::json!({"ms_per_image": ms / n, "share": ms / sum.max(f64::MIN_POSITIVE)});
            (op, v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = args.model.dir();
    let mut analyzer: Analyzer = args.model.load()?;
    let mut files = crate::prioritize::list_files(&args.data)?;
    files.truncate(args.limit);
    let (mut load, mut enc, mut core, mut cls, mut total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut core_allocs, mut runtime_allocs) = (0u64, 0u64);
    // Stream adaptation (class-prior EM and sequential k-means), timed as its own stage on
    // the same images; the pipeline's placement and probabilities stay unadapted here.
    let mut adapter = onboard::adapt::StreamAdapter::new(&analyzer.bundle)?;
    let mut probs = vec![0.0f32; analyzer.bundle.manifest.classes.len()];
    let (mut adapt, mut adapt_allocs) = (Vec::new(), 0u64);
    let mut images = 0u64;
    let mut skipped = 0u64;
    let mut analysed: Vec<(&PathBuf, Vec<f32>)> = Vec::new();
    let bar = crate::progress_bar(files.len(), "bench");
    for path in &files {
        bar.inc(1);
        let t0 = Instant::now();
        let result = (|| -> Result<(), onboard::pipeline::AnalyzeError> {
            step(&mut load, &mut runtime_allocs, || analyzer.load_input(path))?;
            step(&mut enc, &mut runtime_allocs, || analyzer.encode())?;
            step(&mut cls, &mut runtime_allocs, || analyzer.run_classifier())?;
            step(
                &mut core,
                &mut core_allocs,
                || -> Result<(), onboard::pipeline::AnalyzeError> {
                    analyzer.place()?;
                    analyzer.softmax()?;
                    Ok(())
                },
            )?;
            step(
                &mut adapt,
                &mut adapt_allocs,
                || -> Result<(), onboard::pipeline::AnalyzeError> {
                    adapter.arrive(analyzer.latent())?;
                    probs.copy_from_slice(analyzer.logits());
                    adapter.adapt_probs(&mut probs)?;
                    Ok(())
                },
            )?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                images += 1;
                total.push(t0.elapsed().as_secs_f64() * 1e3);
                analysed.push((path, analyzer.logits().to_vec()));
            }
            Err(e) => {
                skipped += 1;
                bar.suspend(|| eprintln!("skip {}: {e}", path.display()));
            }
        }
    }
    bar.finish_and_clear();
    anyhow::ensure!(
        images > 0,
        "{}: no image could be analysed",
        args.data.display()
    );
    let per = |n: u64| n as f64 / images as f64;
    let tract_model: Vec<f64> = enc.iter().zip(&cls).map(|(e, c)| e + c).collect();
    let tract_model_ms = median(tract_model);
    let peak_rss = peak_rss_kib();
    #[allow(unused_mut)]
    let mut doc = serde_json::json!({
        "model": model.display().to_string(),
        "precision": analyzer.precision.name(),
        "images": images,
        "skipped": skipped,
        "threads": 1,
        "tract_isa": onboard::tract_isa::dispatched(),
        "ms_per_image": {
            "decode_preprocess": median(load),
            "encoder": median(enc),
            "classifier": median(cls),
            "core": median(core),
            "adapt": median(adapt),
            "total": median(total),
        },
        "core_heap_allocs_per_image": per(core_allocs),
        "adapt_heap_allocs_per_image": per(adapt_allocs),
        "adapt_prior": adapter.adapts_prior(),
        "runtime_heap_allocs_per_image": per(runtime_allocs),
        "tract_model_ms_per_image": tract_model_ms,
        "peak_rss_kib": peak_rss,
    });
    if args.profile {
        doc["encoder_profile"] = encoder_profile(&mut analyzer, &analysed)?;
    }
    if !args.precisions.is_empty() {
        doc["precision_comparison"] = precision_pass(&model, &args.precisions, &analysed)?;
    }
    #[cfg(feature = "ort")]
    if let Some(lib) = &args.ort_lib {
        let ort = ort_pass(lib, &mut analyzer, &analysed)?;
        doc["tract_vs_ort_ratio"] = (ort.tract_model_ms / ort.model_ms).into();
        doc["onnxruntime"] = serde_json::to_value(&ort)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&doc)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}
