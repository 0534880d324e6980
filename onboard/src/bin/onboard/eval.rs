use std::collections::BTreeMap;

use anyhow::bail;
use onboard::metrics;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: onboard eval --data $MSL_DATA --labels $MSL_DATA/val-calibrated-shuffled.txt --json"
)]
pub struct Args {
    #[command(flatten)]
    split: crate::SplitArgs,
    #[command(flatten)]
    model: crate::ModelArgs,
    /// Images come in the labels file's order; cluster metrics use each image's cluster as
    /// it arrived.
    #[command(flatten)]
    adapt: crate::AdaptArgs,
    /// Print only the JSON object (no summary on stderr).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = args.model.dir();
    let mut analyzer = args.model.load()?;
    let adapt = args.adapt.apply(&mut analyzer, &model)?;
    let items = onboard::labels::read_labels(&args.split.labels)?;
    if items.is_empty() {
        bail!(
            "{}: holds no labeled images; pass a split file of `PATH CLASS_ID` lines (e.g. $MSL_DATA/val-calibrated-shuffled.txt)",
            args.split.labels.display()
        );
    }
    let classes: Vec<String> = analyzer
        .bundle
        .manifest
        .classes
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let k = analyzer.bundle.manifest.clustering.centroids.len();
    let (mut truth, mut pred, mut clusters) = (Vec::new(), Vec::new(), Vec::new());
    let mut skipped = Vec::new();
    let bar = crate::progress_bar(items.len(), "eval");
    for onboard::labels::Labeled { file, class: id } in &items {
        bar.inc(1);
        if *id >= classes.len() {
            bail!("{}: class id {id} of {file} is outside the bundle's {} classes; use the bundle trained for this label set", args.split.labels.display(), classes.len());
        }
        match analyzer.analyze_file(&args.split.data.join(file)) {
            Ok(a) => {
                truth.push(*id);
                pred.push(a.class);
                clusters.push(a.cluster);
            }
            Err(e) => {
                bar.suspend(|| eprintln!("skip {file}: {e}"));
                skipped.push(serde_json::json!({"file": file, "reason": e.to_string()}));
            }
        }
    }
    bar.finish_and_clear();
    if truth.is_empty() {
        bail!(
            "{}: none of its {} images could be analysed ({} skipped, first: {}); check that --data {} is the dataset root the labels' paths are relative to",
            args.split.labels.display(),
            items.len(),
            skipped.len(),
            skipped.first().map_or("none".into(), |s| s["reason"].to_string()),
            args.split.data.display()
        );
    }
    let reports = metrics::class_reports(&truth, &pred, classes.len());
    let per_class_recall: BTreeMap<&str, f64> = reports
        .iter()
        .filter(|r| r.support > 0)
        .map(|r| (classes[r.class].as_str(), r.recall))
        .collect();
    let doc = serde_json::json!({
        "model": model.display().to_string(),
        "precision": analyzer.precision.name(),
        "adapt": if adapt { "on" } else { "off" },
        "adapted_prior": analyzer.adapter().is_some_and(|a| a.adapts_prior()),
        "labels": args.split.labels.display().to_string(),
        "images": truth.len(),
        "skipped": skipped.len(),
        "skipped_files": skipped,
        "top1": metrics::accuracy(&truth, &pred),
        "macro_f1": metrics::macro_f1(&reports),
        "balanced_accuracy": metrics::balanced_accuracy(&reports),
        "per_class_recall": per_class_recall,
        "k": k,
        "cluster_hungarian_acc": metrics::hungarian_accuracy(&truth, &clusters),
        "cluster_majority_acc": metrics::majority_accuracy(&truth, &clusters),
        "nmi": metrics::nmi(&truth, &clusters),
        "ari": metrics::ari(&truth, &clusters),
        "predictions": truth.iter().zip(&pred).zip(&clusters).map(|((t, p), c)| [*t, *p, *c]).collect::<Vec<_>>(),
    });
    if !args.json {
        eprintln!(
            "{} images, {} skipped, adapt {}: top1 {:.4}, macro-F1 {:.4}, balanced {:.4}; clusters (k={k}): hungarian {:.4}, majority {:.4}, NMI {:.4}, ARI {:.4}",
            doc["images"], doc["skipped"], doc["adapt"], doc["top1"].as_f64().unwrap_or(0.0), doc["macro_f1"].as_f64().unwrap_or(0.0),
            doc["balanced_accuracy"].as_f64().unwrap_or(0.0),
            doc["cluster_hungarian_acc"].as_f64().unwrap_or(0.0), doc["cluster_majority_acc"].as_f64().unwrap_or(0.0),
            doc["nmi"].as_f64().unwrap_or(0.0), doc["ari"].as_f64().unwrap_or(0.0)
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&doc)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}
