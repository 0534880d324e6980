use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use onboard::adapt::AdaptState;
use onboard::decide::Decision;
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
    /// With --journal: record the selected images as downlinked, so later passes leave them out.
    #[arg(long, requires = "journal")]
    mark_sent: bool,
    /// Images come in file-name order; with --journal the adaptation carries over from pass to
    /// pass (and across a crash) through the journal.
    #[command(flatten)]
    adapt: crate::AdaptArgs,
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
/// included) and the skips of this folder.
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
            } => rows.push(Analysed {
                name: file.clone(),
                bytes: *bytes,
                analysis: analysis.clone(),
            }),
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
        Some(p) => Some(Journal::open(p)?),
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
    let classes = &analyzer.bundle.manifest.classes;
    let reason = |i: usize| match plan.outcomes[i].decision {
        Decision::Selected(r) => format!("selected #{}", r + 1),
        Decision::NoRoom => "no room left in the budget".to_string(),
        Decision::NoValue => match plan.duplicate_of[i] {
            Some(d) => format!("no value left: near-duplicate of {}", rows[d].name),
            None => "no value left".to_string(),
        },
    };
    let order = plan.order();
    let selected = |i: usize| matches!(plan.outcomes[i].decision, Decision::Selected(_));
    if let Some(sheet) = &args.sheet {
        let tiles: Vec<_> = order
            .iter()
            .enumerate()
            .filter(|&(_, &i)| selected(i))
            .filter_map(|(rank, &i)| {
                let r = &rows[i];
                let img = onboard::preprocess::decode_file(&args.dir.join(&r.name))
                    .ok()?
                    .to_rgb8();
                let caption = vec![
                    format!("#{} {}", rank + 1, classes[r.analysis.class].name),
                    format!(
                        "score {:.2} {}kB",
                        plan.outcomes[i].initial_gain,
                        r.bytes.div_ceil(1024)
                    ),
                ];
                Some((img, caption))
            })
            .collect();
        let title = format!(
            "downlink plan: {} images, {} bytes of {}",
            tiles.len(),
            plan.bytes,
            args.budget_bytes
                .map_or("unlimited".into(), |b| b.to_string())
        );
        onboard::render::contact_sheet(&title, &tiles, 6)
            .save_png(sheet)
            .with_context(|| format!("{}: cannot write the contact sheet", sheet.display()))?;
    }
    if let (true, Some(j)) = (args.mark_sent, journal.as_mut()) {
        for &i in order.iter().filter(|&&i| selected(i)) {
            j.append(Record::Downlinked {
                file: rows[i].name.clone(),
            })?;
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let plan_json: Vec<_> = order
            .iter()
            .map(|&i| {
                let r = &rows[i];
                let a = &r.analysis;
                let expected_value: f32 = a.probs.iter().zip(&values).map(|(p, v)| p * v).sum();
                serde_json::json!({
                    "file": r.name, "bytes": r.bytes, "class": classes[a.class].name, "confidence": a.confidence,
                    "cluster": a.cluster, "novelty": a.novelty, "score": plan.outcomes[i].initial_gain,
                    "selected": selected(i), "reason": reason(i),
                    "parts": {
                        "expected_class_value": expected_value,
                        "marginal_gain": plan.outcomes[i].gain,
                        "quality": plan.quality[i],
                        "quality_flags": {"blank": a.quality.blank, "overexposed": a.quality.overexposed, "dominant_channel": a.quality.dominant_channel},
                        "duplicate_of": plan.duplicate_of[i].map(|d| rows[d].name.clone()),
                    },
                })
            })
            .collect();
        let skipped_json: Vec<_> = skipped
            .iter()
            .map(|(f, reason)| serde_json::json!({"file": f, "reason": reason}))
            .collect();
        let doc = serde_json::json!({
            "model": model.display().to_string(),
        "precision": analyzer.precision.name(),
            "budget_bytes": args.budget_bytes,
            "bytes_selected": plan.bytes,
            "plan": plan_json,
            "skipped": skipped_json,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(
            out,
            "{:>4} {:<40} {:>9} {:<22} {:>5} {:>4} {:>7} {:>6}  decision",
            "rank", "file", "bytes", "class", "conf", "clus", "novelty", "score"
        )?;
        for (rank, &i) in order.iter().enumerate() {
            let (r, a) = (&rows[i], &rows[i].analysis);
            writeln!(
                out,
                "{:>4} {:<40} {:>9} {:<22} {:>5.2} {:>4} {:>7.2} {:>6.3}  {}",
                rank + 1,
                r.name,
                r.bytes,
                classes[a.class].name,
                a.confidence,
                a.cluster,
                a.novelty,
                plan.outcomes[i].initial_gain,
                reason(i)
            )?;
        }
        let n_sel = (0..rows.len()).filter(|&i| selected(i)).count();
        writeln!(
            out,
            "{} images planned, {n_sel} selected ({} bytes), {} skipped",
            rows.len(),
            plan.bytes,
            skipped.len()
        )?;
    }
    Ok(())
}
