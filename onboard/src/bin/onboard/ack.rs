//! `onboard ack`: records in the journal that images reached the ground. Idempotent: an image
//! already recorded as downlinked is left as it is; nothing is written unless every named image
//! is known to the journal.

use std::path::PathBuf;

use std::collections::HashMap;

use anyhow::bail;
use onboard::journal::{FileName, Record};

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
    let latest: HashMap<&FileName, &Record> = journal
        .latest()
        .into_iter()
        .filter_map(|r| r.file().map(|f| (f, r)))
        .collect();
    // A name can also be given as the plan printed it (escaped, see FileName::display).
    let shown: HashMap<String, &FileName> = latest.keys().map(|f| (f.display(), *f)).collect();
    let (mut new, mut already, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for f in &args.files {
        let raw = FileName::of(f).unwrap_or_else(|| FileName::from(""));
        let name = match (
            latest.contains_key(&raw),
            raw.as_str().and_then(|s| shown.get(s)),
        ) {
            (false, Some(&n)) => n.clone(),
            _ => raw,
        };
        match latest.get(&name) {
            Some(r @ Record::Analysed { .. }) if !new.iter().any(|(n, _)| *n == name) => {
                new.push((name, r.stamp()))
            }
            Some(Record::Analysed { .. }) => {}
            Some(Record::Downlinked { .. }) => already.push(name.display()),
            _ => unknown.push(name.display()),
        }
    }
    if !unknown.is_empty() {
        bail!(
            "{}: not in the journal's backlog: {}; nothing was recorded (acknowledge only images a plan from this journal selected)",
            args.journal.display(),
            unknown.join(", ")
        );
    }
    for (file, stamp) in &new {
        journal.append(Record::Downlinked {
            file: file.clone(),
            stamp: *stamp,
        })?;
    }
    let new: Vec<String> = new.iter().map(|(f, _)| f.display()).collect();
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
