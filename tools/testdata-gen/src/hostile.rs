//! Hostile inputs beside the images: journals (`journals/*.jsonl`) and science-value files
//! (`values/*.toml`) that are torn, corrupt, out of range or built to exhaust a parser. The
//! expected outcome of each is in `testdata/hostile/README.md` and checked by
//! `onboard/tests/hostile.rs`, natively and under qemu.

use std::path::Path;

use anyhow::Context;

/// A journal record of an image that could not be analysed.
fn skipped(file: &str) -> String {
    format!("{{\"status\":\"skipped\",\"file\":\"{file}\",\"reason\":\"empty file\"}}\n")
}

/// A journal record of an analysed image, `distance` written as given.
fn analysed(file: &str, distance: &str) -> String {
    format!(
        "{{\"status\":\"analysed\",\"file\":\"{file}\",\"bytes\":100,\"analysis\":{{\"latent\":[0.5],\
         \"cluster\":0,\"distance\":{distance},\"novelty\":0.0,\"class\":0,\"confidence\":1.0,\
         \"probs\":[1.0],\"quality\":{{\"blank\":false,\"overexposed\":false,\"dominant_channel\":false}}}}}}\n"
    )
}

/// The journals: (file name, bytes).
fn journals() -> Vec<(&'static str, Vec<u8>)> {
    let good = skipped("a.jpg") + &skipped("b.jpg");
    let mut invalid_utf8 = b"{\"status\":\"skipped\",\"file\":\"x".to_vec();
    invalid_utf8.extend(b"\xff\xfe\",\"reason\":\"r\"}\n");
    vec![
        ("empty.jsonl", Vec::new()),
        (
            "torn_tail.jsonl",
            format!("{good}{{\"status\":\"skipped\",\"fi").into_bytes(),
        ),
        (
            "corrupt_middle.jsonl",
            format!("{}garbage\n{}", skipped("a.jpg"), skipped("b.jpg")).into_bytes(),
        ),
        (
            "wrong_type.jsonl",
            b"{\"status\":\"skipped\",\"file\":7,\"reason\":\"r\"}\n".to_vec(),
        ),
        (
            "unknown_status.jsonl",
            b"{\"status\":\"exploded\",\"file\":\"a.jpg\"}\n".to_vec(),
        ),
        (
            "out_of_range.jsonl",
            analysed("a.jpg", "1e999").into_bytes(),
        ),
        ("invalid_utf8.jsonl", invalid_utf8),
        ("nul_bytes.jsonl", b"\0\0\0\0\n".to_vec()),
        ("blank_line.jsonl", format!("{good}\n").into_bytes()),
        ("deep_nesting.jsonl", {
            let mut v = vec![b'['; 100_000];
            v.push(b'\n');
            v
        }),
        (
            "non_utf8_name.jsonl",
            b"{\"status\":\"downlinked\",\"file\":{\"bytes\":[120,255,46,106,112,103]}}\n".to_vec(),
        ),
        ("legacy_records.jsonl", {
            // Records as written before stamps and model names: read, and redone.
            (analysed("000_ground.jpg", "0.25") + &analysed("gone.jpg", "0.5")).into_bytes()
        }),
    ]
}

/// The science-value files: (file name, text).
fn values() -> Vec<(&'static str, Vec<u8>)> {
    let deep = format!("a = {}1{}\n", "[".repeat(20_000), "]".repeat(20_000));
    vec![
        ("huge_value.toml", b"[values]\nground = 1e300\n".to_vec()),
        ("nan_value.toml", b"[values]\nground = nan\n".to_vec()),
        ("inf_value.toml", b"[values]\nground = inf\n".to_vec()),
        ("negative_value.toml", b"[values]\nground = -1.0\n".to_vec()),
        (
            "string_value.toml",
            b"[values]\nground = \"high\"\n".to_vec(),
        ),
        ("unknown_class.toml", b"[values]\nunicorn = 1.0\n".to_vec()),
        (
            "negative_factor.toml",
            b"[values]\n[planner]\nduplicate_factor = -1.0\n".to_vec(),
        ),
        (
            "huge_novelty.toml",
            b"[values]\n[planner]\nnovelty = 1e300\n".to_vec(),
        ),
        (
            "huge_window.toml",
            b"[values]\n[planner]\nduplicate_window = 99999999\n".to_vec(),
        ),
        (
            "unknown_setting.toml",
            b"[values]\n[planner]\nturbo = true\n".to_vec(),
        ),
        ("binary.toml", (0u8..=255).collect()),
        ("deep_nesting.toml", deep.into_bytes()),
    ]
}

/// Writes `journals/` and `values/` under `dir`; returns the paths written, relative to `dir`.
pub fn write_hostile(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for (sub, files) in [("journals", journals()), ("values", values())] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).with_context(|| format!("{}: cannot create", d.display()))?;
        for (name, bytes) in files {
            let path = d.join(name);
            std::fs::write(&path, bytes)
                .with_context(|| format!("{}: cannot write", path.display()))?;
            names.push(format!("{sub}/{name}"));
        }
    }
    Ok(names)
}
