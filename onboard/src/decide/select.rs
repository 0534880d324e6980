use super::DecideError;

/// One analysed image as the selection step sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Size of the file to downlink, in bytes.
    pub bytes: u64,
    /// Priority score (higher goes first).
    pub score: f32,
}

/// Weights of the priority score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreWeights {
    /// Weight of the novelty term.
    pub novelty: f32,
    /// Cap on novelty before weighting, so one outlier cannot dominate the plan.
    pub novelty_cap: f32,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        Self {
            novelty: 0.25,
            novelty_cap: 4.0,
        }
    }
}

/// Priority score `value * confidence + w.novelty * min(novelty, w.novelty_cap)`.
pub fn priority_score(class_value: f32, confidence: f32, novelty: f32, w: ScoreWeights) -> f32 {
    let n = if novelty.is_finite() {
        novelty.clamp(0.0, w.novelty_cap)
    } else {
        0.0
    };
    class_value * confidence + w.novelty * n
}

/// Orders candidates by score (descending, ties by index) and marks those that fit the byte
/// budget, taking them greedily in that order.
///
/// `order` and `selected` must have the candidates' length; on return `order` holds candidate
/// indices highest priority first and `selected[i]` tells whether candidate `i` is sent.
/// Returns the bytes used.
pub fn select_under_budget(
    candidates: &[Candidate],
    budget_bytes: u64,
    order: &mut [usize],
    selected: &mut [bool],
) -> Result<u64, DecideError> {
    let n = candidates.len();
    for len in [order.len(), selected.len()] {
        if len != n {
            return Err(DecideError::LengthMismatch {
                expected: n,
                got: len,
            });
        }
    }
    for (i, o) in order.iter_mut().enumerate() {
        *o = i;
    }
    order.sort_unstable_by(|&a, &b| {
        candidates[b]
            .score
            .total_cmp(&candidates[a].score)
            .then(a.cmp(&b))
    });
    let mut used = 0u64;
    for &i in order.iter() {
        let fits = used
            .checked_add(candidates[i].bytes)
            .is_some_and(|t| t <= budget_bytes);
        selected[i] = fits;
        if fits {
            used += candidates[i].bytes;
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(bytes: u64, score: f32) -> Candidate {
        Candidate { bytes, score }
    }

    #[test]
    fn greedy_by_score_within_budget() {
        let cs = [c(50, 1.0), c(60, 3.0), c(30, 2.0), c(20, 0.5)];
        let mut order = [0; 4];
        let mut sel = [false; 4];
        let used = select_under_budget(&cs, 100, &mut order, &mut sel).unwrap();
        assert_eq!(order, [1, 2, 0, 3]);
        assert_eq!(sel, [false, true, true, false]);
        assert_eq!(used, 90);
    }

    #[test]
    fn ties_keep_input_order_and_overflow_is_refused() {
        let cs = [c(u64::MAX, 1.0), c(1, 1.0)];
        let mut order = [0; 2];
        let mut sel = [false; 2];
        let used = select_under_budget(&cs, u64::MAX, &mut order, &mut sel).unwrap();
        assert_eq!(order, [0, 1]);
        assert_eq!(sel, [true, false]);
        assert_eq!(used, u64::MAX);
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let mut order = [0; 1];
        let mut sel = [false; 2];
        assert!(select_under_budget(&[c(1, 1.0), c(1, 1.0)], 5, &mut order, &mut sel).is_err());
    }

    #[test]
    fn score_caps_novelty() {
        let w = ScoreWeights::default();
        assert!((priority_score(2.0, 0.5, 100.0, w) - (1.0 + 0.25 * 4.0)).abs() < 1e-6);
        assert_eq!(priority_score(1.0, 1.0, f32::NAN, w), 1.0);
    }
}
