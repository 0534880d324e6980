//! `onboard ack`: records in the journal that images reached the ground. Idempotent: an image
//! already recorded as downlinked is left as it is; nothing is written unless every named image
//! is known to the journal.

use std::path::PathBuf;

use anyhow::bail;
use onboard::journal::Record;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example: onboard ack --journal /data/triage.jsonl img0001.JPG img0002.JPG")]
pub struct Args {
    /// The journal the plan came from.
    #[arg(long)]
    journal: PathBuf,
    /// Images that reached the ground, by the names the plan gave (a path's folder is ignored).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print one JSON object instead of a line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut journal = crate::prioritize::open_journal(&args.journal)?;
    let latest: std::collections::HashMap<&str, &Record> = journal
        .latest()
        .into_iter()
        .filter_map(|r| r.file().map(|f| (f, r)))
        .collect();
    let (mut new, mut already, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for f in &args.files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match latest.get(name.as_str()) {
            Some(Record::Analysed { .. }) if !new.contains(&name) => new.push(name),
            Some(Record::Analysed { .. }) => {}
            Some(Record::Downlinked { .. }) => already.push(name),
            _ => unknown.push(name),
        }
    }
    if !unknown.is_empty() {
        bail!(
            "{}: not in the journal's backlog: {}; nothing was recorded (acknowledge only images a plan from this journal selected)",
            args.journal.display(),
            unknown.join(", ")
        );
    }
    for file in &new {
        journal.append(Record::Downlinked { file: file.clone() })?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"journal": args.journal.display().to_string(), "acknowledged": new, "already_downlinked": already})
        );
    } else {
        println!(
            "{} acknowledged, {} already downlinked",
            new.len(),
            already.len()
        );
    }
    Ok(())
}
