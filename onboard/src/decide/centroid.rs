use super::DecideError;

/// Distance statistics of the training points assigned to one cluster (Euclidean distance to
/// the centroid in the bundle's latent space).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterStats {
    /// Mean distance to the centroid.
    pub mean: f32,
    /// Standard deviation of the distance; must be > 0.
    pub std: f32,
}

/// Result of a nearest-centroid search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nearest {
    /// Index of the nearest centroid.
    pub cluster: usize,
    /// Euclidean distance to it.
    pub distance: f32,
}

/// Finds the centroid nearest to `latent`.
///
/// `centroids` is row-major `[k, dim]` with `dim = latent.len()`; ties keep the lower index.
pub fn nearest_centroid(latent: &[f32], centroids: &[f32]) -> Result<Nearest, DecideError> {
    let dim = latent.len();
    if dim == 0 || centroids.is_empty() {
        return Err(DecideError::Empty);
    }
    if !centroids.len().is_multiple_of(dim) {
        return Err(DecideError::LengthMismatch {
            expected: (centroids.len() / dim + 1) * dim,
            got: centroids.len(),
        });
    }
    let mut best = Nearest {
        cluster: 0,
        distance: f32::INFINITY,
    };
    let mut best_sq = f32::INFINITY;
    for (i, c) in centroids.chunks_exact(dim).enumerate() {
        let mut sq = 0.0f32;
        for (a, b) in latent.iter().zip(c) {
            let d = a - b;
            sq += d * d;
        }
        if sq < best_sq {
            best_sq = sq;
            best.cluster = i;
        }
    }
    best.distance = libm::sqrtf(best_sq);
    Ok(best)
}

/// Novelty of a point at `distance` from its centroid: how many standard deviations it lies
/// beyond the cluster's mean distance, floored at 0. Non-finite inputs give 0.
pub fn novelty(distance: f32, stats: ClusterStats) -> f32 {
    let z = (distance - stats.mean) / stats.std;
    if z.is_finite() && z > 0.0 {
        z
    } else {
        0.0
    }
}

/// Sequential (MacQueen 1967) k-means step on the rover's own stream: finds the centroid
/// nearest to `latent` and returns it with that cluster's statistics as the image arrived (for
/// its novelty), then
/// moves that centroid toward it, `n_j += 1`, `c_j += (x - c_j) / n_j`, and updates the
/// cluster's distance statistics with the same weight (Welford), so novelty follows the
/// adapted centroids. A starting count `n_j` is a prior: the ground centroid counts as `n_j`
/// points already seen, so one odd image cannot drag it away.
///
/// `centroids` is row-major `[k, dim]` with `dim = latent.len()`; `counts` and `stats` hold
/// one entry per centroid (counts finite and >= 1). On error nothing changes; a non-finite
/// `latent` is refused ([`DecideError::Invalid`]) so it cannot poison a centroid.
pub fn adapt_nearest(
    latent: &[f32],
    centroids: &mut [f32],
    counts: &mut [f32],
    stats: &mut [ClusterStats],
) -> Result<(Nearest, ClusterStats), DecideError> {
    let near = nearest_centroid(latent, centroids)?;
    let k = centroids.len() / latent.len();
    for len in [counts.len(), stats.len()] {
        if len != k {
            return Err(DecideError::LengthMismatch {
                expected: k,
                got: len,
            });
        }
    }
    if !near.distance.is_finite() {
        return Err(DecideError::Invalid("latent (must be finite)"));
    }
    let j = near.cluster;
    let n_old = counts[j];
    if !(n_old.is_finite() && n_old >= 1.0) {
        return Err(DecideError::Invalid(
            "cluster count (must be finite and >= 1)",
        ));
    }
    let n = n_old + 1.0;
    let dim = latent.len();
    for (c, x) in centroids[j * dim..(j + 1) * dim].iter_mut().zip(latent) {
        *c += (x - *c) / n;
    }
    counts[j] = n;
    let s = &mut stats[j];
    let arrived = *s;
    let d = near.distance;
    let mean = s.mean + (d - s.mean) / n;
    let m2 = s.std * s.std * n_old + (d - s.mean) * (d - mean);
    s.mean = mean;
    s.std = libm::sqrtf((m2 / n).max(0.0)).max(f32::MIN_POSITIVE);
    Ok((near, arrived))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nearest_and_distance() {
        let c = [0.0, 0.0, 3.0, 4.0, 10.0, 10.0];
        let n = nearest_centroid(&[3.0, 3.0], &c).unwrap();
        assert_eq!(n.cluster, 1);
        assert!((n.distance - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(nearest_centroid(&[], &[1.0]), Err(DecideError::Empty));
        assert!(matches!(
            nearest_centroid(&[1.0, 2.0], &[1.0, 2.0, 3.0]),
            Err(DecideError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn novelty_is_zero_inside_and_grows_outside() {
        let s = ClusterStats {
            mean: 2.0,
            std: 0.5,
        };
        assert_eq!(novelty(1.0, s), 0.0);
        assert!((novelty(3.0, s) - 2.0).abs() < 1e-6);
        assert_eq!(novelty(f32::NAN, s), 0.0);
    }

    const S0: ClusterStats = ClusterStats {
        mean: 1.0,
        std: 0.5,
    };

    /// Ground centroids [0,0] and [10,10], each counting as one point already seen, with
    /// distance statistics [`S0`].
    fn ground() -> ([f32; 4], [f32; 2], [ClusterStats; 2]) {
        ([0.0, 0.0, 10.0, 10.0], [1.0, 1.0], [S0, S0])
    }

    #[test]
    fn sequential_update_equals_the_batch_mean_on_a_hand_case() {
        let (mut c, mut n, mut st) = ground();
        let (a, was) = adapt_nearest(&[2.0, 0.0], &mut c, &mut n, &mut st).unwrap();
        assert_eq!((a.cluster, a.distance, was), (0, 2.0, S0));
        assert_eq!(c, [1.0, 0.0, 10.0, 10.0]);
        let (b, _) = adapt_nearest(&[4.0, 0.0], &mut c, &mut n, &mut st).unwrap();
        assert_eq!((b.cluster, b.distance), (0, 3.0));
        // Batch mean of the three points {[0,0], [2,0], [4,0]}.
        assert_eq!(c, [2.0, 0.0, 10.0, 10.0]);
        assert_eq!(n, [3.0, 1.0]);
        // Distances {prior: mean 1, var 0.25 over one point; 2; 3}: Welford gives the pooled
        // mean 2 and variance ((0.25 + 1) + 0 + 1) / 3 = 0.75.
        assert!((st[0].mean - 2.0).abs() < 1e-6, "{:?}", st[0]);
        assert!((st[0].std - 0.75f32.sqrt()).abs() < 1e-6, "{:?}", st[0]);
        assert_eq!(st[1], S0);
    }

    #[test]
    fn adapt_refuses_bad_input_and_changes_nothing() {
        let (mut c, mut n, mut st) = ground();
        assert!(adapt_nearest(&[f32::NAN, 0.0], &mut c, &mut n, &mut st).is_err());
        assert!(adapt_nearest(&[f32::INFINITY, 0.0], &mut c, &mut n, &mut st).is_err());
        assert!(adapt_nearest(&[1.0, 0.0], &mut c, &mut n[..1], &mut st).is_err());
        assert!(adapt_nearest(&[1.0, 0.0], &mut c, &mut n, &mut st[..1]).is_err());
        let mut zero = [0.0, 1.0];
        assert!(adapt_nearest(&[1.0, 0.0], &mut c, &mut zero, &mut st).is_err());
        assert_eq!((c, n, st), ground());
    }
}
