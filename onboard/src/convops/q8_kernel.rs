//! Integer convolution kernels on channels-last tensors: u8 activations times i8 weights
//! accumulated in i32, with ONNX `QLinearConv`'s requantization to u8 fused into the store.
//!
//! The arithmetic is ONNX's reference definition of `QLinearConv` (`onnx.reference`), exactly:
//! the accumulator `acc = bias[o] + sum (x - x_zero_point) * w` (weights symmetric: zero point
//! 0), positions outside the plane holding the real value 0 (the code `x_zero_point`), then
//! `y = round_half_even(clamp(f64(acc) * f64(scale[o]) + y_zero_point, 0, 255))` with
//! `scale[o] = x_scale * w_scale[o] / y_scale` computed in f32 (numpy's promotions in the
//! reference: float32 scales, the int32 accumulator times them in float64). See [`Requant`].

use super::depthwise_kernel::{tap_range, Geometry};

/// Output channels per packed weight panel of [`PackedQ8`].
pub const PANEL_Q8: usize = 32;
/// Input channels per packed group (the four bytes one VNNI lane multiplies).
pub const GROUP: usize = 4;

/// The requantization of one layer: per output channel `scale[o]` (padded with zeros to whole
/// panels), and the output zero point.
#[derive(Debug, Clone, PartialEq)]
pub struct Requant {
    pub(super) scale: Vec<f64>,
    /// The same scales as f32 (exact: they are f32 values), for the kernels' f32 lanes.
    #[cfg(target_arch = "x86_64")]
    pub(super) scale32: Vec<f32>,
    pub(super) zero_point: f64,
}

impl Requant {
    /// From the layer's scales: `x_scale`, `w_scale` (one per output channel, or one for all),
    /// `y_scale` and `y_zero_point`, for `co` output channels. None when a scale is not finite
    /// and positive or `w_scale` has neither 1 nor `co` values.
    pub fn new(
        x_scale: f32,
        w_scale: &[f32],
        y_scale: f32,
        y_zero_point: u8,
        co: usize,
    ) -> Option<Self> {
        let ok = |s: f32| s.is_finite() && s > 0.0;
        if !ok(x_scale) || !ok(y_scale) || !(w_scale.len() == 1 || w_scale.len() == co) {
            return None;
        }
        if !w_scale.iter().all(|&s| ok(s)) {
            return None;
        }
        let mut scale = vec![0.0; co.div_ceil(PANEL_Q8) * PANEL_Q8];
        for (o, s) in scale.iter_mut().take(co).enumerate() {
            let w = w_scale[if w_scale.len() == 1 { 0 } else { o }];
            // The reference's order: (x_scale * w_scale) / y_scale, in f32.
            *s = f64::from(x_scale * w / y_scale);
        }
        Some(Self {
            #[cfg(target_arch = "x86_64")]
            scale32: scale.iter().map(|&s| s as f32).collect(),
            scale,
            zero_point: f64::from(y_zero_point),
        })
    }

    /// The u8 code of accumulator `acc` of output channel `o`.
    #[inline(always)]
    pub fn code(&self, acc: i32, o: usize) -> u8 {
        code(acc, self.scale[o], self.zero_point)
    }
}

/// `round_half_even(clamp(acc * scale + zero_point, 0, 255))`.
#[inline(always)]
fn code(acc: i32, scale: f64, zero_point: f64) -> u8 {
    (f64::from(acc) * scale + zero_point)
        .clamp(0.0, 255.0)
        .round_ties_even() as u8
}

/// Whether every accumulator starting from `bias` and summing `terms` products of a u8 (or a
/// difference of two) and an i8 stays inside i32: `|bias| + terms * 255 * 128 <= i32::MAX`. The
/// kernels then add without overflow whatever the activations are.
pub(super) fn fits(bias: i64, terms: usize) -> bool {
    i64::try_from(terms)
        .ok()
        .and_then(|t| t.checked_mul(255 * 128))
        .and_then(|m| m.checked_add(bias.abs()))
        .is_some_and(|m| m <= i64::from(i32::MAX))
}

/// A block of `N` accumulators of consecutive output channels `o0..o0 + N` to codes.
#[inline(always)]
pub(super) fn store<const N: usize>(acc: &[i32; N], rq: &Requant, o0: usize, out: &mut [u8]) {
    let scale = &rq.scale[o0..o0 + N];
    for ((d, &a), &s) in out.iter_mut().zip(acc).zip(scale) {
        *d = code(a, s, rq.zero_point);
    }
}

/// Weights of a one-group convolution as rows `[co, k]` (a 1x1 kernel, or patch rows of
/// [`super::patch_order`]), packed for [`pointwise_q8`]: panels of [`PANEL_Q8`] output channels,
/// `[co.div_ceil(PANEL_Q8), k.div_ceil(GROUP), PANEL_Q8, GROUP]` i8, zero-padded; the bias
/// folded with the input zero point: `bias[o] - x_zero_point * sum_k w[o, k]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedQ8 {
    pub(super) k: usize,
    pub(super) co: usize,
    pub(super) panels: Vec<i8>,
    pub(super) bias: Vec<i32>,
    /// The bias for activations shifted to `x - 128` (signed-byte dot products, as aarch64's
    /// `sdot`): `bias[o] + 128 * sum_k w[o, k]` (folded as above), per packed channel; None
    /// when an accumulator could then leave i32.
    pub(super) bias_128: Option<Vec<i32>>,
}

impl PackedQ8 {
    /// Packs `w` `[co, k]` and `bias` `[co]` for inputs of zero point `x_zero_point`; None when a
    /// length does not match or an accumulator could leave i32 ([`fits`]).
    pub fn new(w: &[i8], bias: &[i32], co: usize, k: usize, x_zero_point: u8) -> Option<Self> {
        if w.len() != co * k || bias.len() != co || co == 0 || k == 0 {
            return None;
        }
        let groups = k.div_ceil(GROUP);
        let n = co.div_ceil(PANEL_Q8);
        let mut panels = vec![0i8; n * groups * PANEL_Q8 * GROUP];
        let mut folded = vec![0i32; n * PANEL_Q8];
        let mut shifted = Some(vec![0i32; n * PANEL_Q8]);
        for (o, row) in w.chunks_exact(k).enumerate() {
            let (p, j) = (o / PANEL_Q8, o % PANEL_Q8);
            for (i, &v) in row.iter().enumerate() {
                panels[((p * groups + i / GROUP) * PANEL_Q8 + j) * GROUP + i % GROUP] = v;
            }
            let sum: i64 = row.iter().map(|&v| i64::from(v)).sum();
            let b = i64::from(bias[o]) - i64::from(x_zero_point) * sum;
            if !fits(b, k) {
                return None;
            }
            folded[o] = i32::try_from(b).ok()?;
            let b128 = i32::try_from(b + 128 * sum)
                .ok()
                .filter(|&v| fits(i64::from(v), k));
            shifted = shifted.zip(b128).map(|(mut s, v)| {
                s[o] = v;
                s
            });
        }
        Some(Self {
            k,
            co,
            panels,
            bias: folded,
            bias_128: shifted,
        })
    }

    /// Values per input row (input channels of a 1x1 convolution, patch length otherwise).
    pub fn input_len(&self) -> usize {
        self.k
    }

    /// Output channels.
    pub fn output_channels(&self) -> usize {
        self.co
    }

    /// `[k.div_ceil(GROUP), PANEL_Q8, GROUP]` of panel `p`.
    pub(super) fn panel(&self, p: usize) -> &[i8] {
        let len = self.k.div_ceil(GROUP) * PANEL_Q8 * GROUP;
        &self.panels[p * len..(p + 1) * len]
    }
}

/// `out[p, o] = code(bias[o] + sum_k (x[p, k] - x_zero_point) * w[o, k])` for `x` `[pixels, k]`
/// and `out` `[pixels, co]` u8, row-major, `w` packed with that zero point. On x86-64 with
/// AVX-512 VNNI (detected at run time) it runs `vpdpbusd` register tiles, on aarch64 `sdot`
/// tiles where the core has the dot product and `smull`/`sadalp` tiles otherwise (both where
/// the shifted bias fits i32), elsewhere [`pointwise_q8_portable`] (compiled for AVX2 where the
/// CPU has it). Returns false (leaving
/// `out` untouched) when a length does not match.
pub fn pointwise_q8(x: &[u8], w: &PackedQ8, rq: &Requant, out: &mut [u8]) -> bool {
    if !lengths_match(x, w, rq, out) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if super::q8_x86::has_vnni() {
            // SAFETY: AVX-512 F/BW/VNNI are present and the lengths were checked above.
            #[allow(unsafe_code)]
            unsafe {
                super::q8_x86::gemm_vnni(x, w, rq, out)
            };
            return true;
        }
        if super::x86::has_avx2_fma() {
            // SAFETY: AVX2 is present and the lengths were checked above.
            #[allow(unsafe_code)]
            unsafe {
                gemm_avx2(x, w, rq, out)
            };
            return true;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        use super::q8_neon::{gemm_neon, has_dotprod, Multiply};
        if let Some(bias) = w.bias_128.as_deref() {
            let multiply = if has_dotprod() {
                Multiply::Sdot
            } else {
                Multiply::Smull
            };
            // SAFETY: `Sdot` only where the dot product is present; the lengths were checked
            // above and `bias` holds a value per packed channel.
            #[allow(unsafe_code)]
            unsafe {
                gemm_neon(x, w, bias, rq, out, multiply)
            };
            return true;
        }
    }
    gemm_portable(x, w, rq, out);
    true
}

/// [`pointwise_q8`] without SIMD intrinsics or run-time dispatch: the definition every path
/// must equal.
pub fn pointwise_q8_portable(x: &[u8], w: &PackedQ8, rq: &Requant, out: &mut [u8]) -> bool {
    if !lengths_match(x, w, rq, out) {
        return false;
    }
    gemm_portable(x, w, rq, out);
    true
}

pub(super) fn lengths_match(x: &[u8], w: &PackedQ8, rq: &Requant, out: &[u8]) -> bool {
    let p = x.len() / w.k;
    p > 0 && x.len() == p * w.k && out.len() == p * w.co && rq.scale.len() >= w.bias.len()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn gemm_avx2(x: &[u8], w: &PackedQ8, rq: &Requant, out: &mut [u8]) {
    gemm_portable(x, w, rq, out);
}

/// Pixel by pixel and panel by panel, one panel's 32 accumulators at a time (a loop the
/// compiler vectorizes for the target).
#[inline(always)]
fn gemm_portable(x: &[u8], w: &PackedQ8, rq: &Requant, out: &mut [u8]) {
    let (k, co) = (w.k, w.co);
    for (row, o) in x.chunks_exact(k).zip(out.chunks_exact_mut(co)) {
        for p in 0..co.div_ceil(PANEL_Q8) {
            let col = p * PANEL_Q8;
            let mut acc = [0i32; PANEL_Q8];
            acc.copy_from_slice(&w.bias[col..col + PANEL_Q8]);
            for (xs, wg) in row
                .chunks(GROUP)
                .zip(w.panel(p).chunks_exact(PANEL_Q8 * GROUP))
            {
                for (a, wj) in acc.iter_mut().zip(wg.chunks_exact(GROUP)) {
                    for (xv, wv) in xs.iter().zip(wj) {
                        *a += i32::from(*xv) * i32::from(*wv);
                    }
                }
            }
            let cols = PANEL_Q8.min(co - col);
            if cols == PANEL_Q8 {
                store(&acc, rq, col, &mut o[col..col + PANEL_Q8]);
            } else {
                for (j, d) in o[col..col + cols].iter_mut().enumerate() {
                    *d = rq.code(acc[j], col + j);
                }
            }
        }
    }
}

/// Depthwise weights for [`depthwise_q8`]: taps `[kh, kw, c]` widened to i32, the same taps in
/// pairs `[taps.div_ceil(2), c]` (tap `2p` in the low 16 bits of each i32, tap `2p + 1` in the
/// high 16, 0 past the last tap) for the `vpmaddwd` path, and the bias `[c]` (the zero point is
/// subtracted per position, so not folded here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthwiseQ8 {
    pub(super) geometry: Geometry,
    pub(super) taps: Vec<i32>,
    pub(super) pairs: Vec<i32>,
    pub(super) bias: Vec<i32>,
    pub(super) x_zero_point: i32,
    /// The same weights for the `vpdpbusd` path (None for a kernel larger than it takes).
    #[cfg(target_arch = "x86_64")]
    pub(super) quads: Option<super::q8_x86_dw::Quads>,
    /// `taps` as i16, for the NEON path's widening multiplies.
    #[cfg(target_arch = "aarch64")]
    pub(super) taps16: Vec<i16>,
}

impl DepthwiseQ8 {
    /// From ONNX weights `[c, kh, kw]` i8 and bias `[c]` i32 of `g`, inputs of zero point
    /// `x_zero_point`; None when a length does not match or an accumulator could leave i32.
    pub fn new(w: &[i8], bias: &[i32], g: &Geometry, x_zero_point: u8) -> Option<Self> {
        let (c, taps) = (g.channels, g.kernel[0] * g.kernel[1]);
        if w.len() != c * taps || bias.len() != c || c == 0 || taps == 0 || g.stride == 0 {
            return None;
        }
        if !bias.iter().all(|&b| fits(i64::from(b), taps)) {
            return None;
        }
        let wide: Vec<i32> = w.iter().map(|&v| i32::from(v)).collect();
        let taps_major = super::taps_major(&wide, c, taps);
        let mut pairs = vec![0i32; taps.div_ceil(2) * c];
        for (t, row) in taps_major.chunks_exact(c).enumerate() {
            for (d, &v) in pairs[t / 2 * c..].iter_mut().zip(row) {
                // The tap's 16 bits in its half (as i16 two's complement).
                *d |= i32::from(v as i16 as u16) << (16 * (t % 2));
            }
        }
        Some(Self {
            geometry: *g,
            #[cfg(target_arch = "aarch64")]
            taps16: taps_major.iter().map(|&v| v as i16).collect(),
            #[cfg(target_arch = "x86_64")]
            quads: super::q8_x86_dw::Quads::new(
                &taps_major,
                bias,
                c,
                g.kernel,
                i32::from(x_zero_point),
            ),
            taps: taps_major,
            pairs,
            bias: bias.to_vec(),
            x_zero_point: i32::from(x_zero_point),
        })
    }

    /// Shape of the convolution.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }
}

/// The depthwise convolution of channels-last `x` `[h, w, c]` into `out` `[ho, wo, c]`, both
/// u8, by the definition above. Compiled for AVX-512 or AVX2 where the CPU has them (detected
/// at run time), on NEON widening multiplies on aarch64, portable elsewhere. Returns false
/// when a length does not match.
pub fn depthwise_q8(x: &[u8], w: &DepthwiseQ8, rq: &Requant, out: &mut [u8]) -> bool {
    if !depthwise_lengths_match(x, w, rq, out) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if super::q8_x86::has_vnni() && super::q8_x86_dw::prefers(w) {
            // SAFETY: AVX-512 F, BW, VL and VNNI are present; lengths checked above; the
            // path takes this geometry.
            #[allow(unsafe_code)]
            unsafe {
                super::q8_x86_dw::depthwise_vnni(x, w, rq, out)
            };
            return true;
        }
        if super::q8_x86::has_avx512bw() {
            // SAFETY: AVX-512 F and BW are present; lengths checked above.
            #[allow(unsafe_code)]
            unsafe {
                super::q8_x86::depthwise_avx512(x, w, rq, out)
            };
            return true;
        }
        if super::x86::has_avx2_fma() {
            // SAFETY: AVX2 is present; lengths checked above.
            #[allow(unsafe_code)]
            unsafe {
                depthwise_avx2(x, w, rq, out)
            };
            return true;
        }
    }
    // SAFETY: NEON is part of the aarch64 base ISA; lengths checked above.
    #[cfg(target_arch = "aarch64")]
    #[allow(unsafe_code)]
    unsafe {
        super::q8_neon::depthwise_neon(x, w, rq, out)
    };
    #[cfg(not(target_arch = "aarch64"))]
    depthwise_hwc(x, w, rq, out);
    true
}

/// [`depthwise_q8`] without run-time dispatch.
pub fn depthwise_q8_portable(x: &[u8], w: &DepthwiseQ8, rq: &Requant, out: &mut [u8]) -> bool {
    if !depthwise_lengths_match(x, w, rq, out) {
        return false;
    }
    depthwise_hwc(x, w, rq, out);
    true
}

pub(super) fn depthwise_lengths_match(x: &[u8], w: &DepthwiseQ8, rq: &Requant, out: &[u8]) -> bool {
    let g = &w.geometry;
    x.len() == g.channels * g.input[0] * g.input[1]
        && out.len() == g.channels * g.output[0] * g.output[1]
        && rq.scale.len() >= g.channels
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn depthwise_avx2(x: &[u8], w: &DepthwiseQ8, rq: &Requant, out: &mut [u8]) {
    depthwise_hwc(x, w, rq, out);
}

/// The accumulator of channel `ch` at output pixel `[y, xo]` by the definition, over the
/// in-plane taps `ky` and `kx` (`[first, end)`, see `tap_range`): the loop for channels past
/// the last whole register block, shared by every depthwise path.
#[inline(always)]
pub(super) fn channel_acc(
    x: &[u8],
    w: &DepthwiseQ8,
    [y, xo]: [usize; 2],
    ch: usize,
    [ky0, ky1]: [usize; 2],
    [kx0, kx1]: [usize; 2],
) -> i32 {
    let g = &w.geometry;
    let (c, wd, kw, s, [pt, pl]) = (g.channels, g.input[1], g.kernel[1], g.stride, g.pad);
    let mut acc = w.bias[ch];
    for ky in ky0..ky1 {
        let row = (y * s + ky - pt) * wd;
        for kx in kx0..kx1 {
            let v = i32::from(x[(row + xo * s + kx - pl) * c + ch]) - w.x_zero_point;
            acc += v * w.taps[(ky * kw + kx) * c + ch];
        }
    }
    acc
}

/// Channels per register block of the depthwise loop.
const BLOCK: usize = 16;

/// Per output pixel, per block of [`BLOCK`] channels, the in-bounds taps accumulated (the
/// padding contributes `(x_zero_point - x_zero_point) * w = 0`, so it is skipped), then stored
/// as codes. Lengths are checked by the caller.
#[inline(always)]
fn depthwise_hwc(x: &[u8], w: &DepthwiseQ8, rq: &Requant, out: &mut [u8]) {
    let g = &w.geometry;
    let (c, [h, wd], [ho, wo], [kh, kw], s) = (g.channels, g.input, g.output, g.kernel, g.stride);
    let [pt, pl] = g.pad;
    let zp = w.x_zero_point;
    let blocks = c / BLOCK * BLOCK;
    let taps = |o: usize, pad: usize, len: usize, k: usize| tap_range(o, s, pad, len, k);
    for y in 0..ho {
        let (ky0, ky1) = taps(y, pt, h, kh);
        for xo in 0..wo {
            let (kx0, kx1) = taps(xo, pl, wd, kw);
            let at = (y * wo + xo) * c;
            let o = &mut out[at..at + c];
            let mut ch = 0;
            while ch < blocks {
                let mut acc = [0i32; BLOCK];
                acc.copy_from_slice(&w.bias[ch..ch + BLOCK]);
                for ky in ky0..ky1 {
                    let row = (y * s + ky - pt) * wd;
                    for kx in kx0..kx1 {
                        let from = (row + xo * s + kx - pl) * c + ch;
                        let tap = (ky * kw + kx) * c + ch;
                        let xs = &x[from..from + BLOCK];
                        let ws = &w.taps[tap..tap + BLOCK];
                        for i in 0..BLOCK {
                            acc[i] += (i32::from(xs[i]) - zp) * ws[i];
                        }
                    }
                }
                store(&acc, rq, ch, &mut o[ch..ch + BLOCK]);
                ch += BLOCK;
            }
            for (ch, d) in o.iter_mut().enumerate().skip(blocks) {
                *d = rq.code(channel_acc(x, w, [y, xo], ch, [ky0, ky1], [kx0, kx1]), ch);
            }
        }
    }
}
