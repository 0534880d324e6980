//! k-means with k-means++ seeding, restarts, tolerance and an iteration cap; seeded and
//! deterministic. Points are rows of a row-major `[n, d]` f32 slice.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// k-means settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KMeansConfig {
    /// Number of clusters.
    pub k: usize,
    /// Independent restarts; the lowest inertia wins.
    pub restarts: usize,
    /// Iteration cap per restart.
    pub max_iter: usize,
    /// Stop when no centroid moves farther than this.
    pub tol: f32,
    /// Seed.
    pub seed: u64,
}

/// A fitted clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// Centroids, row-major `[k, d]`.
    pub centroids: Vec<f32>,
    /// Dimension d.
    pub dim: usize,
    /// Cluster of each input point.
    pub assignment: Vec<usize>,
    /// Sum of squared distances of points to their centroids.
    pub inertia: f64,
    /// Iterations run by the winning restart.
    pub iterations: usize,
}

fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Index and squared distance of the centroid nearest to `p`.
pub fn nearest(p: &[f32], centroids: &[f32], dim: usize) -> (usize, f32) {
    let mut best = (0, f32::INFINITY);
    for (j, c) in centroids.chunks_exact(dim).enumerate() {
        let d = sq_dist(p, c);
        if d < best.1 {
            best = (j, d);
        }
    }
    best
}

fn plus_plus_init(data: &[f32], dim: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = data.len() / dim;
    let mut centroids = Vec::with_capacity(k * dim);
    let first = rng.random_range(0..n);
    centroids.extend_from_slice(&data[first * dim..(first + 1) * dim]);
    let mut d2: Vec<f64> = data
        .chunks_exact(dim)
        .map(|p| f64::from(sq_dist(p, &centroids[..dim])))
        .collect();
    for _ in 1..k {
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let mut r = rng.random::<f64>() * total;
            let mut idx = n - 1;
            for (i, &w) in d2.iter().enumerate() {
                if r < w {
                    idx = i;
                    break;
                }
                r -= w;
            }
            idx
        } else {
            rng.random_range(0..n)
        };
        let c = data[pick * dim..(pick + 1) * dim].to_vec();
        for (p, best) in data.chunks_exact(dim).zip(d2.iter_mut()) {
            *best = best.min(f64::from(sq_dist(p, &c)));
        }
        centroids.extend_from_slice(&c);
    }
    centroids
}

fn lloyd(data: &[f32], dim: usize, mut centroids: Vec<f32>, cfg: &KMeansConfig) -> KMeans {
    let n = data.len() / dim;
    let k = cfg.k;
    let mut assignment = vec![0usize; n];
    let mut iterations = 0;
    for it in 0..cfg.max_iter {
        iterations = it + 1;
        for (a, p) in assignment.iter_mut().zip(data.chunks_exact(dim)) {
            *a = nearest(p, &centroids, dim).0;
        }
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (&a, p) in assignment.iter().zip(data.chunks_exact(dim)) {
            counts[a] += 1;
            for (s, v) in sums[a * dim..(a + 1) * dim].iter_mut().zip(p) {
                *s += f64::from(*v);
            }
        }
        let mut new = vec![0f32; k * dim];
        for j in 0..k {
            if counts[j] == 0 {
                // Empty cluster: move it to the point farthest from its centroid.
                let far = data
                    .chunks_exact(dim)
                    .enumerate()
                    .map(|(i, p)| {
                        (
                            i,
                            sq_dist(
                                p,
                                &centroids[assignment[i] * dim..(assignment[i] + 1) * dim],
                            ),
                        )
                    })
                    .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                    .map_or(0, |(i, _)| i);
                new[j * dim..(j + 1) * dim].copy_from_slice(&data[far * dim..(far + 1) * dim]);
                assignment[far] = j;
            } else {
                for (dst, s) in new[j * dim..(j + 1) * dim]
                    .iter_mut()
                    .zip(&sums[j * dim..(j + 1) * dim])
                {
                    *dst = (*s / counts[j] as f64) as f32;
                }
            }
        }
        let shift = centroids
            .chunks_exact(dim)
            .zip(new.chunks_exact(dim))
            .map(|(a, b)| sq_dist(a, b).sqrt())
            .fold(0f32, f32::max);
        centroids = new;
        if shift <= cfg.tol {
            break;
        }
    }
    let mut inertia = 0f64;
    for (a, p) in assignment.iter_mut().zip(data.chunks_exact(dim)) {
        let (j, d) = nearest(p, &centroids, dim);
        *a = j;
        inertia += f64::from(d);
    }
    KMeans {
        centroids,
        dim,
        assignment,
        inertia,
        iterations,
    }
}

/// Fits k-means to the `[n, dim]` points in `data`.
pub fn fit(data: &[f32], dim: usize, cfg: &KMeansConfig) -> anyhow::Result<KMeans> {
    anyhow::ensure!(
        dim > 0 && data.len().is_multiple_of(dim),
        "data length {} is not a multiple of dim {dim}",
        data.len()
    );
    let n = data.len() / dim;
    anyhow::ensure!(
        cfg.k > 0 && n >= cfg.k,
        "k-means needs at least k = {} points, got {n}",
        cfg.k
    );
    anyhow::ensure!(
        data.iter().all(|v| v.is_finite()),
        "k-means input holds non-finite values"
    );
    let mut best: Option<KMeans> = None;
    for r in 0..cfg.restarts.max(1) {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(r as u64 * 0x9E37_79B9));
        let init = plus_plus_init(data, dim, cfg.k, &mut rng);
        let fit = lloyd(data, dim, init, cfg);
        if best.as_ref().is_none_or(|b| fit.inertia < b.inertia) {
            best = Some(fit);
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("k-means produced no result"))
}

/// Per-cluster statistics of point-to-centroid Euclidean distances: (count, mean, std, p95).
/// `std` is floored at a small positive value so novelty stays finite.
pub fn distance_stats(data: &[f32], km: &KMeans) -> Vec<(u32, f32, f32, f32)> {
    let k = km.centroids.len() / km.dim;
    let mut per: Vec<Vec<f32>> = vec![Vec::new(); k];
    for (p, &a) in data.chunks_exact(km.dim).zip(&km.assignment) {
        per[a].push(sq_dist(p, &km.centroids[a * km.dim..(a + 1) * km.dim]).sqrt());
    }
    let all_mean = {
        let all: Vec<f32> = per.iter().flatten().copied().collect();
        all.iter().sum::<f32>() / all.len().max(1) as f32
    };
    per.into_iter()
        .map(|mut d| {
            if d.is_empty() {
                return (0, all_mean, all_mean.max(1e-3), all_mean);
            }
            d.sort_by(f32::total_cmp);
            let n = d.len() as f32;
            let mean = d.iter().sum::<f32>() / n;
            let var = d.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
            let p95 = d[((d.len() - 1) as f32 * 0.95).round() as usize];
            (
                d.len() as u32,
                mean,
                var.sqrt().max(1e-3 * mean.max(1e-3)),
                p95,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planted(seed: u64, k: usize, per: usize, dim: usize) -> (Vec<f32>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centers: Vec<Vec<f32>> = (0..k)
            .map(|_| (0..dim).map(|_| rng.random_range(-50.0..50.0)).collect())
            .collect();
        let mut data = Vec::new();
        let mut truth = Vec::new();
        for i in 0..k * per {
            let c = i % k;
            for v in &centers[c] {
                data.push(v + rng.random_range(-1.0..1.0));
            }
            truth.push(c);
        }
        (data, truth)
    }

    #[test]
    fn recovers_planted_clusters() {
        let (data, truth) = planted(3, 6, 40, 5);
        let cfg = KMeansConfig {
            k: 6,
            restarts: 4,
            max_iter: 100,
            tol: 1e-6,
            seed: 1,
        };
        let km = fit(&data, 5, &cfg).unwrap();
        assert!((onboard::metrics::hungarian_accuracy(&truth, &km.assignment) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn is_deterministic_under_a_seed() {
        let (data, _) = planted(4, 4, 30, 3);
        let cfg = KMeansConfig {
            k: 4,
            restarts: 3,
            max_iter: 50,
            tol: 0.0,
            seed: 9,
        };
        assert_eq!(fit(&data, 3, &cfg).unwrap(), fit(&data, 3, &cfg).unwrap());
    }

    #[test]
    fn refuses_too_few_points_and_nan() {
        let cfg = KMeansConfig {
            k: 3,
            restarts: 1,
            max_iter: 10,
            tol: 0.0,
            seed: 0,
        };
        assert!(fit(&[0.0, 1.0], 1, &cfg).is_err());
        assert!(fit(&[0.0, f32::NAN, 1.0, 2.0], 1, &cfg).is_err());
    }
}
