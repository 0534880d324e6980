//! The `onboard` binary against the committed default bundle and the generated fixtures.
#![allow(clippy::unwrap_used)]

use std::path::Path;

mod common;
use common::*;

/// A bundle-breaking edit: name, how to break the copy, text the error must contain.
type Case<'a> = (&'a str, &'a dyn Fn(&Path), &'a str);

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
    let cases = [
        (
            "calibrated/a.JPG 0\ncalibrated/b.JPG 1\n",
            [
                "none of its 2 images could be analysed",
                "--data /nonexistent",
            ],
        ),
        ("", ["labels.txt: holds no labeled images", "split file"]),
    ];
    for (text, needles) in cases {
        std::fs::write(&labels, text).unwrap();
        let l = labels.to_str().unwrap();
        let out = onboard(&["eval", "--data", "/nonexistent", "--labels", l, "--json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(needles.iter().all(|n| err.contains(n)), "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn eval_on_real_validation_images() {
    let Some((data, labels)) = msl_split("val-calibrated-shuffled.txt", "the real-data eval")
    else {
        return;
    };
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
    let Some((data, labels)) = msl_split(
        "val-calibrated-shuffled.txt",
        "the real-data downlink benchmark",
    ) else {
        return;
    };
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
    // The encoder's depthwise convolutions run on the project's own kernel, f32 or integer
    // after the bundle's default precision, and none on tract's.
    let own = match doc["precision"].as_str().unwrap() {
        "f32" | "int8-weights" => "DepthwiseF32",
        "int8" => "DepthwiseQ8",
        other => panic!("unexpected precision {other}"),
    };
    let profile = doc["encoder_profile"].as_object().unwrap();
    assert!(profile.contains_key(own), "{own}: {profile:?}");
    for tract_op in ["DepthWiseConv", "QLinearConv", "ConvUnary", "Conv"] {
        assert!(!profile.contains_key(tract_op), "{tract_op}: {profile:?}");
    }
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

#[test]
fn bench_compares_two_precisions_in_one_alternating_pass() {
    let args = ["bench", "--data", "testdata/pass", "--limit", "3", "--json"];
    let mut with = args.to_vec();
    with.extend(["--precisions", "f32,int8-weights"]);
    let doc = json(&onboard(&with));
    let cmp = &doc["precision_comparison"];
    assert_eq!(cmp["images"], 3, "{cmp}");
    for p in ["f32", "int8-weights"] {
        assert!(
            cmp["precisions"][p]["model_ms"].as_f64().unwrap() > 0.0,
            "{cmp}"
        );
    }
    let ratio = cmp["int8_weights_vs_f32_ratio"].as_f64().unwrap();
    assert!(ratio.is_finite() && ratio > 0.0, "{cmp}");
    let mut one = args.to_vec();
    one.extend(["--precisions", "f32"]);
    let out = onboard(&one);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("takes two precisions"));
}

#[test]
fn the_demo_sample_is_training_split_images_byte_for_byte() {
    let Some((data, train)) = msl_split(
        "train-calibrated-shuffled.txt",
        "the demo sample's provenance check",
    ) else {
        return;
    };
    let train: std::collections::HashSet<&str> = train
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.strip_prefix("calibrated/"))
        .collect();
    let dir = root().join("testdata/msl-sample/images");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            train.contains(name.as_str()),
            "{name} is not a training-split image"
        );
        let ours = std::fs::read(dir.join(&name)).unwrap();
        let theirs = std::fs::read(data.join("calibrated").join(&name)).unwrap();
        assert!(ours == theirs, "{name} differs from the data set's file");
        n += 1;
    }
    assert!(
        (1..=40).contains(&n),
        "{n} images: the sample holds at most 40"
    );
}
