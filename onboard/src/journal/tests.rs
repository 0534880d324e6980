use super::*;
use crate::preprocess::QualityFlags;

fn analysed(file: &str) -> Record {
    Record::Analysed {
        file: file.into(),
        bytes: 100,
        mtime_ns: None,
        model: None,
        analysis: Analysis {
            latent: vec![0.5, -0.25],
            cluster: 1,
            distance: 0.3,
            novelty: 0.0,
            class: 2,
            confidence: 0.9,
            probs: vec![0.05, 0.05, 0.9],
            calibrated_probs: None,
            quality: QualityFlags::default(),
            content_hash: None,
        },
    }
}

#[test]
fn records_survive_reopen_and_a_torn_tail_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j.jsonl");
    {
        let mut j = Journal::open(&p).unwrap();
        j.append(analysed("a.JPG")).unwrap();
        j.append(Record::Skipped {
            file: "b.JPG".into(),
            reason: "empty file".into(),
            stamp: None,
        })
        .unwrap();
    }
    let good = std::fs::metadata(&p).unwrap().len();
    // A crash in the middle of the third record.
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(br#"{"status":"analysed","file":"c.J"#).unwrap();
    drop(f);
    let mut j = Journal::open(&p).unwrap();
    assert_eq!(j.records().len(), 2);
    assert_eq!(j.dropped_tail(), 32);
    assert_eq!(j.records()[0], analysed("a.JPG"));
    assert_eq!(std::fs::metadata(&p).unwrap().len(), good);
    j.append(Record::Downlinked {
        file: "a.JPG".into(),
        stamp: None,
    })
    .unwrap();
    drop(j); // the lock is held until the journal is closed
    let j = Journal::open(&p).unwrap();
    assert_eq!(j.records().len(), 3);
    let latest: Vec<String> = j
        .latest()
        .iter()
        .filter_map(|r| r.file())
        .map(FileName::display)
        .collect();
    assert_eq!(latest, ["a.JPG", "b.JPG"]);
    assert!(matches!(j.latest()[0], Record::Downlinked { .. }));
}

#[test]
fn a_complete_but_unparsable_last_line_is_corruption_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j.jsonl");
    let text = "{\"status\":\"downlinked\",\"file\":\"a\"}\nnot a record\n";
    std::fs::write(&p, text).unwrap();
    let err = Journal::open(&p).unwrap_err().to_string();
    assert!(err.contains("j.jsonl:2: corrupt journal record"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        text,
        "nothing deleted"
    );
    // A clean journal reports no dropped tail.
    std::fs::write(&p, "{\"status\":\"downlinked\",\"file\":\"a\"}\n").unwrap();
    assert_eq!(Journal::open(&p).unwrap().dropped_tail(), 0);
}

#[test]
fn corruption_before_the_tail_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j.jsonl");
    std::fs::write(&p, "not json\n{\"status\":\"downlinked\",\"file\":\"a\"}\n").unwrap();
    let err = Journal::open(&p).unwrap_err().to_string();
    assert!(err.contains("j.jsonl:1: corrupt journal record"), "{err}");
}

#[test]
fn compaction_keeps_the_latest_record_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j.jsonl");
    let mut j = Journal::open(&p).unwrap();
    j.append(analysed("a.JPG")).unwrap();
    j.append(analysed("b.JPG")).unwrap();
    j.append(Record::Downlinked {
        file: "a.JPG".into(),
        stamp: None,
    })
    .unwrap();
    j.compact(None).unwrap();
    j.append(Record::Skipped {
        file: "c.JPG".into(),
        reason: "x".into(),
        stamp: None,
    })
    .unwrap();
    drop(j); // the lock is held until the journal is closed
    let back = Journal::open(&p).unwrap();
    let files: Vec<String> = back
        .records()
        .iter()
        .filter_map(|r| r.file())
        .map(FileName::display)
        .collect();
    assert_eq!(files, ["a.JPG", "b.JPG", "c.JPG"]);
    assert!(matches!(back.records()[0], Record::Downlinked { .. }));
}

#[test]
fn a_full_disk_is_a_clear_error_and_special_files_are_refused() {
    let dev_full = Path::new("/dev/full");
    if !dev_full.exists() {
        return;
    }
    let err = Journal::open(dev_full).unwrap_err().to_string();
    assert!(err.contains("/dev/full: not a regular file"), "{err}");
    assert!(
        !Path::new("/dev/full.lock").exists(),
        "no lock file beside a special file"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal {
        path: dev_full.to_path_buf(),
        file: OpenOptions::new().write(true).open(dev_full).unwrap(),
        records: Vec::new(),
        dropped_tail: 0,
        _lock: lock::JournalLock::take(&dir.path().join("j.jsonl")).unwrap(),
    };
    let err = j.append(analysed("a.JPG")).unwrap_err().to_string();
    assert!(err.contains("/dev/full: cannot"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(j.records().is_empty());
}

/// A ground adapter of 2 clusters in 2 dimensions and 3 classes.
fn ground() -> StreamAdapter {
    use crate::decide::ClusterStats;
    let stats = vec![
        ClusterStats {
            mean: 0.5,
            std: 0.2
        };
        2
    ];
    StreamAdapter::from_parts(
        Some(&[0.5, 0.3, 0.2]),
        &crate::bundle::Adaptation {
            prior_window: 3,
            centroid_prior_count: 2.0,
            ..Default::default()
        },
        vec![0.0, 0.0, 1.0, 1.0],
        stats,
    )
    .unwrap()
}

/// Image `i` of a small stream: an adapted analysis (through `live`) as a journal record.
fn adapted(live: &mut StreamAdapter, i: usize) -> Record {
    let latent = vec![0.1 * i as f32, 1.0 - 0.15 * i as f32];
    let calibrated = vec![
        0.2,
        0.3 + 0.05 * (i % 3) as f32,
        0.5 - 0.05 * (i % 3) as f32,
    ];
    let a = live.arrive(&latent).unwrap();
    let mut probs = calibrated.clone();
    live.adapt_probs(&mut probs).unwrap();
    Record::Analysed {
        file: format!("{i}.JPG").as_str().into(),
        bytes: 100,
        mtime_ns: None,
        model: None,
        analysis: Analysis {
            latent,
            cluster: a.cluster,
            distance: a.distance,
            novelty: a.novelty,
            class: 0,
            confidence: probs[0],
            probs,
            calibrated_probs: Some(calibrated),
            quality: QualityFlags::default(),
            content_hash: None,
        },
    }
}

#[test]
fn the_adaptation_resumes_where_the_last_record_left_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j.jsonl");
    let mut j = Journal::open(&p).unwrap();
    assert!(j.resume_adaptation(ground(), "m").unwrap().is_none());
    let mut live = ground();
    for i in 0..3 {
        j.append(adapted(&mut live, i)).unwrap();
    }
    j.append(Record::Adaptation {
        state: live.state("m"),
    })
    .unwrap();
    // Unadapted records (adaptation off) do not replay.
    j.append(analysed("off.JPG")).unwrap();
    for i in 3..7 {
        j.append(adapted(&mut live, i)).unwrap();
    }
    drop(j); // the lock is held until the journal is closed
    let j = Journal::open(&p).unwrap();
    let (state, replay) = j.adaptation();
    assert_eq!(state.unwrap().images, 3);
    assert_eq!(replay.len(), 4);
    let resumed = j.resume_adaptation(ground(), "m").unwrap().unwrap();
    assert_eq!(resumed.state("m"), live.state("m"));
    assert_eq!(live.images(), 7);
    let err = j
        .resume_adaptation(ground(), "other")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("j.jsonl: cannot resume the stream adaptation"),
        "{err}"
    );
    assert!(err.contains("belongs to model m, not other"), "{err}");
}

#[test]
fn compaction_keeps_the_adaptation_state_last() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j.jsonl");
    let mut j = Journal::open(&p).unwrap();
    let mut live = ground();
    for i in 0..4 {
        j.append(adapted(&mut live, i)).unwrap();
    }
    j.append(Record::Downlinked {
        file: "1.JPG".into(),
        stamp: None,
    })
    .unwrap();
    let state = j
        .resume_adaptation(ground(), "m")
        .unwrap()
        .unwrap()
        .state("m");
    assert_eq!(state, live.state("m"));
    j.compact(Some(state)).unwrap();
    drop(j); // the lock is held until the journal is closed
    let back = Journal::open(&p).unwrap();
    assert_eq!(back.records().len(), 5);
    assert!(matches!(back.records()[4], Record::Adaptation { .. }));
    assert!(back.adaptation().1.is_empty());
    let resumed = back.resume_adaptation(ground(), "m").unwrap().unwrap();
    assert_eq!(resumed.state("m"), live.state("m"));
}

#[test]
fn a_second_opener_is_refused_with_the_holders_pid_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j.jsonl");
    let mut first = Journal::open(&p).unwrap();
    first.append(analysed("a.JPG")).unwrap();
    let err = Journal::open(&p).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "j.jsonl: the journal is in use by pid {}",
            std::process::id()
        )),
        "{err}"
    );
    // Compaction renames a new journal into place; the lock still excludes.
    first.compact(None).unwrap();
    assert!(Journal::open(&p).is_err());
    drop(first);
    assert_eq!(Journal::open(&p).unwrap().records().len(), 1);
}

#[test]
fn a_record_holds_only_for_its_file_version_and_model() {
    let at = |bytes, mtime_ns| Some(Stamp { bytes, mtime_ns });
    let current = Record::Analysed {
        file: "a".into(),
        bytes: 10,
        mtime_ns: Some(5),
        model: Some("f32:ab".into()),
        analysis: match analysed("a") {
            Record::Analysed { analysis, .. } => analysis,
            _ => unreachable!(),
        },
    };
    assert!(current.is_current(at(10, 5), "f32:ab"));
    assert!(!current.is_current(at(11, 5), "f32:ab"), "size changed");
    assert!(!current.is_current(at(10, 6), "f32:ab"), "time changed");
    assert!(!current.is_current(at(10, 5), "int8:ab"), "other precision");
    assert!(!current.is_current(None, "f32:ab"), "unreadable now");
    let legacy = analysed("a"); // written before stamps and models
    assert!(!legacy.is_current(at(100, 5), "f32:ab"), "no stamp: redone");
    let skipped = Record::Skipped {
        file: "a".into(),
        reason: "truncated".into(),
        stamp: at(3, 1),
    };
    assert!(skipped.is_current(at(3, 1), "any"));
    assert!(
        !skipped.is_current(at(9, 2), "any"),
        "a changed file is retried"
    );
    let sent = |stamp| Record::Downlinked {
        file: "a".into(),
        stamp,
    };
    assert!(sent(at(3, 1)).is_current(at(3, 1), "m"));
    assert!(
        !sent(at(3, 1)).is_current(at(4, 1), "m"),
        "a new image under the name"
    );
    assert!(
        sent(None).is_current(at(4, 1), "m"),
        "an old record is not sent twice"
    );
}

#[test]
fn parsing_keeps_good_records_drops_only_a_torn_tail_and_names_a_bad_line() {
    let good = serde_json::to_string(&analysed("a")).unwrap() + "\n";
    let p = parse_records(good.as_bytes()).unwrap();
    assert_eq!((p.records.len(), p.good_len), (1, good.len() as u64));
    let torn = format!("{good}{{\"status\":\"ana");
    let p = parse_records(torn.as_bytes()).unwrap();
    assert_eq!((p.records.len(), p.good_len), (1, good.len() as u64));
    let bad = format!("{good}not json\n{good}");
    assert_eq!(parse_records(bad.as_bytes()).unwrap_err().0, 2);
    assert!(parse_records(b"").unwrap().records.is_empty());
}
