use std::path::PathBuf;
use std::time::Instant;

use onboard::pipeline::Analyzer;

use crate::alloc_count::allocations;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of images (not recursive).
    #[arg(long)]
    data: PathBuf,
    /// Use at most this many images (sorted by name).
    #[arg(long, default_value_t = 200)]
    limit: usize,
    #[command(flatten)]
    model: crate::ModelArgs,
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

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = args.model.dir();
    let mut analyzer: Analyzer = args.model.load()?;
    let mut files = crate::prioritize::list_files(&args.data)?;
    files.truncate(args.limit);
    let (mut load, mut enc, mut core, mut cls, mut total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut core_allocs, mut runtime_allocs) = (0u64, 0u64);
    let mut images = 0u64;
    let mut skipped = 0u64;
    for path in &files {
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
            Ok(())
        })();
        match result {
            Ok(()) => {
                images += 1;
                total.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            Err(e) => {
                skipped += 1;
                eprintln!("skip {}: {e}", path.display());
            }
        }
    }
    anyhow::ensure!(
        images > 0,
        "{}: no image could be analysed",
        args.data.display()
    );
    let per = |n: u64| n as f64 / images as f64;
    let doc = serde_json::json!({
        "model": model.display().to_string(),
        "precision": analyzer.precision.name(),
        "images": images,
        "skipped": skipped,
        "threads": 1,
        "ms_per_image": {
            "decode_preprocess": median(load),
            "encoder": median(enc),
            "classifier": median(cls),
            "core": median(core),
            "total": median(total),
        },
        "core_heap_allocs_per_image": per(core_allocs),
        "runtime_heap_allocs_per_image": per(runtime_allocs),
        "peak_rss_kib": peak_rss_kib(),
    });
    if args.json {
        println!("{}", serde_json::to_string(&doc)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}
