//! Downlink planning over analysed images: duplicate detection on latents, quality penalties,
//! and the allocation-free planner of [`crate::decide`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::decide::{self, Decision, Outcome, PlanItem, PlanWeights};
use crate::pipeline::Analysis;

/// Most images one plan can hold.
pub const MAX_PLAN: usize = 16384;

/// Planner settings; every field can be set in the `[planner]` table of a values file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlannerConfig {
    /// Novelty weight (see [`PlanWeights::novelty`]).
    pub novelty: f32,
    /// Novelty cap.
    pub novelty_cap: f32,
    /// Diminishing returns within a cluster.
    pub cluster_decay: f32,
    /// Gain multiplier of a near-duplicate once its twin is chosen.
    pub duplicate_factor: f32,
    /// Cosine distance (`1 - cos`, `0..=2`) between latents under which two images are
    /// near-duplicates.
    pub duplicate_distance: f32,
    /// How many preceding images are searched for a near-duplicate.
    pub duplicate_window: usize,
    /// Quality multiplier of a blank image.
    pub blank_quality: f32,
    /// Quality multiplier of an overexposed image.
    pub overexposed_quality: f32,
    /// Quality multiplier of an image with a single dominant channel.
    pub dominant_channel_quality: f32,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        let w = PlanWeights::default();
        Self {
            novelty: w.novelty,
            novelty_cap: w.novelty_cap,
            cluster_decay: w.cluster_decay,
            duplicate_factor: w.duplicate_factor,
            // Off: on the downlink benchmark every cosine threshold tried lowered the value
            // (docs/RESULTS.md, "Downlink benchmark"); byte-identical copies are still found.
            duplicate_distance: 0.0,
            duplicate_window: 8,
            blank_quality: 0.1,
            overexposed_quality: 0.5,
            dominant_channel_quality: 1.0,
        }
    }
}

impl PlannerConfig {
    /// The optional `[planner]` table of a parsed values file (defaults when absent); `path`
    /// names the file in errors.
    pub fn from_table(doc: &toml::Table, path: &Path) -> Result<Self, String> {
        let c: Self = match doc.get("planner") {
            None => return Ok(Self::default()),
            Some(t) => t.clone().try_into().map_err(|e: toml::de::Error| {
                format!("{}: [planner]: {}", path.display(), e.message())
            })?,
        };
        c.validate()
            .map_err(|e| format!("{}: [planner]: {e}", path.display()))?;
        Ok(c)
    }

    /// Checks every setting against its range (all finite): `novelty`, `novelty_cap` and
    /// `cluster_decay` (0: no diminishing returns) in `0..=1000`; `duplicate_distance` (cosine)
    /// in `0..=2`; the factors in `0..=1`; `duplicate_window` at most [`MAX_PLAN`]. Returns what
    /// is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let ranged = [
            ("novelty", self.novelty, 1000.0),
            ("novelty_cap", self.novelty_cap, 1000.0),
            ("cluster_decay", self.cluster_decay, 1000.0),
            ("duplicate_distance", self.duplicate_distance, 2.0),
            ("duplicate_factor", self.duplicate_factor, 1.0),
            ("blank_quality", self.blank_quality, 1.0),
            ("overexposed_quality", self.overexposed_quality, 1.0),
            (
                "dominant_channel_quality",
                self.dominant_channel_quality,
                1.0,
            ),
        ];
        for (name, v, max) in ranged {
            if !(v.is_finite() && (0.0..=max).contains(&v)) {
                return Err(format!("{name} = {v} is outside 0..={max}"));
            }
        }
        if self.duplicate_window > MAX_PLAN {
            return Err(format!(
                "duplicate_window = {} exceeds {MAX_PLAN}",
                self.duplicate_window
            ));
        }
        Ok(())
    }

    fn weights(&self) -> PlanWeights {
        PlanWeights {
            novelty: self.novelty,
            novelty_cap: self.novelty_cap,
            cluster_decay: self.cluster_decay,
            duplicate_factor: self.duplicate_factor,
        }
    }

    /// Quality multiplier of an analysed image.
    pub fn quality(&self, a: &Analysis) -> f32 {
        let q = a.quality;
        let mut m = 1.0;
        if q.blank {
            m *= self.blank_quality;
        }
        if q.overexposed {
            m *= self.overexposed_quality;
        }
        if q.dominant_channel {
            m *= self.dominant_channel_quality;
        }
        m
    }
}

/// Cosine distance `1 - cos(a, b)` in `0..=2`; `None` when either vector has no length.
fn cosine_distance(a: &[f32], b: &[f32]) -> Option<f32> {
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    let n = (aa * bb).sqrt();
    (n > 0.0 && n.is_finite()).then(|| (1.0 - ab / n).clamp(0.0, 2.0))
}

/// For each latent, the nearest (by cosine distance, which does not depend on the latent's
/// scale, so one threshold serves every bundle) of the `window` preceding latents closer than
/// `threshold`; a latent of zero length is nobody's near-duplicate.
pub fn find_duplicates(latents: &[&[f32]], window: usize, threshold: f32) -> Vec<Option<usize>> {
    (0..latents.len())
        .map(|i| {
            let mut best: Option<(usize, f32)> = None;
            for j in i.saturating_sub(window)..i {
                let Some(d) = cosine_distance(latents[i], latents[j]) else {
                    continue;
                };
                if d < threshold && best.is_none_or(|(_, bd)| d < bd) {
                    best = Some((j, d));
                }
            }
            best.map(|(j, _)| j)
        })
        .collect()
}

/// An analysed image ready for planning.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// File size.
    pub bytes: u64,
    /// Its analysis.
    pub analysis: &'a Analysis,
}

/// The plan of one pass: per-candidate outcome and duplicate link, bytes used.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Outcome per candidate.
    pub outcomes: Vec<Outcome>,
    /// Duplicate link per candidate: a byte-identical earlier copy, else a near-duplicate.
    pub duplicate_of: Vec<Option<usize>>,
    /// Quality multiplier per candidate.
    pub quality: Vec<f32>,
    /// Bytes of the chosen images.
    pub bytes: u64,
}

impl Plan {
    /// Candidate indices in downlink order: chosen ones first (in choice order), then the rest
    /// by decreasing initial gain.
    pub fn order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.outcomes.len()).collect();
        idx.sort_by(|&a, &b| {
            let key = |i: usize| match self.outcomes[i].decision {
                Decision::Selected(r) => (0, r, 0.0f32),
                _ => (1, 0, -self.outcomes[i].initial_gain),
            };
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0)
                .then(ka.1.cmp(&kb.1))
                .then(ka.2.total_cmp(&kb.2))
                .then(a.cmp(&b))
        });
        idx
    }
}

/// For each candidate, the first earlier one with the same content hash (a byte-identical
/// copy, at any distance), else the nearest near-duplicate of [`find_duplicates`].
pub fn duplicates(candidates: &[Candidate<'_>], cfg: &PlannerConfig) -> Vec<Option<usize>> {
    let latents: Vec<&[f32]> = candidates
        .iter()
        .map(|c| c.analysis.latent.as_slice())
        .collect();
    let near = find_duplicates(&latents, cfg.duplicate_window, cfg.duplicate_distance);
    let mut first: std::collections::HashMap<(u64, u64), usize> = Default::default();
    candidates
        .iter()
        .zip(near)
        .enumerate()
        .map(|(i, (c, near))| {
            let exact = c.analysis.content_hash.and_then(|h| {
                let earlier = *first.entry((h, c.bytes)).or_insert(i);
                (earlier != i).then_some(earlier)
            });
            exact.or(near)
        })
        .collect()
}

/// Plans `candidates` (in arrival order) within `budget` bytes.
pub fn plan(
    candidates: &[Candidate<'_>],
    values: &[f32],
    cfg: &PlannerConfig,
    budget: u64,
) -> Result<Plan, decide::DecideError> {
    let duplicate_of = duplicates(candidates, cfg);
    let quality: Vec<f32> = candidates.iter().map(|c| cfg.quality(c.analysis)).collect();
    let items: Vec<PlanItem<'_>> = candidates
        .iter()
        .zip(&duplicate_of)
        .zip(&quality)
        .map(|((c, d), q)| PlanItem {
            bytes: c.bytes,
            probs: &c.analysis.probs,
            cluster: c.analysis.cluster.min(u16::MAX as usize) as u16,
            novelty: c.analysis.novelty,
            duplicate_of: *d,
            quality: *q,
        })
        .collect();
    let mut chosen = vec![false; items.len()];
    let mut outcomes = vec![Outcome::default(); items.len()];
    let (_, bytes) = decide::plan::<MAX_PLAN>(
        &items,
        values,
        &cfg.weights(),
        budget,
        &mut chosen,
        &mut outcomes,
    )?;
    Ok(Plan {
        outcomes,
        duplicate_of,
        quality,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(latent: Vec<f32>, hash: Option<u64>) -> Analysis {
        Analysis {
            latent,
            cluster: 0,
            distance: 0.0,
            novelty: 0.0,
            class: 0,
            confidence: 1.0,
            probs: vec![1.0],
            calibrated_probs: None,
            quality: crate::preprocess::QualityFlags::default(),
            content_hash: hash,
        }
    }

    #[test]
    fn byte_identical_copies_are_duplicates_at_any_distance() {
        // 20 images far apart in latent space (orthogonal latents); #17 is a byte copy of #2
        // (same hash and size), #18 has #2's hash but another size, #19 has no hash (an old
        // record).
        let mut a: Vec<Analysis> = (0..20)
            .map(|i| {
                analysis(
                    (0..20).map(|j| f32::from(u8::from(j == i))).collect(),
                    Some(i),
                )
            })
            .collect();
        a[17].content_hash = Some(2);
        a[18].content_hash = Some(2);
        a[19].content_hash = None;
        let cands: Vec<Candidate<'_>> = a
            .iter()
            .enumerate()
            .map(|(i, analysis)| Candidate {
                bytes: if i == 18 { 999 } else { 100 },
                analysis,
            })
            .collect();
        let d = duplicates(&cands, &PlannerConfig::default());
        assert_eq!(d[17], Some(2), "{d:?}");
        assert!(
            d.iter().enumerate().all(|(i, x)| i == 17 || x.is_none()),
            "{d:?}"
        );
        let plan = plan(&cands, &[1.0], &PlannerConfig::default(), u64::MAX).unwrap();
        assert_eq!(plan.duplicate_of[17], Some(2));
    }

    #[test]
    fn duplicates_within_window_only() {
        let a = [1.0f32, 0.0];
        let b = [20.0f32, 1.0]; // 0.0012 from a at any scale
        let c = [0.0f32, 3.0];
        let zero = [0.0f32, 0.0];
        let lat: Vec<&[f32]> = vec![&a, &c, &b, &c, &zero, &zero];
        assert_eq!(
            find_duplicates(&lat, 8, 0.01),
            vec![None, None, Some(0), Some(1), None, None]
        );
        assert_eq!(find_duplicates(&lat, 1, 0.01), vec![None; 6]);
        assert!((cosine_distance(&a, &c).unwrap() - 1.0).abs() < 1e-6);
        assert!(cosine_distance(&a, &[-2.0, 0.0]).unwrap() > 1.99);
    }

    /// The largest settings and science values the files accept, items with certain and with
    /// unnormalized probabilities, the largest novelty and sizes at both ends: every gain stays
    /// finite and ordering works (no `inf` / NaN falls back to file-name order).
    #[test]
    fn scores_stay_finite_at_the_largest_accepted_values() {
        use crate::decide::MAX_CLASSES;
        let cfg = PlannerConfig {
            novelty: 1000.0,
            novelty_cap: 1000.0,
            cluster_decay: 0.0,
            duplicate_factor: 1.0,
            duplicate_distance: 2.0,
            duplicate_window: MAX_PLAN,
            blank_quality: 1.0,
            overexposed_quality: 1.0,
            dominant_channel_quality: 1.0,
        };
        cfg.validate().unwrap();
        let values = vec![crate::downlink::MAX_VALUE as f32; MAX_CLASSES];
        let mut one_hot = vec![0.0f32; MAX_CLASSES];
        one_hot[3] = 1.0;
        let all_ones = vec![1.0f32; MAX_CLASSES];
        let items: Vec<PlanItem<'_>> = (0..64)
            .map(|i| PlanItem {
                bytes: if i % 2 == 0 { 1 } else { u64::MAX / 2 },
                probs: if i % 3 == 0 { &all_ones } else { &one_hot },
                cluster: (i % 5) as u16,
                novelty: if i % 7 == 0 { f32::MAX } else { 1000.0 },
                duplicate_of: (i > 0).then_some(i - 1),
                quality: 1.0,
            })
            .collect();
        let mut chosen = vec![false; items.len()];
        let mut outcomes = vec![Outcome::default(); items.len()];
        let (count, _) = decide::plan::<64>(
            &items,
            &values,
            &cfg.weights(),
            u64::MAX,
            &mut chosen,
            &mut outcomes,
        )
        .unwrap();
        assert!(count > 0);
        for (i, o) in outcomes.iter().enumerate() {
            assert!(
                o.gain.is_finite() && o.initial_gain.is_finite() && o.initial_gain > 0.0,
                "item {i}: {o:?}"
            );
        }
        // The cheapest items come first: value per byte is finite and ordered.
        assert!(matches!(outcomes[0].decision, Decision::Selected(_)));
    }

    #[test]
    fn hostile_planner_settings_are_refused_naming_the_setting() {
        let path = Path::new("v.toml");
        for (text, want) in [
            ("[planner]\nnovelty = 1e300", "novelty = inf"),
            ("[planner]\nduplicate_factor = -1", "duplicate_factor = -1"),
            ("[planner]\ncluster_decay = nan", "cluster_decay = NaN"),
            ("[planner]\nblank_quality = 2", "blank_quality = 2"),
            (
                "[planner]\nduplicate_window = 100000",
                "duplicate_window = 100000",
            ),
        ] {
            let doc: toml::Table = text.parse().unwrap();
            let err = PlannerConfig::from_table(&doc, path).unwrap_err();
            assert!(
                err.starts_with("v.toml: [planner]: ") && err.contains(want),
                "{err}"
            );
        }
        let ok: toml::Table = "[planner]\ncluster_decay = 0".parse().unwrap();
        assert_eq!(
            PlannerConfig::from_table(&ok, path).unwrap().cluster_decay,
            0.0
        );
    }
}
