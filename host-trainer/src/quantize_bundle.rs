//! `host-trainer quantize`: adds the int8 precisions to a bundle's f32 graphs (static
//! calibration on real images, [`crate::quantize`]), measures every precision on a validation
//! split, picks the default precision, and rewrites the bundle atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use onboard::bundle::{sha256_hex, Bundle, GraphEntry, GraphInput, GraphRole, Precision};
use onboard::metrics;
use onboard::pipeline::Analyzer;
use onboard::runtime::Graph;
use prost::Message;
use serde::{Deserialize, Serialize};
use tract_onnx::pb;

use crate::bundle_writer::Staging;
use crate::calibrate::{calibrate, Ranges};
use crate::{data, quantize};

/// Post-training quantization settings, saved in the bundle's provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizeConfig {
    /// Split file (relative to the dataset root) whose first `calibration_images` images
    /// calibrate the activation ranges (split files are already shuffled).
    pub calibration_split: String,
    /// Number of calibration images.
    pub calibration_images: usize,
    /// Largest top-1 drop from f32 (fraction) a precision may show on the validation split and
    /// still be chosen as the default.
    pub max_top1_drop: f64,
    /// Whether the int8 precision also quantizes the classifier (`MatMulInteger`). Off: the
    /// int8 precision runs the f32 classifier graph after the int8 encoder (one linear layer,
    /// a negligible share of the time). On the development protocol the integer classifier's
    /// probabilities put the adapted stream 0.75 points of macro-F1 below f32, the f32 one 0.34
    /// above (docs/RESULTS.md, "Int8 on the development protocol").
    #[serde(default)]
    pub int8_classifier: bool,
}

impl Default for QuantizeConfig {
    fn default() -> Self {
        Self {
            calibration_split: data::TRAIN_SPLIT.to_string(),
            calibration_images: 256,
            max_top1_drop: 0.005,
            int8_classifier: false,
        }
    }
}

/// What to quantize and how.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// Bundle folder (rewritten in place, atomically).
    pub bundle: PathBuf,
    /// MSL dataset root.
    pub data: PathBuf,
    /// Validation split relative to `data`, or none.
    pub val_split: Option<String>,
    /// Default precision to record; `None` picks it from the validation measurements (fastest
    /// within `max_top1_drop` of f32), or keeps the bundle's when there is no validation.
    pub default_precision: Option<Precision>,
    /// Settings.
    pub config: QuantizeConfig,
}

/// Validation measurements of one precision, every image through the onboard pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecisionMetrics {
    /// Images scored.
    pub images: usize,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Macro-averaged F1.
    pub macro_f1: f64,
    /// Hungarian-matched cluster accuracy.
    pub cluster_hungarian_acc: f64,
    /// Normalized mutual information of clusters and classes.
    pub nmi: f64,
    /// Fraction of images whose predicted class equals the f32 graphs' prediction.
    pub class_agreement_with_f32: f64,
    /// Fraction of images whose nearest cluster equals the f32 graphs' cluster.
    pub cluster_agreement_with_f32: f64,
    /// Median encoder + classifier time per image, milliseconds (one thread, decode excluded),
    /// over the first 200 validation images with the precisions interleaved image by image.
    pub ms_per_image: f64,
}

/// One precision of the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecisionReport {
    /// Precision.
    pub precision: Precision,
    /// Encoder file size, bytes.
    pub encoder_bytes: u64,
    /// Classifier file size, bytes.
    pub classifier_bytes: u64,
    /// tract's optimized encoder: `"op -> output type"` -> count.
    pub encoder_kernels: BTreeMap<String, usize>,
    /// Validation measurements, when a validation split was given.
    pub validation: Option<PrecisionMetrics>,
}

/// What `host-trainer quantize` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizeReport {
    /// Bundle folder.
    pub bundle: String,
    /// Settings used.
    pub config: QuantizeConfig,
    /// Calibration images actually decoded.
    pub calibration_images: usize,
    /// Validation split, if any.
    pub validation_split: Option<String>,
    /// Every precision, f32 first.
    pub precisions: Vec<PrecisionReport>,
    /// The default precision recorded in the manifest.
    pub default_precision: Precision,
    /// How it was chosen.
    pub default_rule: String,
}

fn read_model(path: &Path) -> anyhow::Result<pb::ModelProto> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    pb::ModelProto::decode(bytes.as_slice())
        .with_context(|| format!("{}: not an ONNX model", path.display()))
}

/// The graph of `path` for input `shape` as the onboard runtime runs it on this CPU (tract's
/// optimized graph with the project's convolution kernels swapped in,
/// `onboard::runtime::optimized_model`): `"op -> output type"` -> number of nodes
/// (`OptMatMul -> I32` is an integer GEMM).
pub fn kernel_summary(path: &Path, shape: &[usize]) -> anyhow::Result<BTreeMap<String, usize>> {
    let options = onboard::runtime::LoadOptions::default();
    let (model, _) = onboard::runtime::optimized_model(path, shape, options)?;
    let mut ops = BTreeMap::new();
    for n in model.nodes() {
        let dt = n
            .outputs
            .first()
            .map(|o| format!("{:?}", o.fact.datum_type))
            .unwrap_or_default();
        *ops.entry(format!("{} -> {dt}", n.op().name())).or_insert(0) += 1;
    }
    Ok(ops)
}

/// Calibration ranges of the bundle's f32 `role` graph on `images` (`[3, h, w]` each); a
/// graph reading the latent is calibrated on the f32 encoder's outputs.
fn ranges_for(
    bundle: &Bundle,
    role: GraphRole,
    model: &pb::ModelProto,
    images: &[Vec<f32>],
) -> anyhow::Result<Ranges> {
    let (entry, _) = bundle.graph_at(role, Precision::F32)?;
    let shape = bundle.manifest.input_shape(entry);
    match entry.input {
        GraphInput::Image => calibrate(model, &shape, images.iter().map(Vec::as_slice)),
        GraphInput::Latent => {
            let mut enc = Graph::load_at(bundle, GraphRole::Encoder, Precision::F32)?;
            let mut latents = Vec::with_capacity(images.len());
            for x in images {
                let mut z = vec![0f32; bundle.manifest.latent_dim];
                enc.run_into(x, &mut z)?;
                latents.push(z);
            }
            calibrate(model, &shape, latents.iter().map(Vec::as_slice))
        }
    }
}

/// Runs the bundle at `precision` over `images`; returns predicted classes and clusters.
fn predict(
    bundle: &Bundle,
    precision: Precision,
    images: &[Vec<f32>],
) -> anyhow::Result<(Vec<usize>, Vec<usize>)> {
    let mut a = Analyzer::with_precision(bundle.clone(), precision)?;
    let (mut classes, mut clusters) = (Vec::new(), Vec::new());
    for x in images {
        anyhow::ensure!(
            a.set_input(x),
            "image tensor size differs from the bundle input"
        );
        a.encode()?;
        a.run_classifier()?;
        clusters.push(a.place()?.cluster);
        classes.push(a.softmax()?.0);
    }
    Ok((classes, clusters))
}

/// Images [`time_precisions`] times each precision on.
const TIMED_IMAGES: usize = 200;

/// Median milliseconds per image of encoder + classifier at each of `precisions`, over the
/// first [`TIMED_IMAGES`] of `images`, the precisions interleaved image by image (their order
/// rotating) so that a change in the machine's load hits every precision alike.
fn time_precisions(
    bundle: &Bundle,
    precisions: &[Precision],
    images: &[Vec<f32>],
) -> anyhow::Result<Vec<f64>> {
    let mut analyzers = precisions
        .iter()
        .map(|&p| Analyzer::with_precision(bundle.clone(), p))
        .collect::<Result<Vec<_>, _>>()?;
    let n = analyzers.len();
    let mut times = vec![Vec::new(); n];
    for (i, x) in images.iter().take(TIMED_IMAGES).enumerate() {
        for j in 0..n {
            let k = (i + j) % n;
            let a = &mut analyzers[k];
            anyhow::ensure!(
                a.set_input(x),
                "image tensor size differs from the bundle input"
            );
            let t = Instant::now();
            a.encode()?;
            a.run_classifier()?;
            times[k].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        })
        .collect())
}

fn agreement(a: &[usize], b: &[usize]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

fn tensors(set: &data::ImageSet) -> anyhow::Result<Vec<Vec<f32>>> {
    let per = set.images.size()[1..].iter().product::<i64>() as usize;
    let flat = Vec::<f32>::try_from(set.images.flatten(0, -1))?;
    Ok(flat.chunks(per).map(<[f32]>::to_vec).collect())
}

/// Quantizes the bundle at `opts.bundle` (see the module docs) and returns the report.
pub fn run(opts: &QuantizeOptions) -> anyhow::Result<QuantizeReport> {
    let bundle = Bundle::load(&opts.bundle)
        .with_context(|| format!("loading model bundle {}", opts.bundle.display()))?;
    let spec = bundle.manifest.input.clone();
    let calib = data::load_split(
        &opts.data,
        &opts.config.calibration_split,
        &spec,
        Some(opts.config.calibration_images),
        bundle.manifest.classes.len(),
    )?;
    let calib_images = tensors(&calib)?;
    let staging = Staging::new(&opts.bundle)?;
    for entry in std::fs::read_dir(&opts.bundle)
        .with_context(|| format!("{}: cannot list", opts.bundle.display()))?
    {
        let p = entry?.path();
        if p.is_file() {
            let to = staging.dir.join(p.file_name().unwrap_or_default());
            std::fs::copy(&p, &to).with_context(|| {
                format!(
                    "{}: cannot copy into {} (disk full?)",
                    p.display(),
                    to.display()
                )
            })?;
        }
    }
    let mut manifest = bundle.manifest.clone();
    manifest.graphs.retain(|g| g.precision == Precision::F32);
    for g in bundle.manifest.graphs.iter().filter(|g| {
        // A quantized precision may name an f32 graph's file (the classifier kept in f32).
        g.precision != Precision::F32 && !manifest.graphs.iter().any(|f| f.file == g.file)
    }) {
        let _ = std::fs::remove_file(staging.dir.join(&g.file));
    }
    for role in [GraphRole::Encoder, GraphRole::Classifier] {
        let (f32_entry, path) = bundle.graph_at(role, Precision::F32)?;
        let f32_entry = f32_entry.clone();
        let model = read_model(&path)?;
        let integer = role == GraphRole::Encoder || opts.config.int8_classifier;
        let ranges = if integer {
            Some(
                ranges_for(&bundle, role, &model, &calib_images)
                    .with_context(|| format!("{}: calibration", path.display()))?,
            )
        } else {
            // The int8 precision runs this role's f32 graph.
            manifest.graphs.push(GraphEntry {
                precision: Precision::Int8,
                ..f32_entry.clone()
            });
            None
        };
        let integer_graph = ranges.map(|r| (Precision::Int8, quantize::integer(&model, &r)));
        let weights_graph = (Precision::Int8Weights, quantize::weights_only(&model));
        for (precision, q) in integer_graph.into_iter().chain([weights_graph]) {
            let q = q.with_context(|| format!("{}: quantizing to {precision}", path.display()))?;
            let bytes = q.encode_to_vec();
            let stem = f32_entry
                .file
                .trim_end_matches(".f32.onnx")
                .trim_end_matches(".onnx");
            let file = format!("{stem}.{precision}.onnx");
            let out = staging.dir.join(&file);
            onboard::bundle::write_atomic(&out, &bytes)
                .with_context(|| format!("{}: cannot write (disk full?)", out.display()))?;
            manifest.graphs.push(GraphEntry {
                file,
                sha256: sha256_hex(&bytes),
                precision,
                ..f32_entry.clone()
            });
        }
    }
    manifest.provenance.quantization = Some(serde_json::to_value(&opts.config)?);
    staging.write_manifest(&manifest)?;
    let staged = Bundle::load(&staging.dir).context("the quantized bundle does not load")?;
    let val = match &opts.val_split {
        Some(split) => Some(data::load_split(
            &opts.data,
            split,
            &spec,
            None,
            manifest.classes.len(),
        )?),
        None => None,
    };
    let val_images = val.as_ref().map(tensors).transpose()?;
    let val_in_training = opts
        .val_split
        .as_ref()
        .is_some_and(|v| bundle.manifest.provenance.train_splits.contains(v));
    let mut reports = Vec::new();
    let mut reference: Option<(Vec<usize>, Vec<usize>)> = None;
    let times = match &val_images {
        Some(images) => time_precisions(&staged, &Precision::ALL, images)?,
        None => Vec::new(),
    };
    for (index, precision) in Precision::ALL.into_iter().enumerate() {
        let (enc, enc_path) = staged.graph_at(GraphRole::Encoder, precision)?;
        let (_, cls_path) = staged.graph_at(GraphRole::Classifier, precision)?;
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let validation = match (&val, &val_images) {
            (Some(set), Some(images)) => {
                let (classes, clusters) = predict(&staged, precision, images)?;
                let truth = set.labels_usize();
                let (rc, rk) = reference.get_or_insert_with(|| (classes.clone(), clusters.clone()));
                let reports = metrics::class_reports(&truth, &classes, manifest.classes.len());
                Some(PrecisionMetrics {
                    images: truth.len(),
                    top1: metrics::accuracy(&truth, &classes),
                    macro_f1: metrics::macro_f1(&reports),
                    cluster_hungarian_acc: metrics::hungarian_accuracy(&truth, &clusters),
                    nmi: metrics::nmi(&truth, &clusters),
                    class_agreement_with_f32: agreement(rc, &classes),
                    cluster_agreement_with_f32: agreement(rk, &clusters),
                    ms_per_image: *times
                        .get(index)
                        .context("every precision is timed with the validation images")?,
                })
            }
            _ => None,
        };
        reports.push(PrecisionReport {
            precision,
            encoder_bytes: size(&enc_path),
            classifier_bytes: size(&cls_path),
            encoder_kernels: kernel_summary(&enc_path, &staged.manifest.input_shape(enc))?,
            validation,
        });
    }
    manifest.default_precision = opts.default_precision.unwrap_or_else(|| {
        choose_default(&reports, &opts.config, bundle.manifest.default_precision)
    });
    staging.write_manifest(&manifest)?;
    let report = QuantizeReport {
        bundle: opts.bundle.display().to_string(),
        config: opts.config.clone(),
        calibration_images: calib_images.len(),
        validation_split: opts.val_split.clone(),
        precisions: reports,
        default_precision: manifest.default_precision,
        default_rule: match (opts.default_precision, &opts.val_split) {
            (Some(_), _) => "set on the command line".into(),
            (None, Some(_)) => format!(
                "of the precisions within {:.1} points of f32 validation top-1 and within 10% of the fastest, the most accurate, a tie going to the less quantized",
                100.0 * opts.config.max_top1_drop
            ),
            (None, None) => "kept from the bundle (no validation split to measure)".into(),
        },
    };
    staging.write_text("quantization.json", &serde_json::to_string_pretty(&report)?)?;
    let card_path = staging.dir.join("MODEL_CARD.md");
    let card = std::fs::read_to_string(&card_path).unwrap_or_default();
    staging.write_text(
        "MODEL_CARD.md",
        &crate::report::with_precision_section(&card, &report, val_in_training),
    )?;
    staging.commit()?;
    Ok(report)
}

/// Among the measured precisions whose validation top-1 is within `max_top1_drop` of f32's,
/// those within 10% of the fastest; of these the most accurate, a tie going to the less
/// quantized (f32, then int8-weights, then int8: their speeds are already within 10%, and the
/// less quantized keeps more of the trained model). `fallback` when nothing was measured.
pub fn choose_default(
    reports: &[PrecisionReport],
    config: &QuantizeConfig,
    fallback: Precision,
) -> Precision {
    let f32_top1 = reports
        .iter()
        .find(|r| r.precision == Precision::F32)
        .and_then(|r| r.validation.as_ref())
        .map(|v| v.top1);
    let Some(base) = f32_top1 else {
        return fallback;
    };
    let eligible: Vec<_> = reports
        .iter()
        .filter_map(|r| r.validation.as_ref().map(|v| (r.precision, v)))
        .filter(|(_, v)| v.top1 >= base - config.max_top1_drop)
        .collect();
    let fastest = eligible
        .iter()
        .map(|(_, v)| v.ms_per_image)
        .fold(f64::INFINITY, f64::min);
    let quantized = |p: Precision| match p {
        Precision::F32 => 0,
        Precision::Int8Weights => 1,
        Precision::Int8 => 2,
    };
    eligible
        .into_iter()
        .filter(|(_, v)| v.ms_per_image <= 1.1 * fastest)
        .max_by(|a, b| (a.1.top1.total_cmp(&b.1.top1)).then(quantized(b.0).cmp(&quantized(a.0))))
        .map_or(fallback, |(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(precision: Precision, top1: f64, ms: f64) -> PrecisionReport {
        PrecisionReport {
            precision,
            encoder_bytes: 0,
            classifier_bytes: 0,
            encoder_kernels: BTreeMap::new(),
            validation: Some(PrecisionMetrics {
                images: 100,
                top1,
                macro_f1: top1,
                cluster_hungarian_acc: 0.5,
                nmi: 0.5,
                class_agreement_with_f32: 1.0,
                cluster_agreement_with_f32: 1.0,
                ms_per_image: ms,
            }),
        }
    }

    #[test]
    fn default_is_the_most_accurate_fast_enough_precision_ties_going_to_the_less_quantized() {
        let c = QuantizeConfig::default();
        let pick = |r: &[PrecisionReport]| choose_default(r, &c, Precision::Int8);
        use Precision::{Int8, Int8Weights, F32};
        // Equal accuracy, speeds within 10%: f32, whichever order and timing noise.
        let tie = [
            report(F32, 0.95, 2.01),
            report(Int8, 0.95, 1.0),
            report(Int8Weights, 0.95, 1.99),
        ];
        assert_eq!(pick(&tie[..1]), F32);
        assert_eq!(pick(&[tie[2].clone(), tie[0].clone()]), F32);
        // int8 is eligible on accuracy and much faster, so only it is within 10% of the fastest.
        assert_eq!(pick(&tie), Int8);
        // More accurate wins among the fast enough.
        let better = [report(F32, 0.95, 2.0), report(Int8Weights, 0.951, 2.1)];
        assert_eq!(pick(&better), Int8Weights);
        // Too slow: out, however accurate.
        let slow = [report(F32, 0.95, 2.5), report(Int8Weights, 0.948, 2.0)];
        assert_eq!(pick(&slow), Int8Weights);
        // Too inaccurate: out, however fast.
        let bad = [report(F32, 0.95, 2.0), report(Int8, 0.94, 0.5)];
        assert_eq!(pick(&bad), F32);
        // Nothing measured: the fallback.
        let unmeasured = PrecisionReport {
            validation: None,
            ..report(F32, 0.9, 1.0)
        };
        assert_eq!(pick(&[unmeasured]), Int8);
    }
}
