//! Training data: the MSL layout (`calibrated/`, split files, synset file) and plain image
//! folders, decoded with the onboard preprocessing so host and board see identical inputs.

use std::path::{Path, PathBuf};

use anyhow::Context;
use onboard::bundle::InputSpec;
use onboard::labels::{read_labels, read_synset};
use tch::Tensor;

/// File names of the MSL layout inside the dataset root.
pub const SYNSET_FILE: &str = "msl_synset_words-indexed.txt";
/// Training split file.
pub const TRAIN_SPLIT: &str = "train-calibrated-shuffled.txt";
/// Validation split file.
pub const VAL_SPLIT: &str = "val-calibrated-shuffled.txt";

/// Decoded images of one split.
#[derive(Debug)]
pub struct ImageSet {
    /// Image paths, in load order.
    pub paths: Vec<PathBuf>,
    /// Class ids (`-1` for unlabeled images), one per path.
    pub labels: Vec<i64>,
    /// Images `[n, 3, size, size]` f32 on the CPU, normalized per the input spec.
    pub images: Tensor,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Labels as `usize` (only meaningful for labeled sets).
    pub fn labels_usize(&self) -> Vec<usize> {
        self.labels.iter().map(|&l| l.max(0) as usize).collect()
    }
}

/// Class names of the dataset in id order.
pub fn class_names(root: &Path) -> anyhow::Result<Vec<String>> {
    read_synset(&root.join(SYNSET_FILE)).with_context(|| {
        format!(
            "{}: not an MSL dataset root (needs {SYNSET_FILE})",
            root.display()
        )
    })
}

/// Loads the labeled split `split` (relative to `root`), keeping at most `limit` items in file
/// order. Unreadable images are skipped with a logged reason.
pub fn load_split(
    root: &Path,
    split: &str,
    spec: &InputSpec,
    limit: Option<usize>,
    n_classes: usize,
) -> anyhow::Result<ImageSet> {
    let path = root.join(split);
    let mut items = read_labels(&path)?;
    if let Some(l) = limit {
        items.truncate(l);
    }
    for it in &items {
        anyhow::ensure!(
            it.class < n_classes,
            "{}: class id {} of {} exceeds the synset's {n_classes} classes",
            path.display(),
            it.class,
            it.file
        );
    }
    let paths: Vec<PathBuf> = items.iter().map(|i| root.join(&i.file)).collect();
    let labels: Vec<i64> = items.iter().map(|i| i.class as i64).collect();
    load_images(paths, labels, spec, split)
}

/// Image files (any decodable format) directly inside `dir`, sorted.
pub fn list_images(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list the unlabeled image folder", dir.display()))?
    {
        let p = e?.path();
        if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Loads an unlabeled image folder.
pub fn load_folder(dir: &Path, spec: &InputSpec, limit: Option<usize>) -> anyhow::Result<ImageSet> {
    let mut paths = list_images(dir)?;
    if let Some(l) = limit {
        paths.truncate(l);
    }
    let labels = vec![-1; paths.len()];
    load_images(paths, labels, spec, &dir.display().to_string())
}

/// Decodes `paths` on all available cores; skipped images are dropped with their labels.
pub fn load_images(
    paths: Vec<PathBuf>,
    labels: Vec<i64>,
    spec: &InputSpec,
    what: &str,
) -> anyhow::Result<ImageSet> {
    let per = 3 * spec.width as usize * spec.height as usize;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let bar = crate::progress::bar(paths.len() as u64, "decode");
    bar.set_message(what.to_string());
    let chunk = paths.len().div_ceil(threads).max(1);
    let results: Vec<Vec<Option<Vec<f32>>>> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                let bar = bar.clone();
                s.spawn(move || {
                    part.iter()
                        .map(|p| {
                            bar.inc(1);
                            match onboard::preprocess::load_tensor(p, spec) {
                                Ok(t) => Some(t),
                                Err(e) => {
                                    bar.suspend(|| eprintln!("skip {}: {e}", p.display()));
                                    None
                                }
                            }
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    bar.finish_and_clear();
    let mut flat = Vec::with_capacity(paths.len() * per);
    let (mut kept_paths, mut kept_labels) = (Vec::new(), Vec::new());
    for ((p, l), r) in paths
        .into_iter()
        .zip(labels)
        .zip(results.into_iter().flatten())
    {
        if let Some(t) = r {
            flat.extend_from_slice(&t);
            kept_paths.push(p);
            kept_labels.push(l);
        }
    }
    anyhow::ensure!(!kept_paths.is_empty(), "{what}: no decodable images");
    let n = kept_paths.len() as i64;
    let images = Tensor::from_slice(&flat).view([n, 3, spec.height as i64, spec.width as i64]);
    Ok(ImageSet {
        paths: kept_paths,
        labels: kept_labels,
        images,
    })
}

/// Loads several labeled split files (as [`load_split`]) into one set, in the given order.
pub fn load_splits(
    root: &Path,
    splits: &[String],
    spec: &InputSpec,
    limit: Option<usize>,
    n_classes: usize,
) -> anyhow::Result<ImageSet> {
    let mut sets = Vec::new();
    for split in splits {
        sets.push(load_split(root, split, spec, limit, n_classes)?);
    }
    anyhow::ensure!(!sets.is_empty(), "no training split given");
    Ok(concat(sets))
}

/// The training splits (as [`load_splits`]) and, when given, the validation split (as
/// [`load_split`]), each keeping at most `limit` items per split file.
pub fn load_train_val(
    root: &Path,
    train_splits: &[String],
    val_split: Option<&str>,
    spec: &InputSpec,
    limit: Option<usize>,
    n_classes: usize,
) -> anyhow::Result<(ImageSet, Option<ImageSet>)> {
    let train = load_splits(root, train_splits, spec, limit, n_classes)?;
    let val = val_split
        .map(|v| load_split(root, v, spec, limit, n_classes))
        .transpose()?;
    Ok((train, val))
}

impl ImageSet {
    /// Splits off every `every`-th image (indices `every - 1`, `2 every - 1`, ...): `(kept,
    /// held out)`. `every` must be at least 2.
    pub fn split_every(self, every: usize) -> (ImageSet, ImageSet) {
        let every = every.max(2);
        let (held, kept): (Vec<usize>, Vec<usize>) =
            (0..self.len()).partition(|i| i % every == every - 1);
        let take = |rows: &[usize]| {
            let idx = Tensor::from_slice(&rows.iter().map(|&i| i as i64).collect::<Vec<_>>());
            ImageSet {
                paths: rows.iter().map(|&i| self.paths[i].clone()).collect(),
                labels: rows.iter().map(|&i| self.labels[i]).collect(),
                images: self.images.index_select(0, &idx),
            }
        };
        (take(&kept), take(&held))
    }
}

/// Concatenates image sets (e.g. several unlabeled sources).
pub fn concat(sets: Vec<ImageSet>) -> ImageSet {
    let images = Tensor::cat(&sets.iter().map(|s| &s.images).collect::<Vec<_>>(), 0);
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for s in sets {
        paths.extend(s.paths);
        labels.extend(s.labels);
    }
    ImageSet {
        paths,
        labels,
        images,
    }
}

/// Input spec for a square input of side `n`.
pub fn input_spec(n: u32) -> InputSpec {
    InputSpec {
        width: n,
        height: n,
        channel_order: "rgb".into(),
        resize: "triangle".into(),
        mean: [127.0; 3],
        std: [128.0; 3],
    }
}
