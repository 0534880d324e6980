//! Budgeted downlink planning: lazy greedy selection by expected marginal science value per
//! byte, with diminishing returns within a class and a cluster, novelty bonus, duplicate
//! suppression and quality penalties. Allocation-free: the caller owns every buffer and the
//! priority queue has a fixed capacity `N`.

use super::queue::{Candidate, CandidateQueue};
use super::DecideError;

/// Largest number of classes a plan supports.
pub const MAX_CLASSES: usize = 32;
/// Largest number of clusters a plan supports.
pub const MAX_CLUSTERS: usize = 256;

/// Weights of the marginal-value model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanWeights {
    /// Gain multiplier is `1 + novelty * min(novelty_score, novelty_cap)`.
    pub novelty: f32,
    /// Cap on the novelty score.
    pub novelty_cap: f32,
    /// Gain is divided by `1 + cluster_decay * (images already chosen from the cluster)`.
    pub cluster_decay: f32,
    /// Gain multiplier once the image this one duplicates is chosen.
    pub duplicate_factor: f32,
}

impl Default for PlanWeights {
    fn default() -> Self {
        Self {
            novelty: 0.15,
            novelty_cap: 4.0,
            cluster_decay: 0.5,
            duplicate_factor: 0.05,
        }
    }
}

/// One image as the planner sees it. `probs` holds the classifier's probabilities (one per
/// class, summing to about 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanItem<'a> {
    /// Bytes to downlink.
    pub bytes: u64,
    /// Class probabilities.
    pub probs: &'a [f32],
    /// Nearest cluster.
    pub cluster: u16,
    /// Novelty score (standard deviations beyond the cluster's mean distance; >= 0).
    pub novelty: f32,
    /// Index of an earlier item this one nearly duplicates, if any.
    pub duplicate_of: Option<usize>,
    /// Quality multiplier in [0, 1] (1 = no quality flag).
    pub quality: f32,
}

/// Why an item was or was not chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Chosen; the value is its position in the downlink order (0 first).
    Selected(usize),
    /// Never fitted the remaining budget when its turn came.
    NoRoom,
    /// Its expected marginal value fell to zero.
    NoValue,
}

/// Per-item outcome of a plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// Expected marginal value when decided (for chosen items: the value it added).
    pub gain: f32,
    /// Marginal value with nothing chosen yet.
    pub initial_gain: f32,
}

impl Default for Outcome {
    /// Not chosen, no value: the state of an item before planning.
    fn default() -> Self {
        Self {
            decision: Decision::NoValue,
            gain: 0.0,
            initial_gain: 0.0,
        }
    }
}

/// Running state of a plan: soft class counts and cluster counts of the chosen set.
#[derive(Debug, Clone)]
struct State {
    class_mass: [f32; MAX_CLASSES],
    cluster_count: [u32; MAX_CLUSTERS],
}

/// Expected marginal value of `item` given the state.
fn gain(item: &PlanItem<'_>, values: &[f32], w: &PlanWeights, st: &State, chosen: &[bool]) -> f32 {
    let mut g = 0.0f32;
    for ((p, v), m) in item.probs.iter().zip(values).zip(st.class_mass.iter()) {
        g += p * v / (1.0 + m);
    }
    let nov = if item.novelty.is_finite() {
        item.novelty.clamp(0.0, w.novelty_cap)
    } else {
        0.0
    };
    g *= 1.0 + w.novelty * nov;
    let k = (item.cluster as usize).min(MAX_CLUSTERS - 1);
    g /= 1.0 + w.cluster_decay * st.cluster_count[k] as f32;
    if item
        .duplicate_of
        .is_some_and(|d| chosen.get(d).copied().unwrap_or(false))
    {
        g *= w.duplicate_factor;
    }
    let q = if item.quality.is_finite() {
        item.quality.clamp(0.0, 1.0)
    } else {
        0.0
    };
    g * q
}

/// Plans the downlink of `items` within `budget` bytes.
///
/// `values` has one science value per class (`probs.len()` of every item, at most
/// [`MAX_CLASSES`]). `chosen` and `outcomes` must have the items' length; on return
/// `outcomes[i]` says what happened to item `i`. Up to `N` items can be planned at once; more
/// give [`DecideError::Capacity`]. Returns the number of items chosen and the bytes used.
pub fn plan<const N: usize>(
    items: &[PlanItem<'_>],
    values: &[f32],
    weights: &PlanWeights,
    budget: u64,
    chosen: &mut [bool],
    outcomes: &mut [Outcome],
) -> Result<(usize, u64), DecideError> {
    let n = items.len();
    if n > N {
        return Err(DecideError::Capacity {
            capacity: N,
            got: n,
        });
    }
    for len in [chosen.len(), outcomes.len()] {
        if len != n {
            return Err(DecideError::LengthMismatch {
                expected: n,
                got: len,
            });
        }
    }
    if values.len() > MAX_CLASSES {
        return Err(DecideError::LengthMismatch {
            expected: MAX_CLASSES,
            got: values.len(),
        });
    }
    if let Some(bad) = items.iter().find(|it| it.probs.len() != values.len()) {
        return Err(DecideError::LengthMismatch {
            expected: values.len(),
            got: bad.probs.len(),
        });
    }
    let mut st = State {
        class_mass: [0.0; MAX_CLASSES],
        cluster_count: [0; MAX_CLUSTERS],
    };
    let mut heap: CandidateQueue<N> = CandidateQueue::new();
    chosen.iter_mut().for_each(|c| *c = false);
    for (i, it) in items.iter().enumerate() {
        let g = gain(it, values, weights, &st, chosen);
        outcomes[i] = Outcome {
            decision: Decision::NoValue,
            gain: g,
            initial_gain: g,
        };
        if g > 0.0 {
            let key = g / it.bytes.max(1) as f32;
            heap.push(Candidate { key, index: i })
                .map_err(|e| DecideError::QueueFull {
                    capacity: e.capacity,
                    item: e.candidate.index,
                })?;
        }
    }
    let (mut used, mut count) = (0u64, 0usize);
    while let Some(top) = heap.pop() {
        let it = &items[top.index];
        let fits = used.checked_add(it.bytes).is_some_and(|t| t <= budget);
        if !fits {
            outcomes[top.index].decision = Decision::NoRoom;
            continue;
        }
        let g = gain(it, values, weights, &st, chosen);
        outcomes[top.index].gain = g;
        if g <= 0.0 {
            outcomes[top.index].decision = Decision::NoValue;
            continue;
        }
        let key = g / it.bytes.max(1) as f32;
        let stale = heap.peek().is_some_and(|next| {
            Candidate {
                key,
                index: top.index,
            } < *next
        });
        if stale {
            // Gains only fall as the set grows, so a re-scored item goes back in line.
            heap.push(Candidate {
                key,
                index: top.index,
            })
            .map_err(|e| DecideError::QueueFull {
                capacity: e.capacity,
                item: e.candidate.index,
            })?;
            continue;
        }
        chosen[top.index] = true;
        outcomes[top.index].decision = Decision::Selected(count);
        count += 1;
        used += it.bytes;
        for (m, p) in st.class_mass.iter_mut().zip(it.probs) {
            *m += p;
        }
        st.cluster_count[(it.cluster as usize).min(MAX_CLUSTERS - 1)] += 1;
    }
    Ok((count, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P0: [f32; 2] = [1.0, 0.0];
    const P1: [f32; 2] = [0.0, 1.0];

    fn it(bytes: u64, probs: &[f32], cluster: u16) -> PlanItem<'_> {
        PlanItem {
            bytes,
            probs,
            cluster,
            novelty: 0.0,
            duplicate_of: None,
            quality: 1.0,
        }
    }

    fn run(
        items: &[PlanItem<'_>],
        values: &[f32],
        w: &PlanWeights,
        budget: u64,
    ) -> (Vec<bool>, Vec<Outcome>, (usize, u64)) {
        let mut chosen = vec![false; items.len()];
        let mut out = vec![Outcome::default(); items.len()];
        let r = plan::<16>(items, values, w, budget, &mut chosen, &mut out).unwrap();
        (chosen, out, r)
    }

    #[test]
    fn diminishing_returns_spread_the_plan_over_classes() {
        let w = PlanWeights {
            cluster_decay: 0.0,
            ..Default::default()
        };
        // Three class-0 images worth 2 each, one class-1 image worth 1.5: after one class-0
        // image the next is worth 2 / 2 = 1 < 1.5, so class 1 comes second.
        let items = [
            it(10, &P0, 0),
            it(10, &P0, 0),
            it(10, &P0, 0),
            it(10, &P1, 1),
        ];
        let (chosen, out, (count, used)) = run(&items, &[2.0, 1.5], &w, 30);
        assert_eq!(chosen, vec![true, true, false, true]);
        assert_eq!(out[0].decision, Decision::Selected(0));
        assert_eq!(out[3].decision, Decision::Selected(1));
        assert_eq!(out[1].decision, Decision::Selected(2));
        assert_eq!(out[2].decision, Decision::NoRoom);
        assert!((out[1].gain - 1.0).abs() < 1e-6);
        assert_eq!((count, used), (3, 30));
    }

    #[test]
    fn duplicates_and_bad_quality_lose_priority() {
        let w = PlanWeights {
            cluster_decay: 0.0,
            ..Default::default()
        };
        let mut dup = it(10, &P0, 0);
        dup.duplicate_of = Some(0);
        let mut dark = it(10, &P1, 1);
        dark.quality = 0.0;
        let items = [it(10, &P0, 0), dup, dark, it(10, &P1, 2)];
        let (chosen, out, _) = run(&items, &[1.0, 1.0], &w, 30);
        assert_eq!(chosen, vec![true, true, false, true]);
        assert_eq!(out[2].decision, Decision::NoValue);
        assert!((out[1].gain - 0.5 * 0.05).abs() < 1e-6, "{}", out[1].gain);
    }

    #[test]
    fn value_per_byte_prefers_small_files() {
        let items = [it(100, &P0, 0), it(10, &P1, 1)];
        let (chosen, out, _) = run(&items, &[1.0, 1.0], &PlanWeights::default(), 100);
        assert_eq!(out[1].decision, Decision::Selected(0));
        assert_eq!(chosen, vec![false, true]);
        assert_eq!(out[0].decision, Decision::NoRoom);
    }

    #[test]
    fn capacity_and_shape_errors() {
        let items = [it(1, &P0, 0); 3];
        let mut chosen = [false; 3];
        let mut out = [Outcome::default(); 3];
        assert_eq!(
            plan::<2>(
                &items,
                &[1.0, 1.0],
                &PlanWeights::default(),
                10,
                &mut chosen,
                &mut out
            ),
            Err(DecideError::Capacity {
                capacity: 2,
                got: 3
            })
        );
        assert!(plan::<4>(
            &items,
            &[1.0],
            &PlanWeights::default(),
            10,
            &mut chosen,
            &mut out
        )
        .is_err());
    }
}
