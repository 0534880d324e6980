//! Online class-prior re-estimation on the rover's own unlabeled stream (Saerens, Latinne &
//! Decaestecker 2002, "Adjusting the outputs of a classifier to new a priori probabilities").
//!
//! A classifier trained under the class prior `pi_tr` gives calibrated posteriors `p(y|x)`.
//! When the class mix of the stream drifts to an unknown prior `pi`, the posteriors under `pi`
//! are `q(y|x) ∝ p(y|x) pi(y) / pi_tr(y)`, and `pi` is found by EM over a window of recent
//! posteriors: `q_i ∝ p_i * pi / pi_tr` (E), `pi = mean_i q_i` (M), until `pi` settles.
//! [`PriorAdapter`] keeps the window in a fixed-capacity ring (`CAP` posteriors of at most
//! [`MAX_CLASSES`] classes), warm-starts EM from the previous image's prior, bounds its
//! iterations, floors every prior so no class can vanish, and allocates nothing. Causal: the
//! prediction for an image uses only the window up to and including that image.

use super::{DecideError, MAX_CLASSES};

/// EM settings of [`PriorAdapter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriorConfig {
    /// Images in the window (1..=CAP).
    pub window: usize,
    /// Most EM iterations per image (>= 1).
    pub max_iterations: u32,
    /// EM stops once no prior moves by more than this (absolute, > 0).
    pub tolerance: f32,
    /// Smallest prior any class may take, as a fraction of the uniform prior `1/C` (in
    /// `(0, 1)`), so no class is ever ruled out.
    pub floor: f32,
}

impl Default for PriorConfig {
    fn default() -> Self {
        Self {
            window: 200,
            max_iterations: 100,
            tolerance: 1e-5,
            floor: 0.01,
        }
    }
}

/// What one adaptation step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriorStep {
    /// EM iterations run for this image.
    pub iterations: u32,
    /// Whether EM settled within the tolerance before the iteration bound.
    pub converged: bool,
    /// Posteriors in the window, this image's included.
    pub window_len: usize,
}

/// Class-prior adapter over a ring of the last `CAP` posteriors.
#[derive(Debug, Clone)]
pub struct PriorAdapter<const CAP: usize> {
    classes: usize,
    config: PriorConfig,
    train_prior: [f32; MAX_CLASSES],
    prior: [f32; MAX_CLASSES],
    window: [[f32; MAX_CLASSES]; CAP],
    len: usize,
    next: usize,
}

fn invalid(expected: usize, got: usize) -> DecideError {
    DecideError::LengthMismatch { expected, got }
}

impl<const CAP: usize> PriorAdapter<CAP> {
    /// An adapter for a classifier trained under `train_prior` (one entry per class, each > 0,
    /// summing to 1 within 1e-3); the adapted prior starts there.
    ///
    /// Errors: no classes ([`DecideError::Empty`]); more than [`MAX_CLASSES`] classes or a
    /// window outside `1..=CAP` ([`DecideError::Capacity`]); a non-finite or non-positive
    /// prior, priors not summing to 1, or a setting out of range ([`DecideError::Invalid`]).
    pub fn new(train_prior: &[f32], config: PriorConfig) -> Result<Self, DecideError> {
        let classes = train_prior.len();
        if classes == 0 {
            return Err(DecideError::Empty);
        }
        if classes > MAX_CLASSES {
            return Err(DecideError::Capacity {
                capacity: MAX_CLASSES,
                got: classes,
            });
        }
        if config.window == 0 || config.window > CAP {
            return Err(DecideError::Capacity {
                capacity: CAP,
                got: config.window,
            });
        }
        if config.max_iterations == 0 {
            return Err(DecideError::Invalid("EM iteration bound (must be >= 1)"));
        }
        if !(config.tolerance > 0.0 && config.tolerance.is_finite()) {
            return Err(DecideError::Invalid(
                "EM tolerance (must be finite and > 0)",
            ));
        }
        if !(config.floor > 0.0 && config.floor < 1.0) {
            return Err(DecideError::Invalid("prior floor (must be in (0, 1))"));
        }
        if train_prior.iter().any(|p| !p.is_finite() || *p <= 0.0) {
            return Err(DecideError::Invalid(
                "training prior (every class must be > 0)",
            ));
        }
        let sum: f32 = train_prior.iter().sum();
        if (sum - 1.0).abs() > 1e-3 {
            return Err(DecideError::Invalid("training prior (must sum to 1)"));
        }
        let mut tp = [0.0f32; MAX_CLASSES];
        for (d, s) in tp.iter_mut().zip(train_prior) {
            *d = *s / sum;
        }
        Ok(Self {
            classes,
            config,
            train_prior: tp,
            prior: tp,
            window: [[0.0; MAX_CLASSES]; CAP],
            len: 0,
            next: 0,
        })
    }

    /// The current adapted prior, one entry per class.
    pub fn prior(&self) -> &[f32] {
        &self.prior[..self.classes]
    }

    /// The training prior the adapter corrects from.
    pub fn train_prior(&self) -> &[f32] {
        &self.train_prior[..self.classes]
    }

    /// Posteriors in the window.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no posterior has been observed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The window as stored: `len()` posteriors in ring-slot order (not arrival order) and
    /// the slot the next posterior goes to. With [`Self::prior`] this is the adapter's whole
    /// state; [`Self::restore`] puts it back bit for bit, so EM sums in the same order.
    pub fn ring(&self) -> (impl Iterator<Item = &[f32]> + '_, usize) {
        let c = self.classes;
        (
            self.window[..self.len].iter().map(move |p| &p[..c]),
            self.next,
        )
    }

    /// Puts back a state read with [`Self::prior`] and [`Self::ring`] from an adapter of the
    /// same classes and window: `rows` holds the ring's posteriors row-major
    /// `[rows, classes]`, in ring-slot order. On error nothing changes.
    ///
    /// Errors: rows not a whole number of posteriors ([`DecideError::LengthMismatch`]); more
    /// rows than the window ([`DecideError::Capacity`]); a `next` slot that does not follow
    /// from the row count, a prior that is not a distribution above the floor, or a row that is
    /// not a distribution ([`DecideError::Invalid`]).
    pub fn restore(&mut self, prior: &[f32], rows: &[f32], next: usize) -> Result<(), DecideError> {
        let c = self.classes;
        let w = self.config.window;
        if prior.len() != c {
            return Err(invalid(c, prior.len()));
        }
        if !rows.len().is_multiple_of(c) {
            return Err(invalid(rows.len().next_multiple_of(c), rows.len()));
        }
        let floor = self.config.floor / c as f32;
        if !is_distribution(prior, floor * 0.999) {
            return Err(DecideError::Invalid(
                "adapted prior (must be a distribution above the floor)",
            ));
        }
        let len = rows.len() / c;
        if len > w {
            return Err(DecideError::Capacity {
                capacity: w,
                got: len,
            });
        }
        if next >= w || (len < w && next != len) {
            return Err(DecideError::Invalid(
                "window slot (does not follow the row count)",
            ));
        }
        if !rows.chunks_exact(c).all(|r| is_distribution(r, 0.0)) {
            return Err(DecideError::Invalid(
                "window posterior (must be a distribution)",
            ));
        }
        for (slot, row) in self.window.iter_mut().zip(rows.chunks_exact(c)) {
            slot[..c].copy_from_slice(row);
        }
        self.prior[..c].copy_from_slice(prior);
        self.len = len;
        self.next = next;
        Ok(())
    }

    /// Adds `posterior` (the classifier's calibrated probabilities for one image, one per
    /// class, non-negative and finite) to the window, dropping the oldest once the window is
    /// full, re-estimates the prior by EM over the window, and rewrites `posterior` in place
    /// to the adapted probabilities for this image. On error nothing changes.
    pub fn observe(&mut self, posterior: &mut [f32]) -> Result<PriorStep, DecideError> {
        let c = self.classes;
        if posterior.len() != c {
            return Err(invalid(c, posterior.len()));
        }
        let total: f32 = posterior.iter().sum();
        if posterior.iter().any(|p| !p.is_finite() || *p < 0.0)
            || !(total > 0.0 && total.is_finite())
        {
            return Err(DecideError::Invalid(
                "posterior (must be finite, >= 0, not all 0)",
            ));
        }
        let mut p = [0.0f32; MAX_CLASSES];
        for (d, s) in p.iter_mut().zip(posterior.iter()) {
            *d = *s / total;
        }
        self.window[self.next] = p;
        self.next = (self.next + 1) % self.config.window;
        self.len = (self.len + 1).min(self.config.window);
        let (iterations, converged) = self.em();
        adapt_one(&p[..c], self.ratio(), posterior);
        Ok(PriorStep {
            iterations,
            converged,
            window_len: self.len,
        })
    }

    /// `pi / pi_tr` per class.
    fn ratio(&self) -> [f32; MAX_CLASSES] {
        let mut r = [0.0f32; MAX_CLASSES];
        let c = self.classes;
        for ((r, p), t) in r
            .iter_mut()
            .zip(&self.prior[..c])
            .zip(&self.train_prior[..c])
        {
            *r = p / t;
        }
        r
    }

    /// EM over the window from the current prior; returns (iterations, converged).
    fn em(&mut self) -> (u32, bool) {
        let c = self.classes;
        let floor = self.config.floor / c as f32;
        let mut q = [0.0f32; MAX_CLASSES];
        for it in 1..=self.config.max_iterations {
            let ratio = self.ratio();
            let mut mass = [0.0f32; MAX_CLASSES];
            for p in self.window[..self.len].iter() {
                adapt_one(&p[..c], ratio, &mut q[..c]);
                for (m, v) in mass.iter_mut().zip(&q[..c]) {
                    *m += v;
                }
            }
            floor_normalize(&mut mass[..c], floor);
            let mut moved = 0.0f32;
            for (p, m) in self.prior[..c].iter_mut().zip(&mass[..c]) {
                moved = moved.max((m - *p).abs());
                *p = *m;
            }
            if moved <= self.config.tolerance {
                return (it, true);
            }
        }
        (self.config.max_iterations, false)
    }
}

/// Turns the non-negative masses `m` into a distribution whose every entry is at least
/// `floor` (`floor * m.len() < 1`): classes below it are set to `floor`, the rest share what
/// remains in proportion to their mass.
fn floor_normalize(m: &mut [f32], floor: f32) {
    let mut fixed = [false; MAX_CLASSES];
    let mut scale = 0.0f32;
    for _ in 0..=m.len() {
        let (mut free_mass, mut n_fixed) = (0.0f32, 0usize);
        for (v, f) in m.iter().zip(&fixed) {
            if *f {
                n_fixed += 1;
            } else {
                free_mass += *v;
            }
        }
        if free_mass <= 0.0 || free_mass.is_nan() {
            // Nothing left to share in proportion: the uniform prior.
            let u = 1.0 / m.len() as f32;
            m.iter_mut().for_each(|v| *v = u);
            return;
        }
        scale = (1.0 - n_fixed as f32 * floor) / free_mass;
        let mut changed = false;
        for (v, f) in m.iter().zip(fixed.iter_mut()) {
            if !*f && *v * scale < floor {
                *f = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    for (v, f) in m.iter_mut().zip(&fixed) {
        *v = if *f { floor } else { *v * scale };
    }
}

/// Whether every entry of `p` is finite and at least `min`, and they sum to 1 within 1e-3.
fn is_distribution(p: &[f32], min: f32) -> bool {
    let sum: f32 = p.iter().sum();
    p.iter().all(|v| v.is_finite() && *v >= min) && (sum - 1.0).abs() <= 1e-3
}

/// `out = p * ratio`, normalized; `p` itself where every product is 0.
fn adapt_one(p: &[f32], ratio: [f32; MAX_CLASSES], out: &mut [f32]) {
    let mut sum = 0.0f32;
    for ((o, pk), r) in out.iter_mut().zip(p).zip(ratio) {
        *o = pk * r;
        sum += *o;
    }
    if sum > 0.0 && sum.is_finite() {
        for o in out.iter_mut() {
            *o /= sum;
        }
    } else {
        out.copy_from_slice(p);
    }
}

#[cfg(test)]
mod tests;
