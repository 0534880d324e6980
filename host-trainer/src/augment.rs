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

/// Strong augmentation of the contrastive branches: shape (flip, random resized crop, rotation)
/// then pixel (Gaussian blur, color jitter, desaturation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrongAugment {
    /// Probability of a horizontal flip.
    pub hflip: f64,
    /// Smallest crop area as a fraction of the image (random resized crop; 1 = no crop).
    pub crop_min_area: f64,
    /// Crop aspect ratios are drawn log-uniformly in `[1/max, max]`.
    pub crop_max_aspect: f64,
    /// Largest rotation in degrees (uniform in +-).
    pub rotate_deg: f64,
    /// Probability of a Gaussian blur.
    pub blur: f64,
    /// Blur sigma range in pixels `[min, max]`.
    pub blur_sigma: [f64; 2],
    /// Brightness offset range, in normalized units (+-).
    pub brightness: f64,
    /// Contrast factor range (1 +- contrast).
    pub contrast: f64,
    /// Saturation factor range (1 +- saturation).
    pub saturation: f64,
    /// Probability of replacing the image by its gray version.
    pub grayscale: f64,
}

impl Default for StrongAugment {
    fn default() -> Self {
        Self {
            hflip: 0.5,
            crop_min_area: 0.35,
            crop_max_aspect: 4.0 / 3.0,
            rotate_deg: 20.0,
            blur: 0.5,
            blur_sigma: [0.1, 1.5],
            brightness: 0.3,
            contrast: 0.3,
            saturation: 0.3,
            grayscale: 0.2,
        }
    }
}

/// Flip, random resized crop and rotation of each image in one bilinear resampling (zeros
/// outside the source).
pub fn shape_transform(x: &Tensor, cfg: &StrongAugment, rng: &mut ChaCha8Rng) -> Tensor {
    let b = x.size()[0];
    let mut theta = Vec::with_capacity(b as usize * 6);
    for _ in 0..b {
        let area = rng.random_range(cfg.crop_min_area.clamp(0.01, 1.0)..=1.0);
        let log_r = cfg.crop_max_aspect.max(1.0).ln();
        let aspect = rng.random_range(-log_r..=log_r).exp();
        let sx = (area * aspect).sqrt().min(1.0);
        let sy = (area / aspect).sqrt().min(1.0);
        let cx = rng.random_range(-(1.0 - sx)..=(1.0 - sx));
        let cy = rng.random_range(-(1.0 - sy)..=(1.0 - sy));
        let a = rng
            .random_range(-cfg.rotate_deg.abs()..=cfg.rotate_deg.abs())
            .to_radians();
        let flip = if rng.random_bool(cfg.hflip.clamp(0.0, 1.0)) {
            -1.0
        } else {
            1.0
        };
        let (c, s) = (a.cos(), a.sin());
        theta.extend([c * sx * flip, -s * sy, cx, s * sx * flip, c * sy, cy].map(|v| v as f32));
    }
    let theta = Tensor::from_slice(&theta)
        .view([b, 2, 3])
        .to_device(x.device())
        .to_kind(x.kind());
    let grid = Tensor::affine_grid_generator(&theta, x.size(), false);
    x.grid_sampler(&grid, 0, 0, false)
}

/// Separable Gaussian blur of each image with probability `p`, sigma uniform in `sigma`.
pub fn gaussian_blur(x: &Tensor, p: f64, sigma: [f64; 2], rng: &mut ChaCha8Rng) -> Tensor {
    let (lo, hi) = (sigma[0].max(1e-3), sigma[1].max(sigma[0].max(1e-3)));
    let images: Vec<Tensor> = (0..x.size()[0])
        .map(|i| {
            let img = x.get(i).unsqueeze(0);
            let s = rng.random_range(lo..=hi);
            if !rng.random_bool(p.clamp(0.0, 1.0)) {
                return img;
            }
            let r = (3.0 * s).ceil().max(1.0) as i64;
            let k: Vec<f32> = (-r..=r)
                .map(|t| (-((t * t) as f64) / (2.0 * s * s)).exp() as f32)
                .collect();
            let sum: f32 = k.iter().sum();
            let k = Tensor::from_slice(&k.iter().map(|v| v / sum).collect::<Vec<_>>())
                .to_device(x.device())
                .to_kind(x.kind());
            let kh = k.view([1, 1, 1, -1]).repeat([3, 1, 1, 1]);
            let kv = k.view([1, 1, -1, 1]).repeat([3, 1, 1, 1]);
            let none = None::<Tensor>;
            img.reflection_pad2d([r, r, r, r])
                .conv2d(&kh, none.as_ref(), [1, 1], [0, 0], [1, 1], 3)
                .conv2d(&kv, none.as_ref(), [1, 1], [0, 0], [1, 1], 3)
        })
        .collect();
    Tensor::cat(&images, 0)
}

/// Saturation factor per image in `1 +- saturation` (blend with the gray image).
pub fn saturate(x: &Tensor, saturation: f64, rng: &mut ChaCha8Rng) -> Tensor {
    let st = saturation as f32;
    let fac = per_sample(rng, x.size()[0], |r| {
        if st > 0.0 {
            r.random_range((1.0 - st).max(0.0)..=1.0 + st)
        } else {
            1.0
        }
    });
    let gray = x.mean_dim(&[1i64][..], true, Kind::Float);
    (x - &gray) * column(&fac, x) + gray
}

/// The strong (contrastive) augmentation pipeline.
pub fn strong_batch(x: &Tensor, cfg: &StrongAugment, rng: &mut ChaCha8Rng) -> Tensor {
    let x = shape_transform(x, cfg, rng);
    let x = gaussian_blur(&x, cfg.blur, cfg.blur_sigma, rng);
    let x = color_jitter(&x, cfg.brightness, cfg.contrast, rng);
    let x = saturate(&x, cfg.saturation, rng);
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
    fn strong_is_deterministic_under_a_seed_and_shape_preserving() {
        let cfg = StrongAugment::default();
        let a = strong_batch(&batch(), &cfg, &mut ChaCha8Rng::seed_from_u64(9));
        let b = strong_batch(&batch(), &cfg, &mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(a.size(), vec![2, 3, 8, 8]);
        assert!(a.equal(&b));
        let c = strong_batch(&batch(), &cfg, &mut ChaCha8Rng::seed_from_u64(10));
        assert!(!a.equal(&c));
    }

    #[test]
    fn identity_shape_transform_and_blur_keep_the_image() {
        let none = StrongAugment {
            hflip: 0.0,
            crop_min_area: 1.0,
            crop_max_aspect: 1.0,
            rotate_deg: 0.0,
            ..Default::default()
        };
        let x = batch();
        let y = shape_transform(&x, &none, &mut ChaCha8Rng::seed_from_u64(1));
        assert!(f64::try_from((y - &x).abs().max()).unwrap() < 1e-4);
        let flipped = StrongAugment { hflip: 1.0, ..none };
        let y = shape_transform(&x, &flipped, &mut ChaCha8Rng::seed_from_u64(1));
        assert!(f64::try_from((y - x.flip([3])).abs().max()).unwrap() < 1e-4);
        // A constant image stays constant under blur (reflection padding, kernel sums to 1).
        let c = Tensor::ones([1, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let blurred = gaussian_blur(&c, 1.0, [1.0, 1.0], &mut ChaCha8Rng::seed_from_u64(1));
        assert!(f64::try_from((blurred - &c).abs().max()).unwrap() < 1e-5);
    }

    #[test]
    fn blur_spreads_an_impulse_symmetrically() {
        let x = Tensor::zeros([1, 3, 9, 9], (Kind::Float, tch::Device::Cpu));
        let _ = x.get(0).get(0).get(4).get(4).fill_(1.0);
        let y = gaussian_blur(&x, 1.0, [1.0, 1.0], &mut ChaCha8Rng::seed_from_u64(1));
        let v = |r: i64, c: i64| f64::try_from(y.get(0).get(0).get(r).get(c)).unwrap();
        assert!(v(4, 4) < 1.0 && v(4, 4) > v(4, 5) && v(4, 5) > 0.0);
        assert!((v(4, 3) - v(4, 5)).abs() < 1e-6 && (v(3, 4) - v(5, 4)).abs() < 1e-6);
        // Mass is kept (the impulse is far from the border).
        assert!((f64::try_from(y.get(0).get(0).sum(Kind::Float)).unwrap() - 1.0).abs() < 1e-4);
    }

    #[test]
    fn gray_has_equal_channels() {
        let g = grayscale(&batch(), 1.0, &mut ChaCha8Rng::seed_from_u64(0));
        assert!(g.get(0).get(0).equal(&g.get(0).get(2)));
    }
}
