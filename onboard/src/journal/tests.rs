use super::*;
use crate::preprocess::QualityFlags;

fn analysed(file: &str) -> Record {
    Record::Analysed {
        file: file.into(),
        bytes: 100,
        analysis: Analysis {
            latent: vec![0.5, -0.25],
            cluster: 1,
            distance: 0.3,
            novelty: 0.0,
            class: 2,
            confidence: 0.9,
            probs: vec![0.05, 0.05, 0.9],
            quality: QualityFlags::default(),
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
    assert_eq!(j.records()[0], analysed("a.JPG"));
    assert_eq!(std::fs::metadata(&p).unwrap().len(), good);
    j.append(Record::Downlinked {
        file: "a.JPG".into(),
    })
    .unwrap();
    let j = Journal::open(&p).unwrap();
    assert_eq!(j.records().len(), 3);
    let latest: Vec<&str> = j.latest().iter().map(|r| r.file()).collect();
    assert_eq!(latest, ["a.JPG", "b.JPG"]);
    assert!(matches!(j.latest()[0], Record::Downlinked { .. }));
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
    })
    .unwrap();
    j.compact().unwrap();
    j.append(Record::Skipped {
        file: "c.JPG".into(),
        reason: "x".into(),
    })
    .unwrap();
    let back = Journal::open(&p).unwrap();
    let files: Vec<&str> = back.records().iter().map(|r| r.file()).collect();
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
    let mut j = Journal {
        path: dev_full.to_path_buf(),
        file: OpenOptions::new().write(true).open(dev_full).unwrap(),
        records: Vec::new(),
    };
    let err = j.append(analysed("a.JPG")).unwrap_err().to_string();
    assert!(err.contains("/dev/full: cannot"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(j.records().is_empty());
}
