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
}
