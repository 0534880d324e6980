use std::path::{Path, PathBuf};

use anyhow::Context;
use onboard::adapt::AdaptState;
use std::collections::{HashMap, HashSet};

use onboard::journal::{FileName, Journal, Record, Stamp};
use onboard::pipeline::{Analysis, Analyzer};
use onboard::triage::{self, Candidate, PlannerConfig};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: onboard prioritize testdata/msl-sample/images --budget-bytes 76800 --sheet plan.png"
)]
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
    /// With --journal: the most images the backlog keeps; past it the lowest expected value per
    /// byte (ties: the oldest) are recorded as expired and leave the backlog.
    #[arg(long, requires = "journal", value_name = "IMAGES", default_value_t = triage::MAX_PLAN as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    backlog_capacity: u32,
    /// Images come in file-name order; with --journal the adaptation carries over from pass to
    /// pass (and across a crash) through the journal.
    #[command(flatten)]
    adapt: crate::AdaptArgs,
}

/// Expected science value per byte of a row.
fn density(r: &Analysed, values: &[f32]) -> f64 {
    let v: f32 = r
        .analysis
        .probs
        .iter()
        .zip(values)
        .map(|(p, v)| p * v)
        .sum();
    f64::from(v) / r.bytes.max(1) as f64
}

/// Row indices by expected value per byte, highest first (`best_first`) or lowest first; ties:
/// the earlier row first.
fn by_density(rows: &[Analysed], values: &[f32], best_first: bool) -> Vec<usize> {
    let d: Vec<f64> = rows.iter().map(|r| density(r, values)).collect();
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = if best_first { (b, a) } else { (a, b) };
        d[x].total_cmp(&d[y]).then(a.cmp(&b))
    });
    order
}

/// At most `cap` rows for one plan: when the backlog holds more, the rows of highest expected
/// science value per byte (ties: the earlier row), in their original order, with a warning on
/// stderr. The rest stay in the journal's backlog for later passes.
fn cap_backlog(rows: Vec<Analysed>, values: &[f32], cap: usize) -> Vec<Analysed> {
    if rows.len() <= cap {
        return rows;
    }
    let rank = by_density(&rows, values, true);
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

/// Keeps the journal's backlog within `capacity` images: the rows over it of lowest expected
/// value per byte (ties: the oldest) are recorded as expired, listed as skipped with the
/// reason, and counted on stderr; they do not come back unless their file changes.
fn expire_over_capacity(
    rows: Vec<Analysed>,
    values: &[f32],
    capacity: usize,
    journal: &mut Journal,
    skipped: &mut Skips,
) -> anyhow::Result<Vec<Analysed>> {
    if rows.len() <= capacity {
        return Ok(rows);
    }
    let over = rows.len() - capacity;
    let worst = by_density(&rows, values, false);
    let mut expire = vec![false; rows.len()];
    worst[..over].iter().for_each(|&i| expire[i] = true);
    let reason = format!(
        "expired: the backlog held {} images, over its capacity of {capacity} (--backlog-capacity)",
        rows.len()
    );
    let mut kept = Vec::with_capacity(capacity);
    for (r, gone) in rows.into_iter().zip(expire) {
        if !gone {
            kept.push(r);
            continue;
        }
        journal.append(Record::Expired {
            file: r.name.clone(),
            stamp: r.stamp,
            reason: reason.clone(),
        })?;
        skipped.push((r.name, reason.clone()));
    }
    eprintln!(
        "journal: expired {over} backlog images of the lowest expected value per byte ({reason}); raise --backlog-capacity to keep more"
    );
    Ok(kept)
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
pub type Skips = Vec<(FileName, String)>;

/// One analysed file.
pub struct Analysed {
    pub name: FileName,
    pub bytes: u64,
    /// The file's stamp when it was analysed.
    pub stamp: Option<Stamp>,
    pub analysis: Analysis,
}

/// Analyses `files`; failures are logged and returned as (file name, reason).
pub fn analyse_files(analyzer: &mut Analyzer, files: &[PathBuf]) -> (Vec<Analysed>, Skips) {
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    let bar = crate::progress_bar(files.len(), "analysing");
    for path in files {
        let (result, _) = analyse_one(analyzer, path, &bar);
        match result {
            Ok(a) => ok.push(a),
            Err(skip) => skipped.push(skip),
        }
    }
    bar.finish_and_clear();
    (ok, skipped)
}

/// Analyses one file: the analysis, or (name, reason) logged on stderr; with the file's stamp
/// before the analysis (`None` when it cannot be read).
fn analyse_one(
    analyzer: &mut Analyzer,
    path: &Path,
    bar: &indicatif::ProgressBar,
) -> (Result<Analysed, (FileName, String)>, Option<Stamp>) {
    bar.inc(1);
    let name = FileName::of(path).unwrap_or_else(|| FileName::from(""));
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"));
    let stamp = meta.as_ref().ok().and_then(Stamp::of);
    let result = meta.and_then(|m| {
        analyzer
            .analyze_file(path)
            .map(|a| (m.len(), a))
            .map_err(|e| e.to_string())
    });
    let result = match result {
        Ok((bytes, analysis)) => Ok(Analysed {
            name,
            bytes,
            stamp,
            analysis,
        }),
        Err(reason) => {
            bar.suspend(|| eprintln!("skip {}: {reason}", name.display()));
            Err((name, reason))
        }
    };
    (result, stamp)
}

/// Analyses the files of the folder whose latest journal record no longer holds (new, changed
/// since, skipped before and changed since, or analysed by another bundle or precision:
/// [`Record::is_current`]), appending each result before the next file; returns the journal's
/// backlog (every analysed, not downlinked image, earlier passes included) that is still in
/// the folder, and the skips of this folder, with the backlog images no longer in it (deleted,
/// moved or another folder's) as skips.
fn analyse_with_journal(
    analyzer: &mut Analyzer,
    files: &[PathBuf],
    journal: &mut Journal,
    carry: Carry,
) -> anyhow::Result<(Vec<Analysed>, Skips)> {
    let adapted_before = analyzer.adapter().map(|a| a.images());
    let model = analyzer.fingerprint();
    let current: HashSet<FileName> = {
        let latest: HashMap<&FileName, &Record> = journal
            .latest()
            .into_iter()
            .filter_map(|r| r.file().map(|f| (f, r)))
            .collect();
        files
            .iter()
            .filter_map(|p| {
                let name = FileName::of(p)?;
                let now = std::fs::metadata(p).ok().as_ref().and_then(Stamp::of);
                latest
                    .get(&name)
                    .is_some_and(|r| r.is_current(now, &model))
                    .then_some(name)
            })
            .collect()
    };
    let bar = crate::progress_bar(files.len().saturating_sub(current.len()), "analysing");
    for path in files {
        if FileName::of(path).is_some_and(|n| current.contains(&n)) {
            continue;
        }
        let record = match analyse_one(analyzer, path, &bar) {
            (Ok(a), _) => Record::Analysed {
                file: a.name,
                bytes: a.bytes,
                mtime_ns: a.stamp.map(|s| s.mtime_ns),
                model: Some(model.clone()),
                analysis: a.analysis,
            },
            (Err((file, reason)), stamp) => Record::Skipped {
                file,
                reason,
                stamp,
            },
        };
        journal.append(record)?;
    }
    bar.finish_and_clear();
    let state = analyzer.adapter().map(|a| a.state(&model));
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
    Ok(backlog_in(journal, files))
}

/// The journal's backlog in the folder of `files` and the folder's skips; backlog images no
/// longer in the folder are listed (and logged) as skips.
fn backlog_in(journal: &Journal, files: &[PathBuf]) -> (Vec<Analysed>, Skips) {
    let dir_names: HashSet<FileName> = files.iter().filter_map(|p| FileName::of(p)).collect();
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for r in journal.latest() {
        match r {
            Record::Analysed {
                file,
                bytes,
                analysis,
                ..
            } if dir_names.contains(file) => rows.push(Analysed {
                name: file.clone(),
                bytes: *bytes,
                stamp: r.stamp(),
                analysis: analysis.clone(),
            }),
            Record::Analysed { file, .. } => {
                // Deleted, moved, or another folder's: it cannot be sent from here.
                let reason = "no longer in the folder: left out of the plan".to_string();
                eprintln!("skip {}: {reason}", file.display());
                skipped.push((file.clone(), reason));
            }
            Record::Skipped { file, reason, .. } if dir_names.contains(file) => {
                skipped.push((file.clone(), reason.clone()))
            }
            _ => {}
        }
    }
    (rows, skipped)
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
            let (rows, mut skipped) = analyse_with_journal(&mut analyzer, &files, j, carry)?;
            let rows = expire_over_capacity(
                rows,
                &values,
                args.backlog_capacity as usize,
                j,
                &mut skipped,
            )?;
            (rows, skipped)
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
                stamp: rows[i].stamp,
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
            stamp: None,
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
        let names: Vec<String> = kept.iter().map(|r| r.name.display()).collect();
        assert_eq!(names, ["b", "c"]);
        let small = vec![row("a", 1, vec![1.0, 0.0])];
        assert_eq!(cap_backlog(small, &values, 2).len(), 1);
    }

    #[test]
    fn expiry_takes_the_lowest_value_per_byte_and_the_oldest_of_a_tie() {
        let values = [1.0, 3.0];
        let rows = vec![
            row("old", 100, vec![1.0, 0.0]), // 0.01 per byte, older of the tie
            row("best", 10, vec![0.0, 1.0]), // 0.3
            row("new", 100, vec![1.0, 0.0]), // 0.01, newer
            row("mid", 100, vec![0.0, 1.0]), // 0.03
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&dir.path().join("j.jsonl")).unwrap();
        let mut skipped = Vec::new();
        let kept = expire_over_capacity(rows, &values, 3, &mut journal, &mut skipped).unwrap();
        let names: Vec<String> = kept.iter().map(|r| r.name.display()).collect();
        assert_eq!(names, ["best", "new", "mid"]);
        assert_eq!(skipped[0].0.display(), "old");
        assert!(
            matches!(&journal.records()[0], Record::Expired { file, .. } if file.display() == "old")
        );
    }
}
