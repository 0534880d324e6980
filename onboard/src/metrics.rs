//! Evaluation metrics for classification and clustering against ground-truth labels.
//!
//! Labels and cluster ids are small non-negative integers; every function takes parallel
//! slices of equal length.

mod hungarian;

pub use hungarian::max_weight_assignment;

/// Contingency table `table[a][b]` = number of items with `a[i] == a` and `b[i] == b`.
pub fn contingency(a: &[usize], b: &[usize]) -> Vec<Vec<u64>> {
    let na = a.iter().max().map_or(0, |m| m + 1);
    let nb = b.iter().max().map_or(0, |m| m + 1);
    let mut t = vec![vec![0u64; nb]; na];
    for (&x, &y) in a.iter().zip(b) {
        t[x][y] += 1;
    }
    t
}

/// Fraction of items with `pred == truth`; 0 for no items.
pub fn accuracy(truth: &[usize], pred: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    let hits = truth.iter().zip(pred).filter(|(t, p)| t == p).count();
    hits as f64 / truth.len() as f64
}

/// Per-class precision, recall and F1 (classes `0..n_classes`), and support.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassReport {
    /// Class id.
    pub class: usize,
    /// Number of items whose truth is this class.
    pub support: u64,
    /// Number of items predicted as this class.
    pub predicted: u64,
    /// Recall (0 when support is 0).
    pub recall: f64,
    /// Precision (0 when nothing was predicted as this class).
    pub precision: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
}

/// Per-class reports for classes `0..n_classes`.
pub fn class_reports(truth: &[usize], pred: &[usize], n_classes: usize) -> Vec<ClassReport> {
    let mut tp = vec![0u64; n_classes];
    let mut support = vec![0u64; n_classes];
    let mut predicted = vec![0u64; n_classes];
    for (&t, &p) in truth.iter().zip(pred) {
        if t < n_classes {
            support[t] += 1;
        }
        if p < n_classes {
            predicted[p] += 1;
        }
        if t == p && t < n_classes {
            tp[t] += 1;
        }
    }
    (0..n_classes)
        .map(|c| {
            let ratio = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
            let recall = ratio(tp[c], support[c]);
            let precision = ratio(tp[c], predicted[c]);
            let f1 = if recall + precision == 0.0 {
                0.0
            } else {
                2.0 * recall * precision / (recall + precision)
            };
            ClassReport {
                class: c,
                support: support[c],
                predicted: predicted[c],
                recall,
                precision,
                f1,
            }
        })
        .collect()
}

/// Macro-averaged F1 over the classes that occur in the truth or the predictions (the
/// convention of scikit-learn's `f1_score(average="macro")`).
pub fn macro_f1(reports: &[ClassReport]) -> f64 {
    mean_or_zero(
        reports
            .iter()
            .filter(|r| r.support > 0 || r.predicted > 0)
            .map(|r| r.f1),
    )
}

/// Balanced accuracy: the mean recall over the classes present in the truth (accuracy under a
/// uniform class prior; scikit-learn's `balanced_accuracy_score`). 0 when the truth is empty.
pub fn balanced_accuracy(reports: &[ClassReport]) -> f64 {
    mean_or_zero(reports.iter().filter(|r| r.support > 0).map(|r| r.recall))
}

/// Mean of `values`, 0 when there are none.
fn mean_or_zero(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// Accuracy of the best one-to-one mapping of clusters to classes (Hungarian algorithm):
/// items in clusters left unmatched count as errors.
pub fn hungarian_accuracy(truth: &[usize], clusters: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    let table = contingency(clusters, truth);
    let (total, _) = max_weight_assignment(&table);
    total as f64 / truth.len() as f64
}

/// Accuracy when every cluster is labeled with its most frequent class (many-to-one).
pub fn majority_accuracy(truth: &[usize], clusters: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    let table = contingency(clusters, truth);
    let hits: u64 = table
        .iter()
        .map(|row| row.iter().copied().max().unwrap_or(0))
        .sum();
    hits as f64 / truth.len() as f64
}

/// Most frequent class of each cluster (`None` for clusters with no items).
pub fn cluster_majority_labels(
    truth: &[usize],
    clusters: &[usize],
    k: usize,
) -> Vec<Option<usize>> {
    let table = contingency(clusters, truth);
    (0..k)
        .map(|c| {
            let row = table.get(c)?;
            let (best, n) = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))?;
            (*n > 0).then_some(best)
        })
        .collect()
}

fn entropy(counts: impl Iterator<Item = u64>, n: f64) -> f64 {
    counts
        .filter(|&c| c > 0)
        .map(|c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

/// Normalized mutual information with the arithmetic-mean normalization
/// `I(U;V) / ((H(U) + H(V)) / 2)` (scikit-learn's default). 1 when both labelings are a single
/// identical partition.
pub fn nmi(truth: &[usize], clusters: &[usize]) -> f64 {
    let n = truth.len() as f64;
    if truth.is_empty() {
        return 0.0;
    }
    let t = contingency(truth, clusters);
    let rows: Vec<u64> = t.iter().map(|r| r.iter().sum()).collect();
    let cols: Vec<u64> = (0..t.first().map_or(0, |r| r.len()))
        .map(|j| t.iter().map(|r| r[j]).sum())
        .collect();
    let hu = entropy(rows.iter().copied(), n);
    let hv = entropy(cols.iter().copied(), n);
    let mut mi = 0.0;
    for (i, row) in t.iter().enumerate() {
        for (j, &nij) in row.iter().enumerate() {
            if nij > 0 {
                let nij = nij as f64;
                mi += nij / n * (n * nij / (rows[i] as f64 * cols[j] as f64)).ln();
            }
        }
    }
    let denom = (hu + hv) / 2.0;
    if denom <= 0.0 {
        1.0
    } else {
        (mi / denom).clamp(0.0, 1.0)
    }
}

fn comb2(x: u64) -> f64 {
    let x = x as f64;
    x * (x - 1.0) / 2.0
}

/// Adjusted Rand index (Hubert and Arabie). 1 for identical partitions, about 0 for random.
pub fn ari(truth: &[usize], clusters: &[usize]) -> f64 {
    let n = truth.len() as u64;
    if n < 2 {
        return 1.0;
    }
    let t = contingency(truth, clusters);
    let sum_ij: f64 = t.iter().flatten().map(|&v| comb2(v)).sum();
    let a: f64 = t.iter().map(|r| comb2(r.iter().sum())).sum();
    let ncols = t.first().map_or(0, |r| r.len());
    let b: f64 = (0..ncols)
        .map(|j| comb2(t.iter().map(|r| r[j]).sum()))
        .sum();
    let expected = a * b / comb2(n);
    let max = (a + b) / 2.0;
    if (max - expected).abs() < f64::EPSILON {
        return 1.0;
    }
    (sum_ij - expected) / (max - expected)
}

#[cfg(test)]
mod tests;
