use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use onboard::decide::{self, Candidate, ScoreWeights};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of images to triage (not recursive).
    dir: PathBuf,
    /// Model bundle folder.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Downlink budget in bytes; without it every image is selected.
    #[arg(long)]
    budget_bytes: Option<u64>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug)]
struct Row {
    file: String,
    bytes: u64,
    class: String,
    confidence: f32,
    cluster: usize,
    novelty: f32,
    score: f32,
    selected: bool,
}

/// Files directly inside `dir`, sorted by name (symlinks included, folders not).
pub fn list_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "{}: cannot list the image folder; pass an existing folder",
            dir.display()
        )
    })?;
    for e in entries {
        let e = e.with_context(|| format!("{}: cannot list the image folder", dir.display()))?;
        let ft = e
            .file_type()
            .with_context(|| format!("{}: cannot stat", e.path().display()))?;
        if !ft.is_dir() {
            files.push(e.path());
        }
    }
    files.sort();
    Ok(files)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = crate::model_dir(args.model);
    let mut analyzer = crate::load_analyzer(&model)?;
    let files = list_files(&args.dir)?;
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) => {
                eprintln!("skip {}: cannot read: {e}", path.display());
                skipped.push((name, format!("cannot read: {e}")));
                continue;
            }
        };
        match analyzer.analyze_file(path) {
            Ok(a) => {
                let class = &analyzer.bundle.manifest.classes[a.class];
                let score = decide::priority_score(
                    class.science_value,
                    a.confidence,
                    a.novelty,
                    ScoreWeights::default(),
                );
                rows.push(Row {
                    file: name,
                    bytes,
                    class: class.name.clone(),
                    confidence: a.confidence,
                    cluster: a.cluster,
                    novelty: a.novelty,
                    score,
                    selected: false,
                });
            }
            Err(e) => {
                eprintln!("skip {}: {e}", path.display());
                skipped.push((name, e.to_string()));
            }
        }
    }
    let candidates: Vec<Candidate> = rows
        .iter()
        .map(|r| Candidate {
            bytes: r.bytes,
            score: r.score,
        })
        .collect();
    let mut order = vec![0; rows.len()];
    let mut selected = vec![false; rows.len()];
    let budget = args.budget_bytes.unwrap_or(u64::MAX);
    let used = decide::select_under_budget(&candidates, budget, &mut order, &mut selected)
        .context("selecting the downlink set")?;
    for (r, s) in rows.iter_mut().zip(&selected) {
        r.selected = *s;
    }
    let plan: Vec<&Row> = order.iter().map(|&i| &rows[i]).collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        let plan_json: Vec<_> = plan
            .iter()
            .map(|r| {
                serde_json::json!({
                    "file": r.file, "bytes": r.bytes, "class": r.class, "confidence": r.confidence,
                    "cluster": r.cluster, "novelty": r.novelty, "score": r.score, "selected": r.selected,
                })
            })
            .collect();
        let skipped_json: Vec<_> = skipped
            .iter()
            .map(|(f, reason)| serde_json::json!({"file": f, "reason": reason}))
            .collect();
        let doc = serde_json::json!({
            "model": model.display().to_string(),
            "budget_bytes": args.budget_bytes,
            "bytes_selected": used,
            "plan": plan_json,
            "skipped": skipped_json,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(
            out,
            "{:>4} {:<40} {:>9} {:<22} {:>5} {:>4} {:>7} {:>6} sel",
            "rank", "file", "bytes", "class", "conf", "clus", "novelty", "score"
        )?;
        for (rank, r) in plan.iter().enumerate() {
            writeln!(
                out,
                "{:>4} {:<40} {:>9} {:<22} {:>5.2} {:>4} {:>7.2} {:>6.3} {}",
                rank + 1,
                r.file,
                r.bytes,
                r.class,
                r.confidence,
                r.cluster,
                r.novelty,
                r.score,
                if r.selected { "yes" } else { "no" }
            )?;
        }
        writeln!(
            out,
            "{} images planned, {} selected ({} bytes), {} skipped",
            plan.len(),
            selected.iter().filter(|s| **s).count(),
            used,
            skipped.len()
        )?;
    }
    Ok(())
}
