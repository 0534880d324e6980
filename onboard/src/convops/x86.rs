//! x86-64 SIMD tiles for [`super::pointwise_kernel`]: AVX-512F and AVX2 + FMA, entered only
//! after run-time feature detection, on lengths the caller has checked.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::depthwise_kernel::{tap_range, Clamp, Geometry};
use super::pointwise_kernel::{Packed, PANEL};

/// Whether [`gemm_avx512`] can run on this CPU.
pub fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Whether [`gemm_avx2`] can run on this CPU.
pub fn has_avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// `out = clamp(x * w + bias)` with `x` `[pixels, ci]`, `out` `[pixels, co]`, in tiles of 12
/// pixels by one 32-channel panel (two 16-lane registers each: 24 accumulators).
///
/// # Safety
/// The CPU supports AVX-512F ([`has_avx512`]); the lengths match at one pixel or more
/// (`pointwise_kernel::pixels` is `Some`).
#[target_feature(enable = "avx512f")]
pub unsafe fn gemm_avx512(x: &[f32], w: &Packed, clamp: Clamp, out: &mut [f32]) {
    let (ci, co) = (w.ci, w.co);
    let pixels = x.len() / ci;
    let (lo, hi) = (_mm512_set1_ps(clamp.lo), _mm512_set1_ps(clamp.hi));
    for p in 0..co.div_ceil(PANEL) {
        let col = p * PANEL;
        let cols = PANEL.min(co - col);
        let mask: __mmask16 = (1u32 << cols.min(16)).wrapping_sub(1) as u16;
        let mask_hi: __mmask16 = (1u32 << cols.saturating_sub(16)).wrapping_sub(1) as u16;
        let t = Tile512 {
            x: x.as_ptr(),
            ci,
            panel: w.panels[p * ci * PANEL..].as_ptr(),
            bias: w.bias[col..].as_ptr(),
            lo,
            hi,
            out: out[col..].as_mut_ptr(),
            co,
            mask: [mask, mask_hi],
        };
        let full = pixels / 12 * 12;
        // SAFETY (all tiles): rows p0..p0 + R are below `pixels`, so every x and out access
        // stays inside the slices whose lengths the caller checked; the panel holds `ci * PANEL`
        // values and the bias `PANEL` values from `col`; the masks cover only columns below co.
        unsafe {
            for p0 in (0..full).step_by(12) {
                t.run::<12>(p0);
            }
            // The remainder in one tile, so that each weight panel is read once per pixel set.
            match pixels - full {
                0 => {}
                1 => t.run::<1>(full),
                2 => t.run::<2>(full),
                3 => t.run::<3>(full),
                4 => t.run::<4>(full),
                5 => t.run::<5>(full),
                6 => t.run::<6>(full),
                7 => t.run::<7>(full),
                8 => t.run::<8>(full),
                9 => t.run::<9>(full),
                10 => t.run::<10>(full),
                _ => t.run::<11>(full),
            }
        }
    }
}

/// One panel's operands for [`gemm_avx512`].
struct Tile512 {
    x: *const f32,
    ci: usize,
    panel: *const f32,
    bias: *const f32,
    lo: __m512,
    hi: __m512,
    out: *mut f32,
    co: usize,
    mask: [__mmask16; 2],
}

impl Tile512 {
    /// Pixels `p0..p0 + R` of this panel.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run<const R: usize>(&self, p0: usize) {
        unsafe {
            let b0 = _mm512_loadu_ps(self.bias);
            let b1 = _mm512_loadu_ps(self.bias.add(16));
            let mut a0 = [b0; R];
            let mut a1 = [b1; R];
            let x = self.x.add(p0 * self.ci);
            for k in 0..self.ci {
                let w = self.panel.add(k * PANEL);
                let (w0, w1) = (_mm512_loadu_ps(w), _mm512_loadu_ps(w.add(16)));
                for r in 0..R {
                    let xv = _mm512_set1_ps(*x.add(r * self.ci + k));
                    a0[r] = _mm512_fmadd_ps(xv, w0, a0[r]);
                    a1[r] = _mm512_fmadd_ps(xv, w1, a1[r]);
                }
            }
            for r in 0..R {
                let o = self.out.add((p0 + r) * self.co);
                let v0 = _mm512_min_ps(_mm512_max_ps(a0[r], self.lo), self.hi);
                let v1 = _mm512_min_ps(_mm512_max_ps(a1[r], self.lo), self.hi);
                _mm512_mask_storeu_ps(o, self.mask[0], v0);
                _mm512_mask_storeu_ps(o.add(16), self.mask[1], v1);
            }
        }
    }
}

/// [`gemm_avx512`] for AVX2 + FMA: tiles of 6 pixels by 16 channels (two 8-lane registers),
/// each panel in two halves.
///
/// # Safety
/// The CPU supports AVX2 and FMA ([`has_avx2_fma`]); lengths as for [`gemm_avx512`].
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gemm_avx2(x: &[f32], w: &Packed, clamp: Clamp, out: &mut [f32]) {
    let (ci, co) = (w.ci, w.co);
    let pixels = x.len() / ci;
    for p in 0..co.div_ceil(PANEL) {
        for half in [0, 16] {
            let col = p * PANEL + half;
            if col >= co {
                break;
            }
            let t = Tile256 {
                x: x.as_ptr(),
                ci,
                panel: w.panels[p * ci * PANEL + half..].as_ptr(),
                bias: w.bias[col..].as_ptr(),
                clamp,
                out: out[col..].as_mut_ptr(),
                co,
                cols: 16.min(co - col),
            };
            let mut p0 = 0;
            // SAFETY: as in `gemm_avx512`; partial tiles store only `cols` values per row.
            unsafe {
                while p0 + 6 <= pixels {
                    t.run::<6>(p0);
                    p0 += 6;
                }
                if p0 + 4 <= pixels {
                    t.run::<4>(p0);
                    p0 += 4;
                }
                if p0 + 2 <= pixels {
                    t.run::<2>(p0);
                    p0 += 2;
                }
                if p0 < pixels {
                    t.run::<1>(p0);
                }
            }
        }
    }
}

/// One half panel's operands for [`gemm_avx2`].
struct Tile256 {
    x: *const f32,
    ci: usize,
    panel: *const f32,
    bias: *const f32,
    clamp: Clamp,
    out: *mut f32,
    co: usize,
    cols: usize,
}

impl Tile256 {
    /// Pixels `p0..p0 + R` of this half panel.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn run<const R: usize>(&self, p0: usize) {
        unsafe {
            let b0 = _mm256_loadu_ps(self.bias);
            let b1 = _mm256_loadu_ps(self.bias.add(8));
            let mut a0 = [b0; R];
            let mut a1 = [b1; R];
            let x = self.x.add(p0 * self.ci);
            for k in 0..self.ci {
                let w = self.panel.add(k * PANEL);
                let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
                for r in 0..R {
                    let xv = _mm256_set1_ps(*x.add(r * self.ci + k));
                    a0[r] = _mm256_fmadd_ps(xv, w0, a0[r]);
                    a1[r] = _mm256_fmadd_ps(xv, w1, a1[r]);
                }
            }
            let (lo, hi) = (_mm256_set1_ps(self.clamp.lo), _mm256_set1_ps(self.clamp.hi));
            for r in 0..R {
                let o = self.out.add((p0 + r) * self.co);
                let v0 = _mm256_min_ps(_mm256_max_ps(a0[r], lo), hi);
                let v1 = _mm256_min_ps(_mm256_max_ps(a1[r], lo), hi);
                if self.cols == 16 {
                    _mm256_storeu_ps(o, v0);
                    _mm256_storeu_ps(o.add(8), v1);
                } else {
                    let mut tmp = [0.0f32; 16];
                    _mm256_storeu_ps(tmp.as_mut_ptr(), v0);
                    _mm256_storeu_ps(tmp.as_mut_ptr().add(8), v1);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), o, self.cols);
                }
            }
        }
    }
}

/// [`super::depthwise_hwc`] with AVX-512F for 3x3 and 5x5 kernels: per block of 16 channels the
/// kernel's taps stay in registers while the block's output pixels are computed; pixels whose
/// window crosses the padding read their taps from memory. Returns false for other kernel
/// sizes (the caller runs the generic kernel).
///
/// # Safety
/// The CPU supports AVX-512F ([`has_avx512`]); the lengths match `g` (as
/// `depthwise_kernel::lengths_match` checks).
#[target_feature(enable = "avx512f")]
pub unsafe fn depthwise_avx512(
    x: &[f32],
    w_taps: &[f32],
    bias: &[f32],
    g: &Geometry,
    clamp: Clamp,
    out: &mut [f32],
) -> bool {
    let d = Depthwise512 {
        x: x.as_ptr(),
        w: w_taps.as_ptr(),
        bias: bias.as_ptr(),
        out: out.as_mut_ptr(),
        g: *g,
        lo: _mm512_set1_ps(clamp.lo),
        hi: _mm512_set1_ps(clamp.hi),
    };
    // SAFETY: lengths as the caller guarantees; every access below is inside the planes.
    unsafe {
        match g.kernel {
            [3, 3] => d.run::<3>(),
            [5, 5] => d.run::<5>(),
            _ => return false,
        }
    }
    true
}

/// Operands of [`depthwise_avx512`].
struct Depthwise512 {
    x: *const f32,
    w: *const f32,
    bias: *const f32,
    out: *mut f32,
    g: Geometry,
    lo: __m512,
    hi: __m512,
}

impl Depthwise512 {
    /// A `K x K` kernel, channel block by channel block.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run<const K: usize>(&self) {
        let g = &self.g;
        let (c, [h, wd], [ho, wo], s, [pt, pl]) = (g.channels, g.input, g.output, g.stride, g.pad);
        // Taps `k` with `0 <= o * s + k - pad < len`.
        let taps = |o: usize, pad: usize, len: usize| tap_range(o, s, pad, len, K);
        unsafe {
            for cb in (0..c).step_by(16) {
                let mask: __mmask16 = ((1u32 << (c - cb).min(16)) - 1) as u16;
                let tap = |t: usize| _mm512_maskz_loadu_ps(mask, self.w.add(t * c + cb));
                let wr: [[__m512; K]; K] =
                    std::array::from_fn(|ky| std::array::from_fn(|kx| tap(ky * K + kx)));
                let b = _mm512_maskz_loadu_ps(mask, self.bias.add(cb));
                for y in 0..ho {
                    let (ky0, ky1) = taps(y, pt, h);
                    for xo in 0..wo {
                        let (kx0, kx1) = taps(xo, pl, wd);
                        let mut acc = b;
                        if ky1 - ky0 == K && kx1 - kx0 == K {
                            let base = self.x.add(((y * s - pt) * wd + xo * s - pl) * c + cb);
                            for (ky, row) in wr.iter().enumerate() {
                                for (kx, wv) in row.iter().enumerate() {
                                    let v =
                                        _mm512_maskz_loadu_ps(mask, base.add((ky * wd + kx) * c));
                                    acc = _mm512_fmadd_ps(v, *wv, acc);
                                }
                            }
                        } else {
                            for ky in ky0..ky1 {
                                let row = (y * s + ky - pt) * wd;
                                for kx in kx0..kx1 {
                                    let at = (row + xo * s + kx - pl) * c + cb;
                                    let v = _mm512_maskz_loadu_ps(mask, self.x.add(at));
                                    acc = _mm512_fmadd_ps(v, tap(ky * K + kx), acc);
                                }
                            }
                        }
                        let v = _mm512_min_ps(_mm512_max_ps(acc, self.lo), self.hi);
                        _mm512_mask_storeu_ps(self.out.add((y * wo + xo) * c + cb), mask, v);
                    }
                }
            }
        }
    }
}
