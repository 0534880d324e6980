//! The hostile journals and science-value files of `testdata/hostile/` (written by
//! `testdata-gen hostile`) through `onboard prioritize`: each gets the outcome
//! `testdata/hostile/README.md` gives it, never a panic, and a journal that is refused is left
//! byte for byte as it was. Runs natively and under qemu (two fixture images per pass).
#![allow(clippy::unwrap_used)]

use std::path::Path;

mod common;
use common::*;

/// A hostile journal: file, exit code, text stderr must hold, whether the file must stay as it
/// was.
struct JournalCase(&'static str, i32, &'static str, bool);

const JOURNALS: &[JournalCase] = &[
    JournalCase("empty.jsonl", 0, "", false),
    JournalCase(
        "torn_tail.jsonl",
        0,
        "dropped a torn last record (23 bytes)",
        false,
    ),
    JournalCase(
        "corrupt_middle.jsonl",
        1,
        "j.jsonl:2: corrupt journal record",
        true,
    ),
    JournalCase(
        "blank_line.jsonl",
        1,
        "j.jsonl:3: corrupt journal record",
        true,
    ),
    JournalCase("wrong_type.jsonl", 1, "expected a file name", true),
    JournalCase(
        "unknown_status.jsonl",
        1,
        "unknown variant `exploded`",
        true,
    ),
    JournalCase("out_of_range.jsonl", 1, "number out of range", true),
    JournalCase(
        "invalid_utf8.jsonl",
        1,
        "j.jsonl:1: corrupt journal record",
        true,
    ),
    JournalCase(
        "nul_bytes.jsonl",
        1,
        "j.jsonl:1: corrupt journal record",
        true,
    ),
    JournalCase(
        "deep_nesting.jsonl",
        1,
        "j.jsonl:1: corrupt journal record",
        true,
    ),
    JournalCase("non_utf8_name.jsonl", 0, "", false),
    JournalCase(
        "legacy_records.jsonl",
        0,
        "skip gone.jpg: no longer in the folder",
        false,
    ),
];

/// A hostile values file: file, text the one-line error must hold.
const VALUES: &[(&str, &str)] = &[
    (
        "huge_value.toml",
        "value of \"ground\" is 1e300; it must be within 0..=1000000",
    ),
    ("nan_value.toml", "value of \"ground\" is NaN"),
    ("inf_value.toml", "value of \"ground\" is inf"),
    ("negative_value.toml", "value of \"ground\" is -1.0"),
    ("string_value.toml", "value of \"ground\" is not a number"),
    (
        "unknown_class.toml",
        "unknown class \"unicorn\"; known classes:",
    ),
    (
        "negative_factor.toml",
        "[planner]: duplicate_factor = -1 is outside 0..=1",
    ),
    (
        "huge_novelty.toml",
        "[planner]: novelty = inf is outside 0..=1000",
    ),
    (
        "huge_window.toml",
        "[planner]: duplicate_window = 99999999 exceeds 16384",
    ),
    ("unknown_setting.toml", "[planner]: unknown field `turbo`"),
    ("binary.toml", "stream did not contain valid UTF-8"),
    ("deep_nesting.toml", "max recursion depth met"),
];

fn hostile(sub: &str) -> std::path::PathBuf {
    root().join("testdata/hostile").join(sub)
}

/// Runs one pass over `dir` with `journal`; checks the exit code and stderr, and that a refused
/// journal is unchanged.
fn check_journal(dir: &Path, journal: &Path, case: &JournalCase) {
    let JournalCase(name, code, needle, kept) = *case;
    let before = std::fs::read(journal).unwrap();
    let out = onboard(&[
        "prioritize",
        dir.to_str().unwrap(),
        "--journal",
        journal.to_str().unwrap(),
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{name}: {err}");
    assert!(err.contains(needle), "{name}: {err}");
    assert!(!err.contains("panicked"), "{name}: {err}");
    if code != 0 {
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
    }
    if kept {
        assert!(
            std::fs::read(journal).unwrap() == before,
            "{name} was modified"
        );
    } else {
        json(&out);
    }
}

#[test]
fn hostile_journals_get_their_documented_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = copy_first_fixtures(tmp.path(), 2);
    let journal = tmp.path().join("j.jsonl");
    for case in JOURNALS {
        std::fs::copy(hostile("journals").join(case.0), &journal).unwrap();
        check_journal(&dir, &journal, case);
    }
    let listed: Vec<&str> = JOURNALS.iter().map(|c| c.0).collect();
    for e in std::fs::read_dir(hostile("journals")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            listed.contains(&name.as_str()),
            "{name} has no expected outcome here"
        );
    }
    // An 8 MiB unterminated line after good records (made here, not committed): a torn record.
    let mut big = std::fs::read(hostile("journals").join("torn_tail.jsonl")).unwrap();
    big.truncate(big.iter().rposition(|&b| b == b'\n').unwrap() + 1);
    big.extend(std::iter::repeat_n(b'a', 8 << 20));
    std::fs::write(&journal, &big).unwrap();
    let case = JournalCase(
        "8 MiB torn line",
        0,
        "dropped a torn last record (8388608 bytes)",
        false,
    );
    check_journal(&dir, &journal, &case);
}

#[test]
fn hostile_values_files_are_one_line_errors_naming_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = copy_first_fixtures(tmp.path(), 1);
    for (name, needle) in VALUES {
        let path = hostile("values").join(name);
        let out = onboard(&[
            "prioritize",
            dir.to_str().unwrap(),
            "--values",
            path.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
        assert!(err.contains(name), "{name}: the file is named: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
        assert!(out.stdout.is_empty(), "{name}: no plan on bad settings");
    }
    let listed: Vec<&str> = VALUES.iter().map(|c| c.0).collect();
    for e in std::fs::read_dir(hostile("values")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            listed.contains(&name.as_str()),
            "{name} has no expected outcome here"
        );
    }
}
