use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use onboard::decide::Decision;
use onboard::downlink::{self, Item};
use onboard::pipeline::Analysis;
use onboard::triage::{self, Candidate};

/// Seeds averaged by the random policy.
const RANDOM_SEEDS: std::ops::Range<u64> = 0..10;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: onboard downlink-bench --data $MSL_DATA --labels $MSL_DATA/val-calibrated-shuffled.txt --values configs/values.toml --json"
)]
pub struct Args {
    #[command(flatten)]
    split: crate::SplitArgs,
    /// Science values TOML (`[values]`; optional `[planner]` settings for the onboard policy).
    #[arg(long)]
    values: PathBuf,
    /// Items per pass (consecutive chunks of the labels file).
    #[arg(long)]
    pass_images: usize,
    /// Budget of a pass as a fraction of its items' total bytes.
    #[arg(long)]
    budget_fraction: f64,
    #[command(flatten)]
    model: crate::ModelArgs,
    /// For the onboard policy: images adapt in the labels file's order.
    #[command(flatten)]
    adapt: crate::AdaptArgs,
    /// Print compact JSON (the default is pretty-printed).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.pass_images == 0 {
        bail!("--pass-images must be at least 1");
    }
    if !(args.budget_fraction.is_finite() && (0.0..=1.0).contains(&args.budget_fraction)) {
        bail!(
            "--budget-fraction must be within 0..=1, got {}",
            args.budget_fraction
        );
    }
    let model = args.model.dir();
    let mut analyzer = args.model.load()?;
    let adapt = args.adapt.apply(&mut analyzer, &model)?;
    let (values_f32, planner) =
        crate::prioritize::values_and_planner(&analyzer, Some(&args.values))?;
    let values: Vec<f64> = values_f32.iter().map(|&v| f64::from(v)).collect();
    let labels = onboard::labels::read_labels(&args.split.labels)?;
    let n_classes = values.len();
    let mut items = Vec::new();
    let mut analyses: Vec<Option<Analysis>> = Vec::new();
    let mut skipped = Vec::new();
    let bar = crate::progress_bar(labels.len(), "downlink-bench");
    for l in &labels {
        bar.inc(1);
        if l.class >= n_classes {
            bail!(
                "{}: class id {} of {} is outside the bundle's {n_classes} classes",
                args.split.labels.display(),
                l.class,
                l.file
            );
        }
        let path = args.split.data.join(&l.file);
        let bytes = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) => {
                bar.suspend(|| {
                    eprintln!(
                        "skip {}: cannot read: {e} (left out of every policy)",
                        l.file
                    )
                });
                skipped.push(
                    serde_json::json!({"file": l.file, "reason": format!("cannot read: {e}")}),
                );
                continue;
            }
        };
        let analysis = match analyzer.analyze_file(&path) {
            Ok(a) => Some(a),
            Err(e) => {
                bar.suspend(|| eprintln!("skip {}: {e} (onboard cannot select it)", l.file));
                skipped.push(serde_json::json!({"file": l.file, "reason": e.to_string()}));
                None
            }
        };
        items.push(Item {
            file: l.file.clone(),
            bytes,
            class: l.class,
        });
        analyses.push(analysis);
    }
    bar.finish_and_clear();
    let obs: Vec<String> = items
        .iter()
        .map(|i| downlink::observation_id(&i.file))
        .collect();
    let mut totals: BTreeMap<&str, f64> = BTreeMap::new();
    let mut passes = 0usize;
    for (p, chunk) in items.chunks(args.pass_images).enumerate() {
        let start = p * args.pass_images;
        let obs = &obs[start..start + chunk.len()];
        let budget = downlink::pass_budget(chunk, args.budget_fraction);
        let value = |sel: &[usize]| downlink::set_value(chunk, obs, sel, &values);
        *totals.entry("oracle").or_default() +=
            value(&downlink::oracle(chunk, obs, &values, budget));
        *totals.entry("fifo").or_default() += value(&downlink::fifo(chunk, budget));
        let random: f64 = RANDOM_SEEDS
            .map(|s| value(&downlink::random(chunk, budget, s)))
            .sum::<f64>()
            / RANDOM_SEEDS.count() as f64;
        *totals.entry("random").or_default() += random;
        let (idx, cands): (Vec<usize>, Vec<Candidate<'_>>) = analyses[start..start + chunk.len()]
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                a.as_ref().map(|a| {
                    (
                        i,
                        Candidate {
                            bytes: chunk[i].bytes,
                            analysis: a,
                        },
                    )
                })
            })
            .unzip();
        let plan = triage::plan(&cands, &values_f32, &planner, budget)
            .with_context(|| format!("planning pass {p}"))?;
        let chosen: Vec<usize> = plan
            .outcomes
            .iter()
            .zip(&idx)
            .filter(|(o, _)| matches!(o.decision, Decision::Selected(_)))
            .map(|(_, &i)| i)
            .collect();
        *totals.entry("onboard").or_default() += value(&chosen);
        passes += 1;
    }
    let oracle = totals.get("oracle").copied().unwrap_or(0.0);
    let policies: BTreeMap<&str, serde_json::Value> = totals
        .iter()
        .map(|(k, &v)| (*k, serde_json::json!({"value": v, "value_ratio": if oracle > 0.0 { v / oracle } else { 0.0 }})))
        .collect();
    let doc = serde_json::json!({
        "policies": policies,
        "model": model.display().to_string(),
        "precision": analyzer.precision.name(),
        "adapt": if adapt { "on" } else { "off" },
        "labels": args.split.labels.display().to_string(),
        "values": args.values.display().to_string(),
        "items": items.len(),
        "passes": passes,
        "pass_images": args.pass_images,
        "budget_fraction": args.budget_fraction,
        "skipped": skipped,
        "planner": planner,
    });
    if args.json {
        println!("{}", serde_json::to_string(&doc)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}
