//! `onboard`: runs a model bundle over rover images and plans the downlink.

mod alloc_count;
mod bench;
mod downlink_bench;
mod eval;
#[cfg(feature = "ort")]
mod ort_side;
mod prioritize;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;

#[derive(Debug, Parser)]
#[command(
    name = "onboard",
    version,
    about = "Onboard image triage: cluster, classify and prioritize rover images for downlink"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Analyse every image in DIR and print the downlink plan, highest priority first.
    Prioritize(prioritize::Args),
    /// Evaluate the bundle on a labeled split; prints one JSON object on stdout.
    Eval(eval::Args),
    /// Score downlink policies (onboard, FIFO, random, oracle) on a labeled split.
    DownlinkBench(downlink_bench::Args),
    /// Time each pipeline stage per image and count heap allocations (core and runtime).
    Bench(bench::Args),
}

/// A labeled split: dataset root and labels file.
#[derive(Debug, clap::Args)]
pub struct SplitArgs {
    /// Dataset root; label paths are relative to it.
    #[arg(long)]
    pub data: PathBuf,
    /// Labels file: lines `calibrated/NAME.JPG CLASS_ID`, items in file order.
    #[arg(long)]
    pub labels: PathBuf,
}

/// Whether the run adapts to its own image stream (class prior and centroids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Adapt {
    /// Adapt (causally: each image uses the images before it and itself).
    On,
    /// Use the ground model as shipped.
    Off,
}

impl Adapt {
    /// `--adapt` if given, else the bundle manifest's `adaptation.default_on`.
    pub fn resolve(flag: Option<Adapt>, bundle: &onboard::bundle::Bundle) -> bool {
        match flag {
            Some(a) => a == Adapt::On,
            None => bundle.manifest.adaptation.default_on,
        }
    }
}

/// Default bundle folder, relative to the working directory.
pub const DEFAULT_MODEL: &str = "models/default";

/// Which bundle to run, at which precision.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Model bundle folder.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Graph precision (default: the bundle manifest's `default_precision`).
    #[arg(long, value_enum)]
    pub precision: Option<onboard::bundle::Precision>,
}

impl ModelArgs {
    /// The bundle folder (`--model`, else [`DEFAULT_MODEL`]).
    pub fn dir(&self) -> PathBuf {
        self.model
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL))
    }

    /// Loads the bundle and both graphs at the chosen precision, with the bundle folder named
    /// in every error.
    pub fn load(&self) -> anyhow::Result<onboard::pipeline::Analyzer> {
        use anyhow::Context;
        let dir = self.dir();
        let bundle = onboard::bundle::Bundle::load(&dir).with_context(|| {
            format!("loading model bundle {} (pass --model DIR)", dir.display())
        })?;
        let precision = self.precision.unwrap_or(bundle.manifest.default_precision);
        onboard::pipeline::Analyzer::with_precision(bundle, precision)
            .with_context(|| format!("loading the {precision} graphs of bundle {}", dir.display()))
    }
}

fn main() -> ExitCode {
    onboard::tract_isa::apply();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Prioritize(a) => prioritize::run(a),
        Command::Eval(a) => eval::run(a),
        Command::DownlinkBench(a) => downlink_bench::run(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
