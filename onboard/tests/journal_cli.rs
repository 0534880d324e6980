//! The journal through the `onboard` binary: crashes, concurrent passes, delivery and
//! acknowledgement, changed and renamed images, other bundles and precisions, non-UTF-8 names,
//! a bounded backlog, unwritable journals.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::*;

#[test]
fn a_backlog_image_deleted_from_the_folder_leaves_the_plan_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, all) = copy_first_fixtures(tmp.path(), 4);
    let journal = tmp.path().join("j.jsonl");
    let pass = || {
        json(&onboard(&[
            "prioritize",
            d.to_str().unwrap(),
            "--journal",
            journal.to_str().unwrap(),
            "--json",
        ]))
    };
    assert_eq!(pass()["plan"].as_array().unwrap().len(), 4);
    let gone = all[1].file_name().unwrap().to_str().unwrap();
    std::fs::remove_file(d.join(gone)).unwrap();
    let doc = pass();
    let plan = doc["plan"].as_array().unwrap();
    assert_eq!(plan.len(), 3);
    assert!(plan.iter().all(|r| r["file"] != gone), "{doc}");
    let skipped = doc["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|s| s["file"] == gone && s["reason"].as_str().unwrap().contains("no longer")),
        "{doc}"
    );
}

#[test]
fn sigkill_mid_pass_loses_and_duplicates_no_decision_and_the_adaptation_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let fixtures: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("testdata/pass"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    // Under an emulator each image costs far more: fewer images still leave the pass unfinished
    // at the kill.
    let (n, at_kill) = (scaled(800, 24), scaled(40, 8));
    for i in 0..n {
        std::os::unix::fs::symlink(
            &fixtures[i % fixtures.len()],
            images.join(format!("img{i:04}.jpg")),
        )
        .unwrap();
    }
    std::fs::write(images.join("zz_empty.JPG"), b"").unwrap();
    let journal = tmp.path().join("decisions.jsonl");
    let pass = |journal: &Path| {
        [
            "prioritize".to_string(),
            images.to_str().unwrap().to_string(),
            "--journal".to_string(),
            journal.to_str().unwrap().to_string(),
            "--json".to_string(),
        ]
    };
    let args = pass(&journal);
    let mut child = onboard_cmd()
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while lines(&journal) < at_kill && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the pass finished before it could be killed; raise the image count"
    );
    let before = lines(&journal);
    assert!(
        before >= at_kill && before < n,
        "journal had {before} records at the kill"
    );

    fn argv(a: &[String]) -> Vec<&str> {
        a.iter().map(String::as_str).collect()
    }
    let doc = json(&onboard(&argv(&args)));
    let text = std::fs::read_to_string(&journal).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let files: Vec<String> = records
        .iter()
        .filter_map(|r| r["file"].as_str().map(str::to_string))
        .collect();
    // The pass ends with the adaptation state (the bundle adapts by default).
    assert_eq!(records.len(), files.len() + 1);
    assert_eq!(records.last().unwrap()["status"], "adaptation");
    let unique: std::collections::BTreeSet<&String> = files.iter().collect();
    assert_eq!(
        files.len(),
        n + 1,
        "records: {} for {} files",
        files.len(),
        n + 1
    );
    assert_eq!(unique.len(), n + 1, "a decision was duplicated");
    assert_eq!(doc["plan"].as_array().unwrap().len(), n);
    assert_eq!(doc["skipped"].as_array().unwrap().len(), 1);
    // Resumed after the kill, the pass ends exactly where an uninterrupted pass does: the same
    // analyses (adapted to the same stream state image by image) and the same final state,
    // byte for byte.
    let whole = tmp.path().join("uninterrupted.jsonl");
    json(&onboard(&argv(&pass(&whole))));
    assert!(
        std::fs::read_to_string(&whole).unwrap() == text,
        "the resumed journal differs from an uninterrupted pass's"
    );
    // The state belongs to this bundle and precision: another precision refuses it.
    let default = doc["precision"].as_str().unwrap();
    let mut other = argv(&args);
    other.extend(["--precision", other_precision(default)]);
    let out = onboard(&other);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let expected = format!("cannot resume the stream adaptation: it belongs to model {default}:");
    assert!(err.contains(&expected), "{err}");
}

/// A precision of the default bundle other than `default` (its default precision).
fn other_precision(default: &str) -> &'static str {
    if default == "f32" {
        "int8"
    } else {
        "f32"
    }
}

#[test]
fn a_second_pass_on_a_journal_in_use_fails_at_once_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(root().join("testdata/pass"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    fixtures.sort();
    let n = scaled(300, 16);
    for i in 0..n {
        std::os::unix::fs::symlink(
            &fixtures[i % fixtures.len()],
            images.join(format!("img{i:04}.jpg")),
        )
        .unwrap();
    }
    let journal = tmp.path().join("decisions.jsonl");
    let args = [
        "prioritize",
        images.to_str().unwrap(),
        "--journal",
        journal.to_str().unwrap(),
        "--json",
    ];
    let mut first = onboard_cmd()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&journal).map_or(0, |s| s.lines().count()) < 1
        && started.elapsed() < std::time::Duration::from_secs(120)
    {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let second = onboard(&args);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "the first pass ended before the second started; raise the image count"
    );
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("the journal is in use by pid {}", first.id())),
        "{err}"
    );
    assert!(first.wait().unwrap().success());
    // The journal is whole: every image analysed once, then the adaptation state.
    let text = std::fs::read_to_string(&journal).unwrap();
    let files: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["file"].as_str().map(str::to_string)
        })
        .collect();
    let unique: std::collections::BTreeSet<&String> = files.iter().collect();
    assert_eq!((files.len(), unique.len()), (n, n));
}

#[test]
fn nothing_is_marked_sent_until_the_plan_is_delivered_and_ack_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures(tmp.path(), 6);
    let journal = tmp.path().join("j.jsonl");
    let (d, j) = (dir.to_str().unwrap(), journal.to_str().unwrap());
    let downlinked = || {
        std::fs::read_to_string(&journal)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"downlinked\""))
            .count()
    };
    // stdout cannot take the plan: an error naming stdout, and nothing recorded as sent.
    let full = std::fs::File::create("/dev/full").unwrap();
    let out = onboard_cmd()
        .args([
            "prioritize",
            d,
            "--journal",
            j,
            "--mark-sent",
            "--budget-bytes",
            "60000",
        ])
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write the plan to stdout; nothing was recorded as sent"),
        "{err}"
    );
    assert_eq!(downlinked(), 0);
    // The plan to a file, then the ground acknowledges two images, twice.
    let plan = tmp.path().join("plan.json");
    let args = [
        "prioritize",
        d,
        "--journal",
        j,
        "--json",
        "--plan-out",
        plan.to_str().unwrap(),
    ];
    assert!(onboard(&args).status.success());
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    let names: Vec<String> = doc["plan"].as_array().unwrap()[..2]
        .iter()
        .map(|e| e["file"].as_str().unwrap().to_string())
        .collect();
    let ack = |extra: &[&str]| {
        let mut a = vec!["ack", "--journal", j, "--json"];
        a.extend(names.iter().map(String::as_str));
        a.extend(extra);
        onboard(&a)
    };
    let first = json(&ack(&[]));
    assert_eq!(first["acknowledged"].as_array().unwrap().len(), 2);
    let again = json(&ack(&[]));
    assert_eq!(again["acknowledged"].as_array().unwrap().len(), 0);
    assert_eq!(again["already_downlinked"].as_array().unwrap().len(), 2);
    assert_eq!(downlinked(), 2);
    let unknown = ack(&["never_seen.JPG"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr)
        .contains("not in the journal's backlog: never_seen.JPG"));
    assert_eq!(downlinked(), 2, "a refused ack records nothing");
    // The acknowledged images leave the backlog.
    let doc = json(&onboard(&["prioritize", d, "--journal", j, "--json"]));
    let left: Vec<&str> = doc["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["file"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !left.contains(&n.as_str())),
        "{left:?}"
    );
    // A sheet path that is a symlink is refused and left alone; the plan is still printed.
    let target = tmp.path().join("keep.txt");
    std::fs::write(&target, "keep").unwrap();
    let link = tmp.path().join("sheet.png");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = onboard(&["prioritize", d, "--json", "--sheet", link.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    assert!(serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
}

#[test]
fn read_only_journal_is_a_clear_error_and_keeps_the_last_good_state() {
    // Everything the run needs lives in a world-readable folder, so that as root the second run
    // can drop to an unprivileged user (root ignores file permissions).
    let tmp = tempfile::tempdir().unwrap();
    chmod(tmp.path(), 0o755);
    let (images, model, state) = (
        tmp.path().join("images"),
        tmp.path().join("model"),
        tmp.path().join("state"),
    );
    copy_dir(&root().join("models/default"), &model);
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let pass: Vec<PathBuf> = std::fs::read_dir(root().join("testdata/pass"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for p in pass.iter().take(3) {
        std::fs::copy(p, images.join(p.file_name().unwrap())).unwrap();
    }
    let journal = state.join("decisions.jsonl");
    let args = |j: &Path| {
        vec![
            "prioritize".to_string(),
            images.display().to_string(),
            "--model".into(),
            model.display().to_string(),
            "--journal".into(),
            j.display().to_string(),
        ]
    };
    let first = onboard_cmd().args(args(&journal)).output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let good = std::fs::read(&journal).unwrap();
    // Three images and the pass's adaptation state.
    assert_eq!(String::from_utf8_lossy(&good).lines().count(), 4);

    let late = &pass[3];
    std::fs::copy(late, images.join(late.file_name().unwrap())).unwrap();
    for p in [&images, &model] {
        chmod(p, 0o755);
    }
    chmod(&journal, 0o444);
    chmod(&state, 0o555);
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let out = if is_root {
        let bin = tmp.path().join("onboard");
        std::fs::copy(env!("CARGO_BIN_EXE_onboard"), &bin).unwrap();
        chmod(&bin, 0o755);
        let runner = std::env::var("ONBOARD_TEST_RUNNER").unwrap_or_default();
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(runner.split_whitespace())
            .arg(&bin)
            .args(args(&journal))
            .current_dir(tmp.path())
            .output()
            .expect("setpriv runs")
    } else {
        onboard_cmd().args(args(&journal)).output().unwrap()
    };
    chmod(&state, 0o755);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("decisions.jsonl") && stderr.contains("cannot open the journal"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        good,
        "the last good state changed"
    );
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// How many records of each status the journal holds.
fn statuses(journal: &Path) -> std::collections::BTreeMap<String, usize> {
    let mut n = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(journal).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *n.entry(v["status"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    n
}

fn count(journal: &Path, status: &str) -> usize {
    statuses(journal).get(status).copied().unwrap_or(0)
}

fn plan_files(doc: &serde_json::Value) -> Vec<String> {
    doc["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["file"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_record_holds_only_for_the_same_file_bytes_and_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, all) = copy_first_fixtures(tmp.path(), 3);
    let journal = tmp.path().join("j.jsonl");
    let late = d.join("late.jpg");
    // Still being written: the first 300 bytes of an image.
    std::fs::write(&late, &std::fs::read(&all[3]).unwrap()[..300]).unwrap();
    let pass = |extra: &[&str]| {
        let mut a = vec![
            "prioritize",
            d.to_str().unwrap(),
            "--journal",
            journal.to_str().unwrap(),
            "--json",
        ];
        a.extend(extra);
        json(&onboard(&a))
    };
    let doc = pass(&[]);
    assert_eq!(plan_files(&doc).len(), 3);
    assert_eq!(doc["skipped"][0]["file"], "late.jpg", "{doc}");
    let first = statuses(&journal);
    // Nothing changed: nothing is analysed or tried again.
    pass(&[]);
    assert_eq!(statuses(&journal), first);
    // The skipped image is complete now: it is retried and joins the plan.
    std::fs::copy(&all[3], &late).unwrap();
    let doc = pass(&[]);
    assert!(plan_files(&doc).contains(&"late.jpg".to_string()), "{doc}");
    assert_eq!(count(&journal, "analysed"), 4);
    // A new image under an old name is analysed anew: its own size, not the old record's.
    let reused = all[0].file_name().unwrap().to_str().unwrap();
    std::fs::copy(&all[5], d.join(reused)).unwrap();
    let doc = pass(&[]);
    assert_eq!(count(&journal, "analysed"), 5);
    let row = doc["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["file"] == reused)
        .unwrap()
        .clone();
    assert_eq!(
        row["bytes"].as_u64().unwrap(),
        std::fs::metadata(&all[5]).unwrap().len()
    );
    // Another precision: every record is redone, none is reused.
    let other = other_precision(doc["precision"].as_str().unwrap());
    let doc = pass(&["--precision", other, "--adapt", "off"]);
    assert_eq!(doc["precision"], other);
    assert_eq!(count(&journal, "analysed"), 9);
    assert_eq!(plan_files(&doc).len(), 4);
}

#[test]
fn names_that_are_not_utf8_stay_apart_and_can_be_acknowledged() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let (_, all) = copy_first_fixtures(tmp.path(), 0);
    let d = tmp.path().join("odd");
    std::fs::create_dir_all(&d).unwrap();
    let a = OsStr::from_bytes(b"x\xff.jpg");
    let b = OsStr::from_bytes(b"x\xfe.jpg");
    std::fs::copy(&all[0], d.join(a)).unwrap();
    std::fs::copy(&all[1], d.join(b)).unwrap();
    let journal = tmp.path().join("j.jsonl");
    let (dir, j) = (d.to_str().unwrap(), journal.to_str().unwrap());
    let doc = json(&onboard(&["prioritize", dir, "--journal", j, "--json"]));
    let mut files = plan_files(&doc);
    files.sort();
    assert_eq!(files, ["x\\xfe.jpg", "x\\xff.jpg"], "{doc}");
    assert_eq!(count(&journal, "analysed"), 2);
    json(&onboard(&["prioritize", dir, "--journal", j, "--json"]));
    assert_eq!(
        count(&journal, "analysed"),
        2,
        "the second pass reuses both"
    );
    // Acknowledged by the raw name, and by the name as the plan printed it.
    let raw = onboard_cmd()
        .args(["ack", "--journal", j, "--json"])
        .arg(d.join(a))
        .output()
        .unwrap();
    assert_eq!(json(&raw)["acknowledged"][0], "x\\xff.jpg");
    let shown = json(&onboard(&["ack", "--journal", j, "--json", "x\\xfe.jpg"]));
    assert_eq!(shown["acknowledged"][0], "x\\xfe.jpg");
    let doc = json(&onboard(&["prioritize", dir, "--journal", j, "--json"]));
    assert!(plan_files(&doc).is_empty(), "{doc}");
}

#[test]
fn a_backlog_over_its_capacity_expires_the_least_valuable_and_never_wedges() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, _) = copy_first_fixtures(tmp.path(), 5);
    let journal = tmp.path().join("j.jsonl");
    let (dir, j) = (d.to_str().unwrap(), journal.to_str().unwrap());
    let out = onboard(&[
        "prioritize",
        dir,
        "--journal",
        j,
        "--json",
        "--backlog-capacity",
        "3",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let doc = json(&out);
    assert_eq!(plan_files(&doc).len(), 3, "{doc}");
    assert!(err.contains("expired 2 backlog images"), "{err}");
    let expired: Vec<&serde_json::Value> = doc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["reason"].as_str().unwrap().starts_with("expired"))
        .collect();
    assert_eq!(expired.len(), 2, "{doc}");
    assert_eq!(count(&journal, "expired"), 2);
    // The next pass, at the default capacity, neither brings them back nor expires more.
    let doc = json(&onboard(&["prioritize", dir, "--journal", j, "--json"]));
    assert_eq!(plan_files(&doc).len(), 3);
    assert_eq!(count(&journal, "expired"), 2);
    assert_eq!(count(&journal, "analysed"), 5, "nothing analysed twice");
    let zero = onboard(&["prioritize", dir, "--journal", j, "--backlog-capacity", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--backlog-capacity"));
}
