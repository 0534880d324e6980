use std::path::{Path, PathBuf};

use anyhow::Context;
use onboard::adapt::AdaptState;
use onboard::journal::{Journal, Record};
use onboard::pipeline::{Analysis, Analyzer};
use onboard::triage::{self, Candidate, PlannerConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of images to triage (not recursive).
    dir: PathBuf,
    #[command(flatten)]
    model: crate::ModelArgs,
    /// Downlink budget in bytes; without it every image with value is selected.
    #[arg(long)]
    budget_bytes: Option<u64>,
    /// Science values (TOML `[values]` class name -> number) and planner settings
    /// (`[planner]`), overriding the bundle's.
    #[arg(long)]
    values: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Write a contact sheet (PNG) of the selected images in downlink order.
    #[arg(long)]
    sheet: Option<PathBuf>,
    /// Journal file: every image's result is appended and synced as soon as it is known, images
    /// already in it are not analysed again, and its backlog (analysed, not yet downlinked) from
    /// earlier passes joins the plan.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Write the plan to FILE (atomically, synced) instead of stdout.
    #[arg(long, value_name = "FILE")]
    plan_out: Option<PathBuf>,
    /// With --journal: once the plan is completely written, record the selected images as
    /// downlinked, so later passes leave them out.
    #[arg(long, requires = "journal")]
    mark_sent: bool,
    /// Images come in file-name order; with --journal the adaptation carries over from pass to
    /// pass (and across a crash) through the journal.
    #[command(flatten)]
    adapt: crate::AdaptArgs,
}

/// At most `cap` rows for one plan: when the backlog holds more, the rows of highest expected
/// science value per byte (ties: the earlier row), in their original order, with a warning on
/// stderr. The rest stay in the journal's backlog for later passes.
fn cap_backlog(rows: Vec<Analysed>, values: &[f32], cap: usize) -> Vec<Analysed> {
    if rows.len() <= cap {
        return rows;
    }
    let density = |r: &Analysed| {
        let v: f32 = r
            .analysis
            .probs
            .iter()
            .zip(values)
            .map(|(p, v)| p * v)
            .sum();
        f64::from(v) / r.bytes.max(1) as f64
    };
    let mut rank: Vec<usize> = (0..rows.len()).collect();
    rank.sort_by(|&a, &b| {
        density(&rows[b])
            .total_cmp(&density(&rows[a]))
            .then(a.cmp(&b))
    });
    let mut keep = vec![false; rows.len()];
    rank[..cap].iter().for_each(|&i| keep[i] = true);
    eprintln!(
        "warning: the backlog holds {} images, more than one plan's {cap}: planning the {cap} of highest expected value per byte; the other {} wait for later passes (acknowledge downlinked images with `onboard ack`)",
        rows.len(),
        rows.len() - cap
    );
    rows.into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}

/// The stream adaptation a journal pass carries over, which compaction must keep.
enum Carry {
    /// Adaptation is on: the analyzer's adapter holds it.
    Live,
    /// Adaptation is off: the journal's state as resumed (none when it holds none).
    Idle(Option<AdaptState>),
    /// Adaptation is off and the journal's state could not be resumed: the journal is not
    /// compacted, so the state's records stay as they are.
    Unreadable,
}

/// Sets `analyzer`'s adapter for a pass over `journal` and says what the pass carries over:
/// with adaptation on, the journal's state resumed (the bundle's ground state when it holds
/// none); with it off, no adapter.
fn start_adaptation(
    analyzer: &mut Analyzer,
    model: &Path,
    adapt: &crate::AdaptArgs,
    journal: &Journal,
) -> anyhow::Result<Carry> {
    let on = adapt.on(&analyzer.bundle);
    let ground = adapt.ground(analyzer, model)?;
    let fingerprint = analyzer.fingerprint();
    let resumed = journal.resume_adaptation(ground.clone(), &fingerprint);
    if on {
        analyzer.set_adapter(Some(resumed?.unwrap_or(ground)));
        return Ok(Carry::Live);
    }
    analyzer.set_adapter(None);
    Ok(match resumed {
        Ok(a) => Carry::Idle(a.map(|a| a.state(&fingerprint))),
        Err(e) => {
            eprintln!("warning: {e}; the journal is left uncompacted");
            Carry::Unreadable
        }
    })
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

/// Science values per class (bundle's, overridden by `--values`) and planner settings.
pub fn values_and_planner(
    analyzer: &Analyzer,
    values: Option<&Path>,
) -> anyhow::Result<(Vec<f32>, PlannerConfig)> {
    let classes = &analyzer.bundle.manifest.classes;
    let Some(path) = values else {
        return Ok((
            classes.iter().map(|c| c.science_value).collect(),
            PlannerConfig::default(),
        ));
    };
    let names: Vec<String> = classes.iter().map(|c| c.name.clone()).collect();
    let doc = onboard::downlink::load_table(path)?;
    let v = onboard::downlink::values_from(&doc, path, &names, |i| {
        f64::from(classes[i].science_value)
    })?;
    let planner = PlannerConfig::from_table(&doc, path).map_err(anyhow::Error::msg)?;
    Ok((v.iter().map(|&x| x as f32).collect(), planner))
}

/// Files that could not be analysed: (file name, reason).
pub type Skips = Vec<(String, String)>;

/// One analysed file.
pub struct Analysed {
    pub name: String,
    pub bytes: u64,
    pub analysis: Analysis,
}

/// Analyses `files`; failures are logged and returned as (file name, reason).
pub fn analyse_files(analyzer: &mut Analyzer, files: &[PathBuf]) -> (Vec<Analysed>, Skips) {
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let result = std::fs::metadata(path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|m| {
                analyzer
                    .analyze_file(path)
                    .map(|a| (m.len(), a))
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok((bytes, analysis)) => ok.push(Analysed {
                name,
                bytes,
                analysis,
            }),
            Err(reason) => {
                eprintln!("skip {}: {reason}", path.display());
                skipped.push((name, reason));
            }
        }
    }
    (ok, skipped)
}

/// Analyses the files the journal does not know yet, appending each result before the next
/// file; returns the journal's backlog (every analysed, not downlinked image, earlier passes
/// included) that is still in the folder, and the skips of this folder, with the backlog
/// images no longer in it (deleted, moved or another folder's) as skips.
fn analyse_with_journal(
    analyzer: &mut Analyzer,
    files: &[PathBuf],
    journal: &mut Journal,
    carry: Carry,
) -> anyhow::Result<(Vec<Analysed>, Skips)> {
    let adapted_before = analyzer.adapter().map(|a| a.images());
    let known: std::collections::HashSet<String> = journal
        .records()
        .iter()
        .filter_map(|r| r.file().map(str::to_string))
        .collect();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if known.contains(&name) {
            continue;
        }
        let (mut ok, mut bad) = analyse_files(analyzer, std::slice::from_ref(path));
        let record = match (ok.pop(), bad.pop()) {
            (Some(a), _) => Record::Analysed {
                file: a.name,
                bytes: a.bytes,
                analysis: a.analysis,
            },
            (None, Some((file, reason))) => Record::Skipped { file, reason },
            (None, None) => continue,
        };
        journal.append(record)?;
    }
    let fingerprint = analyzer.fingerprint();
    let state = analyzer.adapter().map(|a| a.state(&fingerprint));
    // Saved at the end of every pass that adapted, so a later pass replays only its own images.
    if let Some(s) = state.as_ref().filter(|s| Some(s.images) != adapted_before) {
        journal.append(Record::Adaptation { state: s.clone() })?;
    }
    if journal.records().len() > 2 * journal.latest().len() + 64 {
        match carry {
            Carry::Live => journal.compact(state)?,
            Carry::Idle(idle) => journal.compact(idle)?,
            Carry::Unreadable => {}
        }
    }
    let dir_names: std::collections::HashSet<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for r in journal.latest() {
        match r {
            Record::Analysed {
                file,
                bytes,
                analysis,
            } if dir_names.contains(file) => rows.push(Analysed {
                name: file.clone(),
                bytes: *bytes,
                analysis: analysis.clone(),
            }),
            Record::Analysed { file, .. } => {
                // Deleted, moved, or another folder's: it cannot be sent from here.
                let reason = "no longer in the folder: left out of the plan".to_string();
                eprintln!("skip {file}: {reason}");
                skipped.push((file.clone(), reason));
            }
            Record::Skipped { file, reason } if dir_names.contains(file) => {
                skipped.push((file.clone(), reason.clone()))
            }
            _ => {}
        }
    }
    Ok((rows, skipped))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = args.model.dir();
    let mut analyzer = args.model.load()?;
    let (values, planner) = values_and_planner(&analyzer, args.values.as_deref())?;
    let files = list_files(&args.dir)?;
    let mut journal = match &args.journal {
        Some(p) => Some(open_journal(p)?),
        None => None,
    };
    let (rows, skipped) = match journal.as_mut() {
        Some(j) => {
            let carry = start_adaptation(&mut analyzer, &model, &args.adapt, j)?;
            analyse_with_journal(&mut analyzer, &files, j, carry)?
        }
        None => {
            args.adapt.apply(&mut analyzer, &model)?;
            analyse_files(&mut analyzer, &files)
        }
    };
    let rows = cap_backlog(rows, &values, triage::MAX_PLAN);
    let candidates: Vec<Candidate<'_>> = rows
        .iter()
        .map(|r| Candidate {
            bytes: r.bytes,
            analysis: &r.analysis,
        })
        .collect();
    let budget = args.budget_bytes.unwrap_or(u64::MAX);
    let plan =
        triage::plan(&candidates, &values, &planner, budget).context("planning the downlink")?;
    let view = crate::plan_output::PlanView {
        rows: &rows,
        skipped: &skipped,
        plan: &plan,
        values: &values,
        classes: &analyzer.bundle.manifest.classes,
        budget_bytes: args.budget_bytes,
    };
    let text = if args.json {
        view.json(&model, analyzer.precision.name())?
    } else {
        view.table()
    };
    // The plan reaches its reader completely before anything is recorded as sent.
    crate::plan_output::deliver(&text, args.plan_out.as_deref())?;
    if let (true, Some(j)) = (args.mark_sent, journal.as_mut()) {
        for i in view.selected_in_order() {
            j.append(Record::Downlinked {
                file: rows[i].name.clone(),
            })
            .context("the plan was delivered, but recording it as sent failed")?;
        }
    }
    if let Some(sheet) = &args.sheet {
        view.sheet(&args.dir, sheet)?;
    }
    Ok(())
}

/// Opens the journal, saying on stderr when a torn last record (left by an interrupted pass)
/// was dropped.
pub fn open_journal(path: &std::path::Path) -> Result<Journal, onboard::journal::JournalError> {
    let j = Journal::open(path)?;
    if j.dropped_tail() > 0 {
        eprintln!(
            "journal {}: dropped a torn last record ({} bytes) left by an interrupted pass",
            path.display(),
            j.dropped_tail()
        );
    }
    Ok(j)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, bytes: u64, probs: Vec<f32>) -> Analysed {
        Analysed {
            name: name.into(),
            bytes,
            analysis: Analysis {
                latent: vec![0.0],
                cluster: 0,
                distance: 0.0,
                novelty: 0.0,
                class: 0,
                confidence: probs[0],
                probs,
                calibrated_probs: None,
                quality: Default::default(),
                content_hash: None,
            },
        }
    }

    #[test]
    fn a_backlog_past_one_plan_keeps_the_most_valuable_per_byte_in_order() {
        let values = [1.0, 3.0];
        let rows = vec![
            row("a", 100, vec![1.0, 0.0]),  // 0.01 per byte
            row("b", 100, vec![0.0, 1.0]),  // 0.03
            row("c", 10, vec![1.0, 0.0]),   // 0.1
            row("d", 1000, vec![0.0, 1.0]), // 0.003
        ];
        let kept = cap_backlog(rows, &values, 2);
        let names: Vec<&str> = kept.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        let small = vec![row("a", 1, vec![1.0, 0.0])];
        assert_eq!(cap_backlog(small, &values, 2).len(), 1);
    }
}
