//! The integer depthwise convolution on `vpdpbusd` (AVX-512 VNNI), for strides 1 and 2: the
//! input rows a window needs are first rewritten, once each, into "quads" (per output column
//! and channel the four consecutive padded inputs `x[s * j .. s * j + 4]` as four bytes, the
//! zero point outside the plane), so that one `vpdpbusd` multiplies four horizontal taps of 16
//! channels by their weights and sums them into i32 lanes. Padding with the zero point makes
//! every output pixel, border included, take the same path: `acc = bias - zp * sum(w) +
//! sum(x_padded * w)` equals the definition's `bias + sum_inside((x - zp) * w)`, exactly,
//! since the definition's accumulator fits in i32 (checked by [`DepthwiseQ8::new`]) and the
//! lanes add modulo 2^32.
#![allow(unsafe_code)]

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::depthwise_kernel::tap_range;
use super::q8_kernel::{channel_acc, DepthwiseQ8, Requant};
use super::q8_x86::{codes_f32, Scales16, ZeroPoint};

/// Most taps a kernel row may have on this path (two quads).
const MAX_KW: usize = 8;
/// Most kernel rows on this path.
const MAX_KH: usize = 8;

/// Weights of a [`DepthwiseQ8`] for [`depthwise_vnni`]: `[kh, kw.div_ceil(4), c, 4]` i8 (the
/// four taps of a quad per channel, 0 past the row's last tap), and the bias with the zero
/// point's share folded in, `bias - zp * sum(w)` `[c]` (wrapping: only the final sum matters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quads {
    weights: Vec<i8>,
    bias_zp: Vec<i32>,
}

impl Quads {
    /// From the kernel's taps `[kh, kw, c]` (i32 holding i8 values), bias `[c]` and input zero
    /// point; None when the kernel is larger than this path takes.
    pub fn new(
        taps: &[i32],
        bias: &[i32],
        c: usize,
        [kh, kw]: [usize; 2],
        zp: i32,
    ) -> Option<Self> {
        if kh > MAX_KH || kw > MAX_KW || taps.len() != kh * kw * c || bias.len() != c {
            return None;
        }
        let quads = kw.div_ceil(4);
        let mut weights = vec![0i8; kh * quads * c * 4];
        let mut bias_zp = bias.to_vec();
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &taps[(ky * kw + kx) * c..][..c];
                let at = ((ky * quads + kx / 4) * c) * 4 + kx % 4;
                for (ch, &v) in row.iter().enumerate() {
                    weights[at + ch * 4] = v as i8;
                    bias_zp[ch] = bias_zp[ch].wrapping_sub(zp.wrapping_mul(v));
                }
            }
        }
        Some(Self { weights, bias_zp })
    }
}

thread_local! {
    /// The rows of quads of the layer running on this thread (kept between calls, so a pass
    /// allocates only when a layer needs more than any before it).
    static ROWS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Whether [`depthwise_vnni`] takes this convolution (else the caller runs another path).
pub fn takes(w: &DepthwiseQ8) -> bool {
    let g = &w.geometry;
    w.quads.is_some() && (g.stride == 1 || g.stride == 2) && g.channels >= 16
}

/// Whether [`depthwise_vnni`] is the faster path for this convolution: it takes it and the
/// output rows have 8 pixels or more. On narrower planes rewriting the rows into quads
/// costs more than the products save (`depthwise_q8` criterion group: at 128 px the 4-pixel
/// rows of the last stage run faster on `q8_x86::depthwise_avx512`).
pub fn prefers(w: &DepthwiseQ8) -> bool {
    takes(w) && w.geometry.output[1] >= 8
}

/// The depthwise convolution of `q8_kernel::depthwise_q8` (same definition), 16 channels per
/// register; channels past the last whole 16 by the scalar definition.
///
/// # Safety
/// The CPU supports AVX-512 F, BW, VL and VNNI (`q8_x86::has_vnni`); the lengths match `w`'s
/// geometry (`q8_kernel::depthwise_lengths_match`); [`takes`] holds for `w`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn depthwise_vnni(x: &[u8], w: &DepthwiseQ8, rq: &Requant, out: &mut [u8]) {
    let g = &w.geometry;
    let q = w.quads.as_ref().expect("takes() holds");
    let (c, [ho, wo], [kh, kw], s) = (g.channels, g.output, g.kernel, g.stride);
    let quads = kw.div_ceil(4);
    // Quad columns per row: output column xo, quad k reads column xo + 4 * k / s.
    let cols = wo + 4 * (quads - 1) / s;
    let row_len = cols * c * 4;
    ROWS.with_borrow_mut(|ring| {
        if ring.len() < kh * row_len {
            ring.resize(kh * row_len, 0);
        }
        let mut next = 0usize;
        for y in 0..ho {
            // Padded input rows y * s .. y * s + kh, each rewritten once into slot row % kh.
            for r in next.max(y * s)..y * s + kh {
                let slot = &mut ring[(r % kh) * row_len..][..row_len];
                // SAFETY: the caller's guarantees; `slot` holds `cols * c` quads.
                unsafe { quad_row(x, w, r, cols, slot) };
            }
            next = y * s + kh;
            let mut rows = [std::ptr::null::<u8>(); MAX_KH];
            for (ky, p) in rows.iter_mut().enumerate().take(kh) {
                *p = ring[((y * s + ky) % kh) * row_len..].as_ptr();
            }
            let o = &mut out[y * wo * c..][..wo * c];
            // SAFETY: every quad column read, xo + 4 * k / s < cols, is inside its row;
            // channels ch + 16 <= c.
            unsafe { output_row(&rows[..kh], q, rq, [c, wo, quads, s], o) };
            // Channels past the last whole 16 (none in the backbones), by the definition.
            if c % 16 != 0 {
                let ky = tap_range(y, s, g.pad[0], g.input[0], kh);
                for xo in 0..wo {
                    let kx = tap_range(xo, s, g.pad[1], g.input[1], kw);
                    for ch in c / 16 * 16..c {
                        let acc = channel_acc(x, w, [y, xo], ch, [ky.0, ky.1], [kx.0, kx.1]);
                        o[xo * c + ch] = rq.code(acc, ch);
                    }
                }
            }
        }
    });
}

/// Padded row `r` (input row `r - pad_top`) as quads `[cols, c, 4]`: column `j` holds, per
/// channel, the padded inputs at columns `s * j .. s * j + 4` (the zero point outside the
/// plane). Channels past the last whole 16 are left as they are.
///
/// # Safety
/// As [`depthwise_vnni`]; `slot.len() == cols * c * 4`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn quad_row(x: &[u8], w: &DepthwiseQ8, r: usize, cols: usize, slot: &mut [u8]) {
    let g = &w.geometry;
    let (c, [h, wd], s, [pt, pl]) = (g.channels, g.input, g.stride, g.pad);
    let zp = w.x_zero_point as u8;
    let Some(y) = r.checked_sub(pt).filter(|&y| y < h) else {
        slot.fill(zp);
        return;
    };
    let line = &x[y * wd * c..][..wd * c];
    let zpv = _mm_set1_epi8(zp as i8);
    let base = slot.as_mut_ptr();
    for ch in (0..c / 16 * 16).step_by(16) {
        // Channels ch..ch + 16 of padded column k (the zero point outside the plane).
        let ld = |k: usize| match k.checked_sub(pl).filter(|&v| v < wd) {
            // SAFETY: a column inside the plane has its channels ch..ch + 16 in `line`.
            Some(v) => unsafe { _mm_loadu_si128(line.as_ptr().add(v * c + ch).cast()) },
            None => zpv,
        };
        // Padded columns k and k + 1 interleaved byte by byte (channels 0..8, 8..16).
        let pair = |k: usize| {
            let (a, b) = (ld(k), ld(k + 1));
            [_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b)]
        };
        // Quad column j from the pairs at padded columns s * j and s * j + 2.
        let store = |j: usize, ab: [__m128i; 2], cd: [__m128i; 2]| {
            // SAFETY: the 64 bytes stored are quads ch..ch + 16 of column j < cols, inside
            // `slot` (`cols * c * 4` bytes).
            unsafe {
                let o = base.add((j * c + ch) * 4);
                _mm_storeu_si128(o.cast(), _mm_unpacklo_epi16(ab[0], cd[0]));
                _mm_storeu_si128(o.add(16).cast(), _mm_unpackhi_epi16(ab[0], cd[0]));
                _mm_storeu_si128(o.add(32).cast(), _mm_unpacklo_epi16(ab[1], cd[1]));
                _mm_storeu_si128(o.add(48).cast(), _mm_unpackhi_epi16(ab[1], cd[1]));
            }
        };
        // Each pair is made once: at stride 1 the pair at j + 2 is quad j + 2's first half,
        // at stride 2 quad j + 1's.
        if s == 1 {
            let mut ring = [pair(0), pair(1)];
            for j in 0..cols {
                let next = pair(j + 2);
                store(j, ring[0], next);
                ring = [ring[1], next];
            }
        } else {
            let mut prev = pair(0);
            for j in 0..cols {
                let next = pair(s * j + 2);
                store(j, prev, next);
                prev = next;
            }
        }
    }
}

/// One output row `o` `[wo, c]` from the kernel rows' quads (`rows[ky]`, `[cols, c, 4]`):
/// per 16 channels, the weights held in registers across the row.
///
/// # Safety
/// As [`depthwise_vnni`]; every `rows[ky]` holds `cols * c * 4` bytes with `cols >= wo + 4 *
/// (quads - 1) / s`; `o.len() == wo * c`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn output_row(
    rows: &[*const u8],
    q: &Quads,
    rq: &Requant,
    [c, wo, quads, s]: [usize; 4],
    o: &mut [u8],
) {
    let zero_point = ZeroPoint::new(rq);
    let n = rows.len() * quads;
    for ch in (0..c / 16 * 16).step_by(16) {
        // SAFETY: weights `[kh, quads, c, 4]`, bias and scales `[c]`: indices below their
        // lengths for ch + 16 <= c; quad reads as the caller guarantees.
        unsafe {
            let mut wv = [_mm512_setzero_si512(); MAX_KH * 2];
            let mut from = [std::ptr::null::<u8>(); MAX_KH * 2];
            for (i, (wv, from)) in wv.iter_mut().zip(&mut from).enumerate().take(n) {
                let (ky, k) = (i / quads, i % quads);
                *wv = _mm512_loadu_si512(
                    q.weights
                        .as_ptr()
                        .add(((ky * quads + k) * c + ch) * 4)
                        .cast(),
                );
                *from = rows[ky].add((4 * k / s * c + ch) * 4);
            }
            let regs = Regs {
                bias: _mm512_loadu_si512(q.bias_zp.as_ptr().add(ch).cast()),
                scale: Scales16::load(rq, ch),
                zero_point,
            };
            let dst = o.as_mut_ptr().add(ch);
            let step = c * 4;
            // The backbones' 3x3 and 5x5 kernels with their taps held in registers.
            match n {
                3 => pixels::<3>(&from, &wv, &regs, [wo, step, c], dst),
                10 => pixels::<10>(&from, &wv, &regs, [wo, step, c], dst),
                _ => pixels_any(&from[..n], &wv[..n], &regs, [wo, step, c], dst),
            }
        }
    }
}

/// What every output pixel of a 16-channel block shares: the bias with the zero point's share
/// and the requantization's scales and zero point, in f32 and f64 lanes.
struct Regs {
    bias: __m512i,
    scale: Scales16,
    zero_point: ZeroPoint,
}

/// `wo` output pixels of one 16-channel block, `N` quads per pixel: pixel `xo` reads quad
/// `i` at `from[i] + xo * step` and stores 16 codes at `dst + xo * c`.
///
/// # Safety
/// As [`output_row`]: every quad read and code stored lies inside its buffer.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn pixels<const N: usize>(
    from: &[*const u8],
    wv: &[__m512i],
    r: &Regs,
    dims: [usize; 3],
    dst: *mut u8,
) {
    // Fixed-length copies: inlined into this function the loop below keeps the N weight
    // registers and row pointers in registers and unrolls its taps.
    let from: [*const u8; N] = std::array::from_fn(|i| from[i]);
    let wv: [__m512i; N] = std::array::from_fn(|i| wv[i]);
    // SAFETY: the caller's guarantees.
    unsafe { pixels_any(&from, &wv, r, dims, dst) }
}

/// [`pixels`] for any number of quads (`from.len()`, `wv` as long).
///
/// # Safety
/// As [`pixels`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn pixels_any(
    from: &[*const u8],
    wv: &[__m512i],
    r: &Regs,
    [wo, step, c]: [usize; 3],
    dst: *mut u8,
) {
    for xo in 0..wo {
        let mut acc = r.bias;
        for (f, &w) in from.iter().zip(wv) {
            // SAFETY: the caller's guarantees.
            let v = unsafe { _mm512_loadu_si512(f.add(xo * step).cast()) };
            acc = _mm512_dpbusd_epi32(acc, v, w);
        }
        let v = codes_f32(acc, &r.scale, &r.zero_point);
        // SAFETY: the caller's guarantees.
        unsafe { _mm_storeu_si128(dst.add(xo * c).cast(), v) };
    }
}
