//! x86-64 AVX-512 kernels for [`super::q8_kernel`]: the 1x1 tiles on `vpdpbusd` (VNNI: u8 x i8
//! in groups of four, summed into i32 lanes without saturation), the depthwise loop on 16 i32
//! lanes, and the requantization in f64 lanes; entered only after run-time feature detection,
//! on lengths the caller has checked.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::q8_kernel::{DepthwiseQ8, PackedQ8, Requant, GROUP, PANEL_Q8};

/// Whether [`gemm_vnni`] can run on this CPU.
pub fn has_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// Pixels per register tile (two 16-lane accumulators each: 24 of the 32 registers).
const ROWS: usize = 12;

/// `out = code(x * w + bias)` (see `q8_kernel`) with `x` `[pixels, k]`, `out` `[pixels, co]`,
/// in tiles of [`ROWS`] pixels by one 32-channel panel.
///
/// # Safety
/// The CPU supports AVX-512 F, BW, VL and VNNI ([`has_vnni`]); the lengths match at one pixel
/// or more (`q8_kernel::lengths_match`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemm_vnni(x: &[u8], w: &PackedQ8, rq: &Requant, out: &mut [u8]) {
    let (k, co) = (w.k, w.co);
    let pixels = x.len() / k;
    for p in 0..co.div_ceil(PANEL_Q8) {
        let col = p * PANEL_Q8;
        let cols = PANEL_Q8.min(co - col);
        let mask: __mmask16 = (1u32 << cols.min(16)).wrapping_sub(1) as u16;
        let mask_hi: __mmask16 = (1u32 << cols.saturating_sub(16)).wrapping_sub(1) as u16;
        let t = Tile {
            x: x.as_ptr(),
            k,
            panel: w.panel(p).as_ptr(),
            bias: w.bias[col..].as_ptr(),
            scale: rq.scale[col..].as_ptr(),
            zero_point: _mm512_set1_pd(rq.zero_point),
            out: out[col..].as_mut_ptr(),
            co,
            mask: [mask, mask_hi],
        };
        let full = pixels / ROWS * ROWS;
        // SAFETY (all tiles): rows p0..p0 + R are below `pixels`, so every x and out access
        // stays inside the slices whose lengths the caller checked (x is read in whole groups
        // of four only below `k / GROUP * GROUP`, the rest byte by byte); the panel holds
        // `k.div_ceil(GROUP) * PANEL_Q8 * GROUP` weights and bias and scale hold `PANEL_Q8`
        // values from `col`; the masks cover only columns below co.
        unsafe {
            for p0 in (0..full).step_by(ROWS) {
                t.run::<ROWS>(p0);
            }
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

/// One panel's operands for [`gemm_vnni`].
struct Tile {
    x: *const u8,
    k: usize,
    panel: *const i8,
    bias: *const i32,
    scale: *const f64,
    zero_point: __m512d,
    out: *mut u8,
    co: usize,
    mask: [__mmask16; 2],
}

impl Tile {
    /// Pixels `p0..p0 + R` of this panel.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn run<const R: usize>(&self, p0: usize) {
        unsafe {
            let b0 = _mm512_loadu_si512(self.bias.cast());
            let b1 = _mm512_loadu_si512(self.bias.add(16).cast());
            let mut a0 = [b0; R];
            let mut a1 = [b1; R];
            let x = self.x.add(p0 * self.k);
            let whole = self.k / GROUP;
            for g in 0..whole {
                let wp = self.panel.add(g * PANEL_Q8 * GROUP);
                let w0 = _mm512_loadu_si512(wp.cast());
                let w1 = _mm512_loadu_si512(wp.add(64).cast());
                for r in 0..R {
                    let four = x.add(r * self.k + g * GROUP).cast::<i32>().read_unaligned();
                    let xv = _mm512_set1_epi32(four);
                    a0[r] = _mm512_dpbusd_epi32(a0[r], xv, w0);
                    a1[r] = _mm512_dpbusd_epi32(a1[r], xv, w1);
                }
            }
            let tail = self.k - whole * GROUP;
            if tail > 0 {
                let wp = self.panel.add(whole * PANEL_Q8 * GROUP);
                let w0 = _mm512_loadu_si512(wp.cast());
                let w1 = _mm512_loadu_si512(wp.add(64).cast());
                for r in 0..R {
                    let mut bytes = [0u8; GROUP];
                    for (i, b) in bytes.iter_mut().enumerate().take(tail) {
                        *b = *x.add(r * self.k + whole * GROUP + i);
                    }
                    let xv = _mm512_set1_epi32(i32::from_le_bytes(bytes));
                    a0[r] = _mm512_dpbusd_epi32(a0[r], xv, w0);
                    a1[r] = _mm512_dpbusd_epi32(a1[r], xv, w1);
                }
            }
            let s = [0, 8, 16, 24].map(|i| _mm512_loadu_pd(self.scale.add(i)));
            for r in 0..R {
                let o = self.out.add((p0 + r) * self.co);
                let c0 = codes(a0[r], s[0], s[1], self.zero_point);
                let c1 = codes(a1[r], s[2], s[3], self.zero_point);
                _mm_mask_storeu_epi8(o.cast(), self.mask[0], c0);
                _mm_mask_storeu_epi8(o.add(16).cast(), self.mask[1], c1);
            }
        }
    }
}

/// 16 accumulators to codes: `round_half_even(clamp(f64(acc) * scale + zp, 0, 255))`, the
/// multiply and the add rounded separately (no fused multiply-add), as the definition; `s_lo`
/// and `s_hi` hold the scales of lanes 0..8 and 8..16.
#[target_feature(enable = "avx512f")]
#[inline]
fn codes(acc: __m512i, s_lo: __m512d, s_hi: __m512d, zero_point: __m512d) -> __m128i {
    let (lo, hi) = (
        _mm512_cvtepi32_pd(_mm512_castsi512_si256(acc)),
        _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64::<1>(acc)),
    );
    let q = |v: __m512d, s: __m512d| {
        let v = _mm512_add_pd(_mm512_mul_pd(v, s), zero_point);
        let v = _mm512_min_pd(_mm512_max_pd(v, _mm512_setzero_pd()), _mm512_set1_pd(255.0));
        let v = _mm512_roundscale_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
        _mm512_cvtpd_epi32(v)
    };
    let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q(lo, s_lo)), q(hi, s_hi));
    _mm512_cvtepi32_epi8(both)
}

/// Whether [`depthwise_avx512`] can run on this CPU.
pub fn has_avx512bw() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
}

/// The depthwise convolution of `q8_kernel::depthwise_q8` (same loop nest and definition) with
/// 16 channels per i32 register: the u8 inputs widened, the zero point subtracted, multiplied
/// by the widened taps; channels past the last whole 16 by the scalar definition.
///
/// # Safety
/// The CPU supports AVX-512 F and BW ([`has_avx512bw`]); the lengths match `w`'s geometry
/// (`q8_kernel::depthwise_lengths_match`).
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn depthwise_avx512(x: &[u8], w: &DepthwiseQ8, rq: &Requant, out: &mut [u8]) {
    let g = &w.geometry;
    let (c, [h, wd], [ho, wo], [kh, kw], s) = (g.channels, g.input, g.output, g.kernel, g.stride);
    let [pt, pl] = g.pad;
    let zp = _mm512_set1_epi32(w.x_zero_point);
    let zero_point = _mm512_set1_pd(rq.zero_point);
    let blocks = c / 16 * 16;
    let taps = |o: usize, pad: usize, len: usize, k: usize| {
        let lo = pad.saturating_sub(o * s);
        let hi = k.min((len + pad).saturating_sub(o * s));
        (lo, hi.max(lo))
    };
    let (xp, tp, bp, sp, op) = (
        x.as_ptr(),
        w.taps.as_ptr(),
        w.bias.as_ptr(),
        rq.scale.as_ptr(),
        out.as_mut_ptr(),
    );
    for y in 0..ho {
        let (ky0, ky1) = taps(y, pt, h, kh);
        for xo in 0..wo {
            let (kx0, kx1) = taps(xo, pl, wd, kw);
            let at = (y * wo + xo) * c;
            // SAFETY: as in the portable loop nest, every input index is a pixel inside the
            // plane (taps clipped to it) times c plus a channel below c, every tap index is
            // below kh * kw * c, bias and scale hold c values (scale padded further) and the
            // output index is below ho * wo * c; the caller checked those lengths.
            unsafe {
                let mut ch = 0;
                while ch < blocks {
                    let mut acc = _mm512_loadu_si512(bp.add(ch).cast());
                    for ky in ky0..ky1 {
                        let row = (y * s + ky - pt) * wd;
                        for kx in kx0..kx1 {
                            let from = (row + xo * s + kx - pl) * c + ch;
                            let tap = (ky * kw + kx) * c + ch;
                            let xv = _mm512_cvtepu8_epi32(_mm_loadu_si128(xp.add(from).cast()));
                            let wv = _mm512_loadu_si512(tp.add(tap).cast());
                            let prod = _mm512_mullo_epi32(_mm512_sub_epi32(xv, zp), wv);
                            acc = _mm512_add_epi32(acc, prod);
                        }
                    }
                    let (s_lo, s_hi) =
                        (_mm512_loadu_pd(sp.add(ch)), _mm512_loadu_pd(sp.add(ch + 8)));
                    let v = codes(acc, s_lo, s_hi, zero_point);
                    _mm_storeu_si128(op.add(at + ch).cast(), v);
                    ch += 16;
                }
            }
            for ch in blocks..c {
                let mut acc = w.bias[ch];
                for ky in ky0..ky1 {
                    let row = (y * s + ky - pt) * wd;
                    for kx in kx0..kx1 {
                        let v = i32::from(x[(row + xo * s + kx - pl) * c + ch]) - w.x_zero_point;
                        acc += v * w.taps[(ky * kw + kx) * c + ch];
                    }
                }
                out[at + ch] = rq.code(acc, ch);
            }
        }
    }
}
