//! The rover adapting to its own image stream, without labels: the class prior re-estimated by
//! EM over a window of recent posteriors ([`decide::PriorAdapter`]) and the ground centroids
//! moved by sequential k-means ([`decide::adapt_nearest`]), with each cluster's distance
//! statistics (novelty) following its centroid. Causal: what an image is told uses only the
//! images before it and itself, in the order they arrive.

use serde::{Deserialize, Serialize};

use crate::bundle::{Adaptation, Bundle, PRIOR_WINDOW_CAPACITY};
use crate::decide::{self, ClusterStats, DecideError, PriorAdapter, PriorConfig, PriorStep};

/// Where an image's latent fell when it arrived, and how novel it was then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Nearest (adapted) cluster.
    pub cluster: usize,
    /// Distance to its centroid before the centroid moved toward the image.
    pub distance: f32,
    /// Novelty against that cluster's statistics before the update.
    pub novelty: f32,
}

/// The adaptation state of one stream: adapted centroids, their counts and distance
/// statistics, and (when the bundle carries its training class prior) the prior adapter.
#[derive(Debug, Clone)]
pub struct StreamAdapter {
    prior: Option<Box<PriorAdapter<PRIOR_WINDOW_CAPACITY>>>,
    centroids: Vec<f32>,
    counts: Vec<f32>,
    stats: Vec<ClusterStats>,
    images: u64,
}

/// The whole state of a [`StreamAdapter`], as the journal stores it: restoring it
/// ([`StreamAdapter::restore`]) continues exactly (bit for bit) where it was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptState {
    /// Which bundle and precision the state belongs to ([`crate::pipeline::Analyzer::fingerprint`]).
    pub model: String,
    /// Images adapted to since the ground state.
    pub images: u64,
    /// Adapted centroids, row-major `[k, latent_dim]`.
    pub centroids: Vec<f32>,
    /// Images each centroid counts as holding, `k` values.
    pub counts: Vec<f32>,
    /// Each cluster's distance mean and standard deviation, `k` pairs.
    pub stats: Vec<[f32; 2]>,
    /// The class-prior adapter's state, when the prior adapts.
    pub prior: Option<PriorState>,
}

/// The class-prior adapter's state: see [`PriorAdapter::ring`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorState {
    /// The adapted prior, one value per class.
    pub prior: Vec<f32>,
    /// The window's posteriors in ring-slot order, row-major `[rows, classes]`.
    pub window: Vec<f32>,
    /// The ring slot the next posterior goes to.
    pub next: usize,
}

/// Why a saved adaptation state cannot be put back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The state was saved for another bundle or precision.
    #[error("it belongs to model {found}, not {expected}")]
    OtherModel {
        /// This run's fingerprint.
        expected: String,
        /// The state's.
        found: String,
    },
    /// The state does not fit this bundle's shapes or settings.
    #[error("it does not fit this bundle: {0}")]
    Shape(String),
    /// The decision core refused a value.
    #[error(transparent)]
    Decide(#[from] DecideError),
}

impl StreamAdapter {
    /// Starts from the bundle's ground centroids (each counting as
    /// `adaptation.centroid_prior_count` images) and its training class prior; without a
    /// `calibration` section in the manifest only the centroids adapt.
    pub fn new(bundle: &Bundle) -> Result<Self, DecideError> {
        let m = &bundle.manifest;
        let stats = m
            .clustering
            .distance_stats
            .iter()
            .map(|s| ClusterStats {
                mean: s.mean,
                std: s.std,
            })
            .collect();
        Self::from_parts(
            m.calibration.as_ref().map(|c| c.class_prior.as_slice()),
            &m.adaptation,
            bundle.centroids_flat.clone(),
            stats,
        )
    }

    /// Starts from `centroids` (row-major `[k, latent_dim]`) with their distance `stats` (`k`
    /// entries) and, when given, the training class prior, with the `adaptation` settings.
    pub fn from_parts(
        class_prior: Option<&[f32]>,
        adaptation: &Adaptation,
        centroids: Vec<f32>,
        stats: Vec<ClusterStats>,
    ) -> Result<Self, DecideError> {
        let a = adaptation;
        let prior = match class_prior {
            Some(p) => Some(Box::new(PriorAdapter::new(
                p,
                PriorConfig {
                    window: a.prior_window,
                    max_iterations: a.prior_max_iterations,
                    tolerance: a.prior_tolerance,
                    floor: a.prior_floor,
                },
            )?)),
            None => None,
        };
        if stats.is_empty() || !centroids.len().is_multiple_of(stats.len()) {
            return Err(DecideError::LengthMismatch {
                expected: stats.len(),
                got: centroids.len(),
            });
        }
        Ok(Self {
            prior,
            counts: vec![a.centroid_prior_count; stats.len()],
            centroids,
            stats,
            images: 0,
        })
    }

    /// Images adapted to since the ground state.
    pub fn images(&self) -> u64 {
        self.images
    }

    /// The whole state, labeled with `model` (the run's bundle and precision).
    pub fn state(&self, model: &str) -> AdaptState {
        AdaptState {
            model: model.to_string(),
            images: self.images,
            centroids: self.centroids.clone(),
            counts: self.counts.clone(),
            stats: self.stats.iter().map(|s| [s.mean, s.std]).collect(),
            prior: self.prior.as_deref().map(|p| {
                let (rows, next) = p.ring();
                PriorState {
                    prior: p.prior().to_vec(),
                    window: rows.flatten().copied().collect(),
                    next,
                }
            }),
        }
    }

    /// Puts back a state taken by [`Self::state`] for the same `model`; on error nothing
    /// changes.
    pub fn restore(&mut self, state: &AdaptState, model: &str) -> Result<(), RestoreError> {
        if state.model != model {
            return Err(RestoreError::OtherModel {
                expected: model.to_string(),
                found: state.model.clone(),
            });
        }
        let shape = |what: &str| RestoreError::Shape(what.to_string());
        if state.centroids.len() != self.centroids.len()
            || state.counts.len() != self.counts.len()
            || state.stats.len() != self.stats.len()
        {
            return Err(shape("centroid table of another size"));
        }
        if state.centroids.iter().any(|v| !v.is_finite())
            || state.counts.iter().any(|n| !(n.is_finite() && *n >= 1.0))
            || state
                .stats
                .iter()
                .any(|[m, s]| !(m.is_finite() && s.is_finite() && *s > 0.0))
        {
            return Err(shape("non-finite centroid, count or distance statistic"));
        }
        match (self.prior.as_deref_mut(), &state.prior) {
            (Some(p), Some(s)) => p.restore(&s.prior, &s.window, s.next)?,
            (None, None) => {}
            _ => {
                return Err(shape(
                    "class-prior state where the bundle has none, or none where it has one",
                ))
            }
        }
        self.centroids.copy_from_slice(&state.centroids);
        self.counts.copy_from_slice(&state.counts);
        for (d, [mean, std]) in self.stats.iter_mut().zip(&state.stats) {
            *d = ClusterStats {
                mean: *mean,
                std: *std,
            };
        }
        self.images = state.images;
        Ok(())
    }

    /// Adapts to one image already seen live, from what the journal kept of it: its `latent`
    /// (normalized as the bundle says) and its calibrated probabilities before the prior
    /// adaptation. Leaves the state as [`Self::arrive`] and [`Self::adapt_probs`] left it.
    pub fn replay(&mut self, latent: &[f32], calibrated: &[f32]) -> Result<(), DecideError> {
        self.arrive(latent)?;
        let mut probs = calibrated.to_vec();
        self.adapt_probs(&mut probs)?;
        Ok(())
    }

    /// Whether the class prior adapts (the bundle carries its training prior).
    pub fn adapts_prior(&self) -> bool {
        self.prior.is_some()
    }

    /// The current class prior, when it adapts.
    pub fn prior(&self) -> Option<&[f32]> {
        self.prior.as_deref().map(PriorAdapter::prior)
    }

    /// The adapted centroids, row-major `[k, latent_dim]`.
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }

    /// Places `latent` (already normalized as the bundle says) against the adapted centroids,
    /// then moves the nearest one toward it; counts the image. On error nothing changes.
    pub fn arrive(&mut self, latent: &[f32]) -> Result<Arrival, DecideError> {
        let (near, stats) = decide::adapt_nearest(
            latent,
            &mut self.centroids,
            &mut self.counts,
            &mut self.stats,
        )?;
        self.images += 1;
        Ok(Arrival {
            cluster: near.cluster,
            distance: near.distance,
            novelty: decide::novelty(near.distance, stats),
        })
    }

    /// Adds the calibrated `probs` of one image to the prior window and rewrites them in place
    /// to the adapted probabilities; `None` (probabilities unchanged) when the prior does not
    /// adapt.
    pub fn adapt_probs(&mut self, probs: &mut [f32]) -> Result<Option<PriorStep>, DecideError> {
        match self.prior.as_deref_mut() {
            Some(p) => p.observe(probs).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(prior_count: f32) -> StreamAdapter {
        StreamAdapter::from_parts(
            None,
            &Adaptation {
                centroid_prior_count: prior_count,
                ..Default::default()
            },
            vec![0.0, 0.0, 4.0, 4.0],
            vec![
                ClusterStats {
                    mean: 1.0,
                    std: 0.5
                };
                2
            ],
        )
        .unwrap()
    }

    #[test]
    fn an_arrival_moves_its_centroid_one_step() {
        let mut a = adapter(3.0);
        let got = a.arrive(&[2.0, 0.0]).unwrap();
        assert_eq!(got.cluster, 0);
        assert_eq!(got.distance, 2.0);
        // Novelty against the statistics before the update.
        assert_eq!(
            got.novelty,
            decide::novelty(
                2.0,
                ClusterStats {
                    mean: 1.0,
                    std: 0.5
                }
            )
        );
        // One MacQueen step with 3 prior images: c += (x - c) / 4.
        assert_eq!(a.centroids(), &[0.5, 0.0, 4.0, 4.0]);
        assert_eq!(a.images(), 1);
        let s = a.state("m");
        assert_eq!(s.counts, [4.0, 3.0]);
        // Welford: mean 1 + (2 - 1) / 4; m2 = 0.25 * 3 + (2 - 1) * (2 - 1.25).
        assert_eq!(s.stats[0][0], 1.25);
        assert!((s.stats[0][1] - (1.5f32 / 4.0).sqrt()).abs() < 1e-6);
    }

    #[test]
    fn a_state_of_another_shape_is_refused_and_changes_nothing() {
        let mut a = adapter(3.0);
        a.arrive(&[1.0, 1.0]).unwrap();
        let good = a.state("m");
        let mut b = adapter(3.0);
        let ground = b.state("m");
        let mut short = good.clone();
        short.centroids.pop();
        let mut nan = good.clone();
        nan.stats[1][1] = f32::NAN;
        let mut with_prior = good.clone();
        with_prior.prior = Some(PriorState {
            prior: vec![1.0],
            window: vec![],
            next: 0,
        });
        for bad in [short, nan, with_prior] {
            assert!(b.restore(&bad, "m").is_err());
            assert_eq!(b.state("m"), ground);
        }
        assert!(matches!(
            b.restore(&good, "n"),
            Err(RestoreError::OtherModel { .. })
        ));
        b.restore(&good, "m").unwrap();
        assert_eq!(b.state("m"), good);
    }
}
