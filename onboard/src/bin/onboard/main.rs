//! `onboard`: runs a model bundle over rover images and plans the downlink.

mod ack;
mod alloc_count;
mod bench;
mod downlink_bench;
mod eval;
#[cfg(feature = "ort")]
mod ort_side;
mod plan_output;
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
    /// Record in a journal that images reached the ground (idempotent).
    Ack(ack::Args),
}

/// A progress bar over `len` items on stderr, drawn only when stderr is a terminal (indicatif
/// hides it otherwise, so piped and scripted runs stay quiet).
pub fn progress_bar(len: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} images, {eta} left")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
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

/// `--adapt on|off` of the commands that analyse a stream of images.
#[derive(Debug, clap::Args)]
pub struct AdaptArgs {
    /// Adapt to the image stream (class prior, centroids) in the order the images come, each
    /// image using only the images before it and itself, as on the rover (default: the
    /// bundle's `adaptation.default_on`).
    #[arg(long, value_enum)]
    pub adapt: Option<Adapt>,
    /// Override the bundle's `adaptation.prior_window`: recent images the class-prior EM runs
    /// over (for measuring settings; a journal's state is tied to the settings it ran with).
    #[arg(long, value_name = "IMAGES")]
    pub prior_window: Option<usize>,
    /// Override the bundle's `adaptation.centroid_prior_count`: images each ground centroid
    /// counts as holding (the larger, the slower the centroids move).
    #[arg(long, value_name = "IMAGES")]
    pub centroid_prior_count: Option<f32>,
}

impl AdaptArgs {
    /// `--adapt` if given, else the bundle manifest's `adaptation.default_on`.
    pub fn on(&self, bundle: &onboard::bundle::Bundle) -> bool {
        match self.adapt {
            Some(a) => a == Adapt::On,
            None => bundle.manifest.adaptation.default_on,
        }
    }

    /// The ground adapter of `analyzer`'s bundle (its ground centroids and training prior),
    /// after the overrides of the adaptation settings are written into the loaded manifest;
    /// the bundle folder `model` is named in the error.
    pub fn ground(
        &self,
        analyzer: &mut onboard::pipeline::Analyzer,
        model: &std::path::Path,
    ) -> anyhow::Result<onboard::adapt::StreamAdapter> {
        use anyhow::Context;
        let a = &mut analyzer.bundle.manifest.adaptation;
        if let Some(w) = self.prior_window {
            a.prior_window = w;
        }
        if let Some(n) = self.centroid_prior_count {
            a.centroid_prior_count = n;
        }
        a.validate()
            .map_err(|e| anyhow::anyhow!("--prior-window/--centroid-prior-count: {e}"))?;
        onboard::adapt::StreamAdapter::new(&analyzer.bundle).with_context(|| {
            format!(
                "{}: cannot start the stream adaptation (fix the manifest's adaptation or calibration section, or pass --adapt off)",
                model.display()
            )
        })
    }

    /// Turns adaptation on (from the bundle's ground state) or off as resolved by
    /// [`Self::on`]; returns whether it is on.
    pub fn apply(
        &self,
        analyzer: &mut onboard::pipeline::Analyzer,
        model: &std::path::Path,
    ) -> anyhow::Result<bool> {
        let on = self.on(&analyzer.bundle);
        let adapter = if on {
            Some(self.ground(analyzer, model)?)
        } else {
            None
        };
        analyzer.set_adapter(adapter);
        Ok(on)
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
        Command::Ack(a) => ack::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
