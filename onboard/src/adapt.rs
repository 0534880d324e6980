//! The rover adapting to its own image stream, without labels: the class prior re-estimated by
//! EM over a window of recent posteriors ([`decide::PriorAdapter`]) and the ground centroids
//! moved by sequential k-means ([`decide::adapt_nearest`]), with each cluster's distance
//! statistics (novelty) following its centroid. Causal: what an image is told uses only the
//! images before it and itself, in the order they arrive.

use crate::bundle::{Bundle, PRIOR_WINDOW_CAPACITY};
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
}

impl StreamAdapter {
    /// Starts from the bundle's ground centroids (each counting as
    /// `adaptation.centroid_prior_count` images) and its training class prior; without a
    /// `calibration` section in the manifest only the centroids adapt.
    pub fn new(bundle: &Bundle) -> Result<Self, DecideError> {
        let m = &bundle.manifest;
        let a = m.adaptation;
        let prior = match &m.calibration {
            Some(c) => Some(Box::new(PriorAdapter::new(
                &c.class_prior,
                PriorConfig {
                    window: a.prior_window,
                    max_iterations: a.prior_max_iterations,
                    tolerance: a.prior_tolerance,
                    floor: a.prior_floor,
                },
            )?)),
            None => None,
        };
        let k = m.clustering.centroids.len();
        Ok(Self {
            prior,
            centroids: bundle.centroids_flat.clone(),
            counts: vec![a.centroid_prior_count; k],
            stats: m
                .clustering
                .distance_stats
                .iter()
                .map(|s| ClusterStats {
                    mean: s.mean,
                    std: s.std,
                })
                .collect(),
        })
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
    /// then moves the nearest one toward it.
    pub fn arrive(&mut self, latent: &[f32]) -> Result<Arrival, DecideError> {
        let (near, stats) = decide::adapt_nearest(
            latent,
            &mut self.centroids,
            &mut self.counts,
            &mut self.stats,
        )?;
        Ok(Arrival {
            cluster: near.cluster,
            distance: near.distance,
            novelty: decide::novelty(near.distance, stats),
        })?;
        let novelty = decide::novelty(near.distance, stats);
        decide::adapt_nearest(
            latent,
            &mut self.centroids,
            &mut self.counts,
            &mut self.stats,
        )?;
        Ok(Arrival {
            cluster: near.cluster,
            distance: near.distance,
            novelty,
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
