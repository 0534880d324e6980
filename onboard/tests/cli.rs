//! The `onboard` binary against the committed default bundle and the generated fixtures.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `onboard` binary as a command, run through `ONBOARD_TEST_RUNNER` (e.g.
/// `qemu-aarch64 -L DIR`) when that is set, as for cross-compiled test runs.
fn onboard_cmd() -> Command {
    let runner = std::env::var("ONBOARD_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut cmd = match words.next() {
        Some(prog) => {
            let mut c = Command::new(prog);
            c.args(words).arg(env!("CARGO_BIN_EXE_onboard"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_onboard")),
    };
    cmd.current_dir(root());
    cmd
}

/// Whether the binary runs under an emulator (`ONBOARD_TEST_RUNNER` set, e.g. qemu for the
/// aarch64 build). Each image then costs tens of times more, so the tests that loop over many
/// images make the same checks on fewer: the real-data evaluation on all its images runs
/// natively, and `scripts/test.sh` compares the board's predictions with x86's.
fn emulated() -> bool {
    std::env::var("ONBOARD_TEST_RUNNER").is_ok_and(|r| !r.trim().is_empty())
}

/// `native` natively, `emulated` under an emulator ([`emulated`]).
fn scaled(native: usize, emulated_n: usize) -> usize {
    if emulated() {
        emulated_n
    } else {
        native
    }
}

/// The fixture folder natively; under an emulator a copy of its first `n` images (by name: the
/// scene kinds take turns) in `tmp`.
fn fixtures(tmp: &Path, n: usize) -> PathBuf {
    if !emulated() {
        return root().join("testdata/pass");
    }
    copy_first_fixtures(tmp, n).0
}

/// A copy of the first `n` fixture images (by name) in `tmp/pass`; returns the folder and
/// every fixture's path, sorted.
fn copy_first_fixtures(tmp: &Path, n: usize) -> (PathBuf, Vec<PathBuf>) {
    let d = tmp.join("pass");
    std::fs::create_dir_all(&d).unwrap();
    let mut all: Vec<PathBuf> = std::fs::read_dir(root().join("testdata/pass"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    all.sort();
    for p in &all[..n] {
        std::fs::copy(p, d.join(p.file_name().unwrap())).unwrap();
    }
    (d, all)
}

fn onboard(args: &[&str]) -> std::process::Output {
    onboard_cmd().args(args).output().expect("onboard runs")
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "onboard failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

/// A bundle-breaking edit: name, how to break the copy, text the error must contain.
type Case<'a> = (&'a str, &'a dyn Fn(&Path), &'a str);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_byte_identical_copy_far_from_its_original_is_its_duplicate() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, all) = copy_first_fixtures(tmp.path(), 10);
    // Sorted last, 10 images after its original: beyond the near-duplicate window of 8.
    std::fs::copy(&all[0], d.join("zzz_copy.jpg")).unwrap();
    let doc = json(&onboard(&["prioritize", d.to_str().unwrap(), "--json"]));
    let row = doc["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["file"] == "zzz_copy.jpg")
        .cloned()
        .unwrap();
    let original = all[0].file_name().unwrap().to_str().unwrap();
    assert_eq!(row["parts"]["duplicate_of"], original, "{row}");
}

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
fn prioritize_plans_every_fixture_within_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures(tmp.path(), 12);
    let budget = 60_000u64;
    let doc = json(&onboard(&[
        "prioritize",
        dir.to_str().unwrap(),
        "--budget-bytes",
        &budget.to_string(),
        "--json",
    ]));
    let plan = doc["plan"].as_array().unwrap();
    let n_files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(plan.len(), n_files);
    assert!(doc["skipped"].as_array().unwrap().is_empty());
    // Chosen images come first, in downlink order; the rest follow by decreasing score.
    let n_sel = plan.iter().take_while(|r| r["selected"] == true).count();
    assert!(n_sel > 0 && plan[n_sel..].iter().all(|r| r["selected"] == false));
    let reasons: Vec<String> = plan[..n_sel]
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        reasons,
        (1..=n_sel)
            .map(|k| format!("selected #{k}"))
            .collect::<Vec<_>>()
    );
    let rest: Vec<f64> = plan[n_sel..]
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(
        rest.windows(2).all(|w| w[0] >= w[1]),
        "unselected part not sorted by score: {rest:?}"
    );
    let used: u64 = plan
        .iter()
        .filter(|r| r["selected"].as_bool().unwrap())
        .map(|r| r["bytes"].as_u64().unwrap())
        .sum();
    assert!(used <= budget && used > 0);
    assert_eq!(used, doc["bytes_selected"].as_u64().unwrap());
    for r in plan {
        for key in [
            "file",
            "bytes",
            "class",
            "confidence",
            "cluster",
            "novelty",
            "score",
            "selected",
        ] {
            assert!(!r[key].is_null(), "missing {key} in {r}");
        }
        let c = r["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c));
    }
}

#[test]
fn prioritize_skips_bad_files_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("testdata/pass/000_ground.jpg"),
        dir.path().join("a.jpg"),
    )
    .unwrap();
    std::fs::write(dir.path().join("b.JPG"), b"").unwrap();
    std::fs::write(dir.path().join("c.JPG"), b"this is text, not an image").unwrap();
    let jpg = std::fs::read(root().join("testdata/pass/001_horizon.jpg")).unwrap();
    std::fs::write(dir.path().join("d.JPG"), &jpg[..jpg.len() / 3]).unwrap();
    let out = onboard(&["prioritize", dir.path().to_str().unwrap(), "--json"]);
    let doc = json(&out);
    assert_eq!(doc["plan"].as_array().unwrap().len(), 1);
    let skipped: Vec<&str> = doc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["b.JPG", "c.JPG", "d.JPG"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("b.JPG: empty file"), "{err}");
    assert!(err.contains("c.JPG: cannot decode"), "{err}");
    assert!(err.contains("d.JPG: truncated JPEG"), "{err}");
}

#[test]
fn broken_bundles_fail_before_any_image_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let edit_manifest = |d: &Path, edit: &dyn Fn(&mut serde_json::Value)| {
        let p = d.join("manifest.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    };
    let cases: [Case; 5] = [
        (
            "input shape",
            &|d: &Path| edit_manifest(d, &|v| v["input"]["width"] = 48.into()),
            "the graph declares input [1, 3, ",
        ),
        (
            "non-finite centroid",
            &|d: &Path| edit_manifest(d, &|v| v["clustering"]["centroids"][0][0] = 1e39.into()),
            "centroid 0 holds a non-finite value",
        ),
        (
            "hash",
            &|d: &Path| std::fs::write(d.join("encoder.f32.onnx"), b"garbage").unwrap(),
            "sha256",
        ),
        (
            "missing",
            &|d: &Path| std::fs::remove_file(d.join("classifier.f32.onnx")).unwrap(),
            "classifier.f32.onnx",
        ),
        (
            "version",
            &|d: &Path| {
                let p = d.join("manifest.json");
                let s = std::fs::read_to_string(&p).unwrap().replacen(
                    "\"format_version\": 1",
                    "\"format_version\": 2",
                    1,
                );
                std::fs::write(p, s).unwrap();
            },
            "format version 2",
        ),
    ];
    for (name, break_it, expect) in cases {
        let d = tmp.path().join(name);
        copy_dir(&root().join("models/default"), &d);
        break_it(&d);
        let out = onboard(&[
            "prioritize",
            "testdata/pass",
            "--model",
            d.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{name}: should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(expect),
            "{name}: stderr lacks {expect:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{name}: printed a plan");
    }
}

#[test]
fn every_precision_triages_the_fixtures_and_a_missing_one_is_a_clear_error() {
    // Under an emulator, the first 8 fixtures (two of each scene kind).
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures(tmp.path(), 8);
    let dir_arg = dir.to_str().unwrap();
    let fixtures = std::fs::read_dir(&dir).unwrap().count();
    let mut classes = Vec::new();
    for p in ["f32", "int8", "int8-weights"] {
        let doc = json(&onboard(&[
            "prioritize",
            dir_arg,
            "--precision",
            p,
            "--json",
        ]));
        assert_eq!(doc["precision"], p);
        let plan = doc["plan"].as_array().unwrap();
        assert_eq!(plan.len(), fixtures, "{p}");
        let mut by_file: Vec<(String, String)> = plan
            .iter()
            .map(|e| {
                (
                    e["file"].as_str().unwrap().to_string(),
                    e["class"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        by_file.sort();
        classes.push(by_file);
    }
    let same = |a: &[(String, String)], b: &[(String, String)]| {
        a.iter().zip(b).filter(|(x, y)| x == y).count()
    };
    for (k, other) in classes.iter().enumerate().skip(1) {
        assert!(
            same(&classes[0], other) * 10 >= fixtures * 8,
            "precision {k} classifies most fixtures as f32 does: {other:?} vs {:?}",
            classes[0]
        );
    }

    let d = tmp.path().join("f32-only");
    copy_dir(&root().join("models/default"), &d);
    let p = d.join("manifest.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["graphs"]
        .as_array_mut()
        .unwrap()
        .retain(|g| g["precision"] == "f32");
    v["default_precision"] = "f32".into();
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let model = d.to_str().unwrap();
    let out = onboard(&[
        "prioritize",
        dir_arg,
        "--model",
        model,
        "--precision",
        "int8",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no int8 graphs (this bundle carries: f32)"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let doc = json(&onboard(&[
        "prioritize",
        dir_arg,
        "--model",
        model,
        "--json",
    ]));
    assert_eq!(doc["precision"], "f32");
}

#[test]
fn eval_with_no_readable_image_is_an_error_not_a_perfect_score() {
    let tmp = tempfile::tempdir().unwrap();
    let labels = tmp.path().join("labels.txt");
    std::fs::write(&labels, "calibrated/a.JPG 0\ncalibrated/b.JPG 1\n").unwrap();
    let out = onboard(&[
        "eval",
        "--data",
        "/nonexistent",
        "--labels",
        labels.to_str().unwrap(),
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("none of its 2 images could be analysed"),
        "{err}"
    );
    assert!(err.contains("--data /nonexistent"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn eval_on_real_validation_images() {
    let Some(data) = std::env::var_os("MSL_DATA") else {
        eprintln!("MSL_DATA not set: skipping the real-data eval");
        return;
    };
    let data = PathBuf::from(data);
    let labels = std::fs::read_to_string(data.join("val-calibrated-shuffled.txt"))
        .unwrap_or_else(|e| panic!("MSL_DATA={} is set but unreadable: {e}", data.display()));
    let n = scaled(100, 16);
    let tmp = tempfile::tempdir().unwrap();
    let subset = tmp.path().join("val-subset.txt");
    std::fs::write(
        &subset,
        labels.lines().take(n).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    // As shipped, and adapting to the stream in the file's order.
    for adapt in ["off", "on"] {
        let doc = json(&onboard(&[
            "eval",
            "--data",
            data.to_str().unwrap(),
            "--labels",
            subset.to_str().unwrap(),
            "--adapt",
            adapt,
            "--json",
        ]));
        assert_eq!(doc["adapt"], adapt);
        assert_eq!(doc["images"], n);
        assert_eq!(doc["skipped"], 0);
        for key in [
            "top1",
            "macro_f1",
            "balanced_accuracy",
            "cluster_hungarian_acc",
            "cluster_majority_acc",
            "nmi",
        ] {
            let v = doc[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{adapt}: {key} = {v}");
        }
        assert!(doc["ari"].as_f64().unwrap() <= 1.0);
        assert!(doc["per_class_recall"]
            .as_object()
            .unwrap()
            .contains_key("ground"));
        // The committed bundle must do far better than chance on real images.
        assert!(
            doc["top1"].as_f64().unwrap() > 0.5,
            "{adapt}: top1 {}",
            doc["top1"]
        );
    }
}

#[test]
fn downlink_bench_on_real_validation_images() {
    let Some(data) = std::env::var_os("MSL_DATA") else {
        eprintln!("MSL_DATA not set: skipping the real-data downlink benchmark");
        return;
    };
    let data = PathBuf::from(data);
    let labels = std::fs::read_to_string(data.join("val-calibrated-shuffled.txt"))
        .unwrap_or_else(|e| panic!("MSL_DATA={} is set but unreadable: {e}", data.display()));
    let mut lines: Vec<&str> = labels.lines().collect();
    lines.sort_unstable();
    // Four passes, in sol order.
    let pass = scaled(100, 20);
    let tmp = tempfile::tempdir().unwrap();
    let subset = tmp.path().join("val-chrono.txt");
    std::fs::write(&subset, lines[..4 * pass].join("\n")).unwrap();
    let pass_images = pass.to_string();
    let doc = json(&onboard(&[
        "downlink-bench",
        "--data",
        data.to_str().unwrap(),
        "--labels",
        subset.to_str().unwrap(),
        "--values",
        "configs/values.toml",
        "--pass-images",
        &pass_images,
        "--budget-fraction",
        "0.15",
        "--json",
    ]));
    assert_eq!(doc["items"], 4 * pass);
    assert_eq!(doc["passes"], 4);
    // The bundle's manifest turns adaptation on unless --adapt off.
    assert_eq!(doc["adapt"], "on");
    let ratio = |p: &str| doc["policies"][p]["value_ratio"].as_f64().unwrap();
    assert_eq!(ratio("oracle"), 1.0);
    for p in ["onboard", "fifo", "random"] {
        assert!(
            ratio(p) > 0.0 && ratio(p) <= 1.0 + 1e-9,
            "{p}: {}",
            ratio(p)
        );
    }
    assert!(
        ratio("onboard") > ratio("fifo"),
        "onboard {} <= fifo {}",
        ratio("onboard"),
        ratio("fifo")
    );
}

#[test]
fn prioritize_json_explains_decisions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures(tmp.path(), 12);
    let doc = json(&onboard(&[
        "prioritize",
        dir.to_str().unwrap(),
        "--budget-bytes",
        "20000",
        "--values",
        "configs/values.toml",
        "--json",
    ]));
    let plan = doc["plan"].as_array().unwrap();
    let first = &plan[0];
    assert_eq!(first["selected"], true);
    assert_eq!(first["reason"], "selected #1");
    assert!(first["parts"]["expected_class_value"].as_f64().unwrap() > 0.0);
    assert!(plan
        .iter()
        .any(|r| r["reason"] == "no room left in the budget"));
}

#[test]
fn prioritize_writes_a_contact_sheet_of_the_selection() {
    let tmp = tempfile::tempdir().unwrap();
    let sheet = tmp.path().join("plan.png");
    let dir = fixtures(tmp.path(), 12);
    let doc = json(&onboard(&[
        "prioritize",
        dir.to_str().unwrap(),
        "--budget-bytes",
        "30000",
        "--json",
        "--sheet",
        sheet.to_str().unwrap(),
    ]));
    let n_sel = doc["plan"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["selected"] == true)
        .count();
    let img = image::open(&sheet).expect("sheet is a PNG").to_rgb8();
    let rows = n_sel.div_ceil(6) as u32;
    assert!(
        img.width() >= 6 * 128 && img.height() >= 24 + rows * 128,
        "{}x{}",
        img.width(),
        img.height()
    );
}

#[test]
fn bad_corpus_is_skipped_with_reasons_and_the_pass_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&root().join("testdata/bad"), tmp.path());
    std::fs::remove_file(tmp.path().join("README.md")).unwrap();
    std::os::unix::fs::symlink(
        "/nonexistent/target.JPG",
        tmp.path().join("broken_link.JPG"),
    )
    .unwrap();
    std::os::unix::fs::symlink("loop.JPG", tmp.path().join("loop.JPG")).unwrap();
    let out = onboard(&["prioritize", tmp.path().to_str().unwrap(), "--json"]);
    let doc = json(&out);
    let planned: Vec<&str> = doc["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["file"].as_str().unwrap())
        .collect();
    let mut planned_sorted = planned.clone();
    planned_sorted.sort_unstable();
    assert_eq!(
        planned_sorted,
        ["cmyk.JPG", "grayscale.JPG", "sixteen_bit.png"]
    );
    let skipped: std::collections::BTreeMap<&str, &str> = doc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["file"].as_str().unwrap(), s["reason"].as_str().unwrap()))
        .collect();
    let expect = [
        ("zero_bytes.JPG", "empty file"),
        ("truncated.JPG", "truncated JPEG"),
        ("png_named.JPG", "content is PNG but the name says JPEG"),
        ("gif_named.JPG", "content is GIF but the name says JPEG"),
        ("text_named.JPG", "format could not be determined"),
        ("one_pixel.JPG", "below the 8x8 minimum"),
        (
            "huge_header.JPG",
            "20000x20000 pixels, beyond the limits (8192 per side, 24000000 in all); not decoded",
        ),
        ("broken_link.JPG", "cannot read"),
        ("loop.JPG", "cannot read"),
    ];
    assert_eq!(skipped.len(), expect.len(), "{skipped:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    for (file, reason) in expect {
        let got = skipped
            .get(file)
            .unwrap_or_else(|| panic!("{file} not skipped"));
        assert!(got.contains(reason), "{file}: {got:?} lacks {reason:?}");
        assert!(
            log.contains(&format!("{file}: ")),
            "{file}: no logged skip in {log}"
        );
    }
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
    let mut other = argv(&args);
    other.extend(["--precision", "int8"]);
    let out = onboard(&other);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot resume the stream adaptation: it belongs to model f32:"),
        "{err}"
    );
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
fn bench_reports_stages_and_an_allocation_free_core() {
    // Even when the environment asks tract for its AMX kernels, the project keeps them out
    // (onboard::tract_isa), and the report says what tract dispatched on. (AMX is x86-64's:
    // tract rejects the request elsewhere.)
    let mut cmd = onboard_cmd();
    if cfg!(target_arch = "x86_64") {
        cmd.env("TRACT_CPU_ISA", "+amx-int8,+amx-bf16");
    }
    let out = cmd
        .args([
            "bench",
            "--data",
            "testdata/pass",
            "--limit",
            "12",
            "--profile",
            "--json",
        ])
        .output()
        .unwrap();
    let doc = json(&out);
    let isa = doc["tract_isa"].as_str().unwrap();
    assert!(!isa.is_empty() && !isa.contains("amx"), "{isa}");
    assert_eq!(doc["images"], 12);
    // The encoder's depthwise convolutions run on the project's own kernel.
    let profile = doc["encoder_profile"].as_object().unwrap();
    assert!(profile.contains_key("DepthwiseF32"), "{profile:?}");
    assert!(!profile.contains_key("DepthWiseConv"), "{profile:?}");
    let shares: f64 = profile.values().map(|v| v["share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-6, "{shares}");
    assert_eq!(doc["core_heap_allocs_per_image"].as_f64().unwrap(), 0.0);
    // Stream adaptation allocates nothing per image either.
    assert_eq!(doc["adapt_heap_allocs_per_image"].as_f64().unwrap(), 0.0);
    assert!(doc["ms_per_image"]["adapt"].as_f64().unwrap() > 0.0);
    assert!(doc["runtime_heap_allocs_per_image"].as_f64().unwrap() > 0.0);
    let ms = &doc["ms_per_image"];
    for stage in ["decode_preprocess", "encoder", "classifier", "total"] {
        assert!(ms[stage].as_f64().unwrap() > 0.0, "{stage}: {}", ms[stage]);
    }
    assert!(ms["total"].as_f64().unwrap() >= ms["encoder"].as_f64().unwrap());
    assert!(doc["peak_rss_kib"].as_u64().unwrap() > 0);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
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
    copy_tree(&root().join("models/default"), &model);
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
