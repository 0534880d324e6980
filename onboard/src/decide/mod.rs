//! Allocation-free decision core: nearest centroid, novelty, and budgeted downlink planning. Every function works on caller-owned slices; nothing here allocates.

mod centroid;
mod plan;
mod prior;
pub mod queue;

pub use centroid::{adapt_nearest, nearest_centroid, novelty, ClusterStats, Nearest};
pub use plan::{plan, Decision, Outcome, PlanItem, PlanWeights, MAX_CLASSES, MAX_CLUSTERS};
pub use prior::{PriorAdapter, PriorConfig, PriorStep};

/// Errors of the decision core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// A vector or table length does not match what the caller declared.
    #[error("length mismatch: expected {expected}, got {got}")]
    LengthMismatch {
        /// Length the contract requires.
        expected: usize,
        /// Length that was passed.
        got: usize,
    },
    /// An input held no entries where at least one is required.
    #[error("empty input")]
    Empty,
    /// More items than a fixed-capacity container holds.
    #[error("{got} items exceed the fixed capacity of {capacity}")]
    Capacity {
        /// The container's capacity.
        capacity: usize,
        /// Items offered.
        got: usize,
    },
    /// A value outside its contract (the text names which and the rule).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The fixed-capacity candidate queue was full; `item` (an index into the caller's list)
    /// was handed back unqueued.
    #[error("candidate queue full at its capacity of {capacity}; item {item} not queued")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
        /// The item that did not fit.
        item: usize,
    },
}

/// Numerically stable in-place softmax over `logits`; returns the index and probability of the
/// largest entry, or `None` when `logits` is empty or holds a non-finite value.
pub fn softmax_argmax(logits: &mut [f32]) -> Option<(usize, f32)> {
    let mut max = f32::NEG_INFINITY;
    for &v in logits.iter() {
        if !v.is_finite() {
            return None;
        }
        if v > max {
            max = v;
        }
    }
    if logits.is_empty() {
        return None;
    }
    let mut sum = 0.0f32;
    for v in logits.iter_mut() {
        *v = libm::expf(*v - max);
        sum += *v;
    }
    let mut best = (0usize, 0.0f32);
    for (i, v) in logits.iter_mut().enumerate() {
        *v /= sum;
        if *v > best.1 {
            best = (i, *v);
        }
    }
    Some(best)
}

/// Index and value of the largest entry of `v`, or `None` when it is empty or its largest entry
/// is not finite (a NaN anywhere counts as not finite).
pub fn argmax(v: &[f32]) -> Option<(usize, f32)> {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, &x) in v.iter().enumerate() {
        if x.is_nan() {
            return None;
        }
        if x > best.1 {
            best = (i, x);
        }
    }
    best.1.is_finite().then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_hand_values() {
        let mut l = [0.0f32, (2.0f32).ln(), 0.0];
        let (i, p) = softmax_argmax(&mut l).unwrap();
        assert_eq!(i, 1);
        assert!((p - 0.5).abs() < 1e-6);
        assert!((l[0] - 0.25).abs() < 1e-6 && (l[2] - 0.25).abs() < 1e-6);
    }

    #[test]
    fn softmax_rejects_nan_and_empty() {
        assert!(softmax_argmax(&mut [1.0, f32::NAN]).is_none());
        assert!(softmax_argmax(&mut []).is_none());
    }

    #[test]
    fn softmax_is_stable_for_large_logits() {
        let mut l = [1000.0f32, 999.0];
        let (i, p) = softmax_argmax(&mut l).unwrap();
        assert_eq!(i, 0);
        assert!((p - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn argmax_takes_the_first_largest_and_refuses_nan_and_empty() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), Some((1, 0.7)));
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[0.5, f32::NAN, 0.9]), None);
        assert_eq!(argmax(&[0.5, f32::INFINITY]), None);
    }
}
