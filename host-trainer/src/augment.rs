//! Seeded augmentation of image batches `[b, 3, h, w]` (normalized values), on tensors.
//! Every function keeps the batch's shape, device and kind.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Augmentations applied to classifier batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Probability of a horizontal flip.
    pub hflip: f64,
    /// Largest shift in pixels (each axis; reflect-padded).
    pub max_shift: i64,
    /// Brightness offset range, in normalized units (+-).
    pub brightness: f64,
    /// Contrast factor range (1 +- contrast).
    pub contrast: f64,
    /// Probability of replacing the image by its gray version.
    pub grayscale: f64,
}

impl Default for AugmentConfig {
    /// Horizontal flips only: shifts, jitter and desaturation measured worse on validation for
    /// the small CNN (docs/RESULTS.md).
    fn default() -> Self {
        Self {
            hflip: 0.5,
            max_shift: 0,
            brightness: 0.0,
            contrast: 0.0,
            grayscale: 0.0,
        }
    }
}

impl AugmentConfig {
    /// Flip, shift, brightness/contrast jitter and desaturation.
    pub fn strong() -> Self {
        Self {
            hflip: 0.5,
            max_shift: 6,
            brightness: 0.15,
            contrast: 0.2,
            grayscale: 0.1,
        }
    }
}

fn per_sample(rng: &mut ChaCha8Rng, b: i64, f: impl Fn(&mut ChaCha8Rng) -> f32) -> Vec<f32> {
    (0..b).map(|_| f(rng)).collect()
}

fn column(v: &[f32], like: &Tensor) -> Tensor {
    Tensor::from_slice(v)
        .view([-1, 1, 1, 1])
        .to_device(like.device())
        .to_kind(like.kind())
}

/// Per-image Bernoulli(`p`) mask `[b, 1, 1, 1]` on `x`'s device.
fn sample_mask(x: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Tensor {
    let mask: Vec<bool> = (0..x.size()[0])
        .map(|_| rng.random_bool(p.clamp(0.0, 1.0)))
        .collect();
    Tensor::from_slice(&mask)
        .view([-1, 1, 1, 1])
        .to_device(x.device())
}

/// Horizontal flip of each image with probability `p`.
pub fn hflip(x: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Tensor {
    let mask = sample_mask(x, p, rng);
    x.flip([3]).where_self(&mask, x)
}

/// Shifts each image by a random offset in `[-max, max]` per axis, filling by reflection.
pub fn shift(x: &Tensor, max: i64, rng: &mut ChaCha8Rng) -> Tensor {
    if max <= 0 {
        return x.shallow_clone();
    }
    let size = x.size();
    let (h, w) = (size[2], size[3]);
    let padded = x.reflection_pad2d([max, max, max, max]);
    let crops: Vec<Tensor> = (0..size[0])
        .map(|i| {
            let dy = rng.random_range(0..=2 * max);
            let dx = rng.random_range(0..=2 * max);
            padded.get(i).narrow(1, dy, h).narrow(2, dx, w)
        })
        .collect();
    Tensor::stack(&crops, 0)
}

/// Random brightness offset and contrast factor per image (contrast around the image mean).
pub fn color_jitter(x: &Tensor, brightness: f64, contrast: f64, rng: &mut ChaCha8Rng) -> Tensor {
    let b = x.size()[0];
    let (br, ct) = (brightness as f32, contrast as f32);
    let off = per_sample(rng, b, |r| {
        if br > 0.0 {
            r.random_range(-br..=br)
        } else {
            0.0
        }
    });
    let fac = per_sample(rng, b, |r| {
        if ct > 0.0 {
            r.random_range(1.0 - ct..=1.0 + ct)
        } else {
            1.0
        }
    });
    let mean = x.mean_dim(&[1i64, 2, 3][..], true, Kind::Float);
    (x - &mean) * column(&fac, x) + &mean + column(&off, x)
}

/// Replaces each image by its channel mean (gray) with probability `p`.
pub fn grayscale(x: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Tensor {
    let mask = sample_mask(x, p, rng);
    let gray = x.mean_dim(&[1i64][..], true, Kind::Float).expand_as(x);
    gray.where_self(&mask, x)
}

/// The classifier's augmentation pipeline.
pub fn classifier_batch(x: &Tensor, cfg: &AugmentConfig, rng: &mut ChaCha8Rng) -> Tensor {
    let x = hflip(x, cfg.hflip, rng);
    let x = shift(&x, cfg.max_shift, rng);
    let x = color_jitter(&x, cfg.brightness, cfg.contrast, rng);
    grayscale(&x, cfg.grayscale, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn batch() -> Tensor {
        Tensor::arange(2 * 3 * 8 * 8, (Kind::Float, tch::Device::Cpu)).view([2, 3, 8, 8]) / 100.0
    }

    #[test]
    fn deterministic_under_a_seed_and_shape_preserving() {
        let cfg = AugmentConfig::strong();
        let a = classifier_batch(&batch(), &cfg, &mut ChaCha8Rng::seed_from_u64(5));
        let b = classifier_batch(&batch(), &cfg, &mut ChaCha8Rng::seed_from_u64(5));
        assert_eq!(a.size(), vec![2, 3, 8, 8]);
        assert!(a.equal(&b));
        let c = classifier_batch(&batch(), &cfg, &mut ChaCha8Rng::seed_from_u64(6));
        assert!(!a.equal(&c));
    }

    #[test]
    fn flip_with_p1_mirrors_and_p0_keeps() {
        let x = batch();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(hflip(&x, 1.0, &mut rng).equal(&x.flip([3])));
        assert!(hflip(&x, 0.0, &mut rng).equal(&x));
    }

    #[test]
    fn gray_has_equal_channels() {
        let g = grayscale(&batch(), 1.0, &mut ChaCha8Rng::seed_from_u64(0));
        assert!(g.get(0).get(0).equal(&g.get(0).get(2)));
    }
}
