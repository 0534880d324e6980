//! x86-64 AVX-512 kernels for [`super::q8_kernel`]: the 1x1 tiles on `vpdpbusd` (VNNI: u8 x i8
//! in groups of four, summed into i32 lanes without saturation), the depthwise loop on 16 i32
//! lanes, and the requantization in f64 lanes; entered only after run-time feature detection,
//! on lengths the caller has checked.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::depthwise_kernel::tap_range;
use super::q8_kernel::{channel_acc, DepthwiseQ8, PackedQ8, Requant, GROUP, PANEL_Q8};

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
            // SAFETY: the scales are padded to whole panels: col + 32 <= their length.
            scales: unsafe { [Scales16::load(rq, col), Scales16::load(rq, col + 16)] },
            zero_point: ZeroPoint::new(rq),
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
    scales: [Scales16; 2],
    zero_point: ZeroPoint,
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
            for r in 0..R {
                let o = self.out.add((p0 + r) * self.co);
                let c0 = codes_f32(a0[r], &self.scales[0], &self.zero_point);
                let c1 = codes_f32(a1[r], &self.scales[1], &self.zero_point);
                // Whole 16-byte halves with plain stores (masked stores are slower).
                if self.mask[0] == u16::MAX {
                    _mm_storeu_si128(o.cast(), c0);
                } else {
                    _mm_mask_storeu_epi8(o.cast(), self.mask[0], c0);
                }
                if self.mask[1] == u16::MAX {
                    _mm_storeu_si128(o.add(16).cast(), c1);
                } else if self.mask[1] != 0 {
                    _mm_mask_storeu_epi8(o.add(16).cast(), self.mask[1], c1);
                }
            }
        }
    }
}

/// 16 accumulators to codes: `round_half_even(clamp(f64(acc) * scale + zp, 0, 255))`, the
/// multiply and the add rounded separately (no fused multiply-add), as the definition; `s_lo`
/// and `s_hi` hold the scales of lanes 0..8 and 8..16.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) fn codes(acc: __m512i, s_lo: __m512d, s_hi: __m512d, zero_point: __m512d) -> __m128i {
    let (lo, hi) = (
        _mm512_cvtepi32_pd(_mm512_castsi512_si256(acc)),
        _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64::<1>(acc)),
    );
    // Clamping above before the conversion and below after it gives the same codes as
    // clamping first (the bounds are integers and rounding is monotone): above 255 the value
    // becomes 255; far below 0 the conversion's out-of-range result (i32::MIN) and anything
    // negative become 0.
    let q = |v: __m512d, s: __m512d| {
        let v = _mm512_min_pd(
            _mm512_add_pd(_mm512_mul_pd(v, s), zero_point),
            _mm512_set1_pd(255.0),
        );
        _mm512_cvt_roundpd_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v)
    };
    let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q(lo, s_lo)), q(hi, s_hi));
    _mm512_cvtepi32_epi8(_mm512_max_epi32(both, _mm512_setzero_si512()))
}

/// How close to a half an f32 lane of [`codes_f32`] may come before the block takes the exact
/// path: the f32 value differs from the exact `acc * scale + zp` by at most 3 roundings of
/// 2^-24 relative, under 1e-4 for values that can round into 0..=255, so 2^-12 leaves a margin
/// of more than 2.
const NEAR_HALF: f32 = 1.0 / 4096.0;

/// [`codes`] on 16 f32 lanes: `acc * scale + zero_point` rounded half to even and clamped.
/// Where no lane lies within [`NEAR_HALF`] of a half, that is the definition's code (the f32
/// and the exact values round the same way); otherwise the block goes through [`codes`]' f64
/// lanes.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) fn codes_f32(acc: __m512i, scale: &Scales16, zero_point: &ZeroPoint) -> __m128i {
    let v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), scale.f32, zero_point.f32);
    let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
    let off = _mm512_abs_ps(_mm512_sub_ps(v, r));
    // NaN cannot occur (finite scales, accumulators below 2^31).
    if _mm512_cmp_ps_mask::<_CMP_GT_OQ>(off, _mm512_set1_ps(0.5 - NEAR_HALF)) != 0 {
        return codes(acc, scale.lo, scale.hi, zero_point.f64);
    }
    let c = _mm512_min_ps(_mm512_max_ps(r, _mm512_setzero_ps()), _mm512_set1_ps(255.0));
    // `c` holds integers: the conversion is exact whatever its rounding mode.
    _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(c))
}

/// The requantization scales of 16 consecutive channels: as f32 lanes for [`codes_f32`] (exact:
/// they are f32 values) and as f64 lanes (channels 0..8 and 8..16) for [`codes`].
#[derive(Clone, Copy)]
pub(super) struct Scales16 {
    f32: __m512,
    lo: __m512d,
    hi: __m512d,
}

impl Scales16 {
    /// Channels `at..at + 16` of `rq`.
    ///
    /// # Safety
    /// `at + 16 <= rq.scale.len()` (the scales are padded to whole panels of [`PANEL_Q8`]).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn load(rq: &Requant, at: usize) -> Self {
        debug_assert!(at + 16 <= rq.scale.len());
        // SAFETY: the caller's guarantee; `scale32` has the length of `scale`.
        unsafe {
            Self {
                f32: _mm512_loadu_ps(rq.scale32.as_ptr().add(at)),
                lo: _mm512_loadu_pd(rq.scale.as_ptr().add(at)),
                hi: _mm512_loadu_pd(rq.scale.as_ptr().add(at + 8)),
            }
        }
    }
}

/// A layer's output zero point in f32 lanes (for [`codes_f32`]) and f64 lanes (for [`codes`]).
#[derive(Clone, Copy)]
pub(super) struct ZeroPoint {
    f32: __m512,
    f64: __m512d,
}

impl ZeroPoint {
    /// `rq`'s output zero point (an integer 0..=255: exact in both).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn new(rq: &Requant) -> Self {
        Self {
            f32: _mm512_set1_ps(rq.zero_point as f32),
            f64: _mm512_set1_pd(rq.zero_point),
        }
    }
}

/// Whether [`depthwise_avx512`] can run on this CPU.
pub fn has_avx512bw() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
}

/// Taps of a kernel the paired interior path takes (up to 7x7).
const MAX_TAPS: usize = 50;

/// The depthwise convolution of `q8_kernel::depthwise_q8` (same definition) with 16 channels
/// per register. Output pixels whose window lies inside the plane (most of them) take two taps
/// per `vpmaddwd`: the two taps' inputs widened into the halves of each i32 lane, the zero
/// point subtracted in 16 bits (exact: -255..=255), multiplied by the paired i16 taps and the
/// pair summed into i32. Pixels at the border take the taps inside the plane one by one
/// (`vpmulld`); channels past the last whole 16, the scalar definition.
///
/// # Safety
/// The CPU supports AVX-512 F and BW ([`has_avx512bw`]); the lengths match `w`'s geometry
/// (`q8_kernel::depthwise_lengths_match`).
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn depthwise_avx512(x: &[u8], w: &DepthwiseQ8, rq: &Requant, out: &mut [u8]) {
    let g = &w.geometry;
    let (c, [h, wd], [ho, wo], [kh, kw], s) = (g.channels, g.input, g.output, g.kernel, g.stride);
    let [pt, pl] = g.pad;
    let taps = |o: usize, pad: usize, len: usize, k: usize| tap_range(o, s, pad, len, k);
    // Offsets of the taps from the window's first input, and a last one repeating the first
    // (its paired weight is 0) when the count is odd.
    let n = kh * kw;
    let mut offsets = [0usize; MAX_TAPS];
    let paired = n < MAX_TAPS;
    if paired {
        for (t, o) in offsets.iter_mut().take(n).enumerate() {
            *o = ((t / kw) * wd + t % kw) * c;
        }
    }
    let blocks = c / 16 * 16;
    let k = Kernel {
        c,
        x: x.as_ptr(),
        taps: w.taps.as_ptr(),
        pairs: w.pairs.as_ptr(),
        bias: w.bias.as_ptr(),
        zp32: _mm512_set1_epi32(w.x_zero_point),
        zp16: _mm512_set1_epi16(w.x_zero_point as i16),
    };
    let zero_point = ZeroPoint::new(rq);
    for y in 0..ho {
        let (ky0, ky1) = taps(y, pt, h, kh);
        for xo in 0..wo {
            let (kx0, kx1) = taps(xo, pl, wd, kw);
            let at = (y * wo + xo) * c;
            let o = out[at..at + c].as_mut_ptr();
            let inside = paired && ky0 == 0 && ky1 == kh && kx0 == 0 && kx1 == kw;
            // SAFETY: inside the plane, every tap offset from the window's first input
            // `((y * s - pt) * wd + xo * s - pl) * c` plus a channel below c is a pixel of the
            // plane; at the border only the taps clipped to the plane are read (as in the
            // portable loop nest); tap, pair, bias and scale indices stay below their lengths
            // (checked at construction and by the caller), and the 16 codes go to channels
            // ch..ch + 16 <= c of this output pixel.
            unsafe {
                for ch in (0..blocks).step_by(16) {
                    let acc = if inside {
                        let first = ((y * s - pt) * wd + xo * s - pl) * c + ch;
                        k.paired(first, &offsets[..n.div_ceil(2) * 2], ch)
                    } else {
                        let mut acc = _mm512_loadu_si512(k.bias.add(ch).cast());
                        for ky in ky0..ky1 {
                            let row = (y * s + ky - pt) * wd;
                            for kx in kx0..kx1 {
                                let from = (row + xo * s + kx - pl) * c + ch;
                                acc = k.single(acc, from, (ky * kw + kx) * c + ch);
                            }
                        }
                        acc
                    };
                    let v = codes_f32(acc, &Scales16::load(rq, ch), &zero_point);
                    _mm_storeu_si128(o.add(ch).cast(), v);
                }
            }
            for ch in blocks..c {
                let acc = channel_acc(x, w, [y, xo], ch, [ky0, ky1], [kx0, kx1]);
                out[at + ch] = rq.code(acc, ch);
            }
        }
    }
}

/// The operands of [`depthwise_avx512`].
struct Kernel {
    c: usize,
    x: *const u8,
    taps: *const i32,
    pairs: *const i32,
    bias: *const i32,
    zp32: __m512i,
    zp16: __m512i,
}

impl Kernel {
    /// Channels `ch..ch + 16` of a window inside the plane starting at input index `first`,
    /// taps at `offsets` (an even count; a phantom last tap has weight 0), two per `vpmaddwd`.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn paired(&self, first: usize, offsets: &[usize], ch: usize) -> __m512i {
        unsafe {
            let mut acc = _mm512_loadu_si512(self.bias.add(ch).cast());
            for (p, pair) in offsets.chunks_exact(2).enumerate() {
                let a = _mm512_cvtepu8_epi32(_mm_loadu_si128(self.x.add(first + pair[0]).cast()));
                let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(self.x.add(first + pair[1]).cast()));
                let both =
                    _mm512_sub_epi16(_mm512_or_si512(a, _mm512_slli_epi32::<16>(b)), self.zp16);
                let wv = _mm512_loadu_si512(self.pairs.add(p * self.c + ch).cast());
                acc = _mm512_add_epi32(acc, _mm512_madd_epi16(both, wv));
            }
            acc
        }
    }

    /// `acc` plus one tap (input index `from`, tap index `tap`) of 16 channels.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn single(&self, acc: __m512i, from: usize, tap: usize) -> __m512i {
        unsafe {
            let xv = _mm512_cvtepu8_epi32(_mm_loadu_si128(self.x.add(from).cast()));
            let wv = _mm512_loadu_si512(self.taps.add(tap).cast());
            _mm512_add_epi32(acc, _mm512_mullo_epi32(_mm512_sub_epi32(xv, self.zp32), wv))
        }
    }
}

/// `quantize_op::quantize` on 16 lanes: the product rounded half to even by the conversion itself, NaN
/// lanes set to 0 and lanes at or past 2^31 to 255 (what the saturating scalar cast and add
/// give), the rest clamped in i32.
///
/// # Safety
/// The CPU supports AVX-512F; `x` and `out` have the same length.
#[target_feature(enable = "avx512f")]
pub unsafe fn quantize_avx512(x: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    let whole = x.len() / 16 * 16;
    let (s, zp) = (
        _mm512_set1_ps(scale),
        _mm512_set1_epi32(i32::from(zero_point)),
    );
    let (top, byte) = (_mm512_set1_ps(2_147_483_648.0), _mm512_set1_epi32(255));
    for i in (0..whole).step_by(16) {
        // SAFETY: i + 16 <= whole <= x.len() == out.len().
        unsafe {
            let v = _mm512_mul_ps(_mm512_loadu_ps(x.as_ptr().add(i)), s);
            let r =
                _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            let big = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, top);
            let r = _mm512_mask_mov_epi32(r, nan, _mm512_setzero_si512());
            let r = _mm512_mask_mov_epi32(r, big, byte);
            let r = _mm512_add_epi32(_mm512_min_epi32(r, byte), zp);
            let r = _mm512_max_epi32(_mm512_min_epi32(r, byte), _mm512_setzero_si512());
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi8(r));
        }
    }
    super::quantize_op::quantize(&x[whole..], scale, zero_point, &mut out[whole..]);
}
