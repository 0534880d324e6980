//! Helpers shared by the `onboard` binary's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `onboard` binary as a command, run through `ONBOARD_TEST_RUNNER` (e.g.
/// `qemu-aarch64 -L DIR`) when that is set, as for cross-compiled test runs.
pub fn onboard_cmd() -> Command {
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
pub fn emulated() -> bool {
    std::env::var("ONBOARD_TEST_RUNNER").is_ok_and(|r| !r.trim().is_empty())
}

/// `native` natively, `emulated` under an emulator ([`emulated`]).
pub fn scaled(native: usize, emulated_n: usize) -> usize {
    if emulated() {
        emulated_n
    } else {
        native
    }
}

/// The fixture folder natively; under an emulator a copy of its first `n` images (by name: the
/// scene kinds take turns) in `tmp`.
pub fn fixtures(tmp: &Path, n: usize) -> PathBuf {
    if !emulated() {
        return root().join("testdata/pass");
    }
    copy_first_fixtures(tmp, n).0
}

/// A copy of the first `n` fixture images (by name) in `tmp/pass`; returns the folder and
/// every fixture's path, sorted.
pub fn copy_first_fixtures(tmp: &Path, n: usize) -> (PathBuf, Vec<PathBuf>) {
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

pub fn onboard(args: &[&str]) -> std::process::Output {
    onboard_cmd().args(args).output().expect("onboard runs")
}

pub fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "onboard failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `MSL_DATA` and the text of its split file `split`, or `None` (with a note that `what` is
/// skipped) when `MSL_DATA` is not set; a set but unreadable `MSL_DATA` fails the test.
pub fn msl_split(split: &str, what: &str) -> Option<(PathBuf, String)> {
    let Some(data) = std::env::var_os("MSL_DATA") else {
        eprintln!("MSL_DATA not set: skipping {what}");
        return None;
    };
    let data = PathBuf::from(data);
    let text = std::fs::read_to_string(data.join(split))
        .unwrap_or_else(|e| panic!("MSL_DATA={} is set but unreadable: {e}", data.display()));
    Some((data, text))
}
