//! The depthwise convolution kernel on channels-last planes, with its output clamp fused.

/// Output bounds applied after the bias: `out = min(max(conv, lo), hi)`. [`Clamp::NONE`] leaves
/// the convolution as is; ReLU6 is `{ lo: 0, hi: 6 }`. Equality is bitwise.
#[derive(Debug, Clone, Copy)]
pub struct Clamp {
    /// Lower bound.
    pub lo: f32,
    /// Upper bound.
    pub hi: f32,
}

impl PartialEq for Clamp {
    fn eq(&self, other: &Self) -> bool {
        self.lo.to_bits() == other.lo.to_bits() && self.hi.to_bits() == other.hi.to_bits()
    }
}

impl Eq for Clamp {}

impl Clamp {
    /// No bounds.
    pub const NONE: Self = Self {
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
    };
}

/// Shape of one depthwise convolution: `channels` planes of `input` `[h, w]` to `output`
/// `[h, w]`, kernel `[kh, kw]`, one stride for both axes, zero padding top and left (bottom and
/// right follow from the output size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Channels (= groups).
    pub channels: usize,
    /// Input plane `[h, w]`.
    pub input: [usize; 2],
    /// Output plane `[h, w]`.
    pub output: [usize; 2],
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding `[top, left]`.
    pub pad: [usize; 2],
}

/// `out[y, x, c] = clamp(bias[c] + sum_{ky, kx} w[ky, kx, c] * x_padded[y * s + ky, x * s + kx,
/// c])` on channels-last planes: `x` `[h, w, c]`, `w_taps` `[kh, kw, c]` (see [`taps_major`]),
/// `bias` `[c]`, `out` `[ho, wo, c]`, all row-major. Multiply-adds are fused where the core has
/// FMA (detected at run time on x86-64: AVX-512F for 3x3 and 5x5 kernels, else AVX2 + FMA;
/// always on aarch64). Returns false (leaving `out` untouched) when a length does not match `g`.
pub fn depthwise_hwc(
    x: &[f32],
    w_taps: &[f32],
    bias: &[f32],
    g: &Geometry,
    clamp: Clamp,
    out: &mut [f32],
) -> bool {
    if !lengths_match(x, w_taps, bias, g, out) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if super::x86::has_avx512() {
        // SAFETY: the running CPU supports AVX-512F, checked just above; lengths checked.
        #[allow(unsafe_code)]
        if unsafe { super::x86::depthwise_avx512(x, w_taps, bias, g, clamp, out) } {
            return true;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if super::x86::has_avx2_fma() {
        // SAFETY: the running CPU supports AVX2 and FMA, checked just above.
        #[allow(unsafe_code)]
        unsafe {
            hwc_avx2_fma(x, w_taps, bias, g, clamp, out)
        };
        return true;
    }
    #[cfg(target_arch = "aarch64")]
    hwc::<Fused>(x, w_taps, bias, g, clamp, out);
    #[cfg(not(target_arch = "aarch64"))]
    hwc::<Split>(x, w_taps, bias, g, clamp, out);
    true
}

/// [`depthwise_hwc`] without fused multiply-adds or run-time dispatch: the baseline every
/// target runs when it lacks FMA.
pub fn depthwise_hwc_portable(
    x: &[f32],
    w_taps: &[f32],
    bias: &[f32],
    g: &Geometry,
    clamp: Clamp,
    out: &mut [f32],
) -> bool {
    if !lengths_match(x, w_taps, bias, g, out) {
        return false;
    }
    hwc::<Split>(x, w_taps, bias, g, clamp, out);
    true
}

fn lengths_match(x: &[f32], w_taps: &[f32], bias: &[f32], g: &Geometry, out: &[f32]) -> bool {
    let c = g.channels;
    x.len() == c * g.input[0] * g.input[1]
        && out.len() == c * g.output[0] * g.output[1]
        && w_taps.len() == c * g.kernel[0] * g.kernel[1]
        && bias.len() == c
        && g.stride > 0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn hwc_avx2_fma(x: &[f32], w_taps: &[f32], bias: &[f32], g: &Geometry, c: Clamp, out: &mut [f32]) {
    hwc::<Fused>(x, w_taps, bias, g, c, out);
}

/// How `a * b + c` is computed.
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// One rounding (FMA instruction where the target enables it).
struct Fused;
/// Two roundings.
struct Split;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl MulAdd for Split {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Channels per register block: accumulators the compiler keeps in vector registers.
const BLOCK: usize = 16;

/// The loop nest: per output pixel, per block of [`BLOCK`] channels, the in-bounds taps
/// accumulated in registers, then clamped and stored once. Lengths are checked by the caller.
#[inline(always)]
fn hwc<M: MulAdd>(
    x: &[f32],
    w_taps: &[f32],
    bias: &[f32],
    g: &Geometry,
    cl: Clamp,
    out: &mut [f32],
) {
    let (c, [h, wd], [ho, wo], [kh, kw], s) = (g.channels, g.input, g.output, g.kernel, g.stride);
    let [pt, pl] = g.pad;
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
                let mut acc = [0.0f32; BLOCK];
                acc.copy_from_slice(&bias[ch..ch + BLOCK]);
                for ky in ky0..ky1 {
                    let row = (y * s + ky - pt) * wd;
                    for kx in kx0..kx1 {
                        let from = (row + xo * s + kx - pl) * c + ch;
                        let tap = (ky * kw + kx) * c + ch;
                        let xs = &x[from..from + BLOCK];
                        let ws = &w_taps[tap..tap + BLOCK];
                        for i in 0..BLOCK {
                            acc[i] = M::mul_add(ws[i], xs[i], acc[i]);
                        }
                    }
                }
                for (d, a) in o[ch..ch + BLOCK].iter_mut().zip(acc) {
                    *d = a.max(cl.lo).min(cl.hi);
                }
                ch += BLOCK;
            }
            for ch in blocks..c {
                let mut acc = bias[ch];
                for ky in ky0..ky1 {
                    let row = (y * s + ky - pt) * wd;
                    for kx in kx0..kx1 {
                        let v = x[(row + xo * s + kx - pl) * c + ch];
                        acc = M::mul_add(w_taps[(ky * kw + kx) * c + ch], v, acc);
                    }
                }
                o[ch] = acc.max(cl.lo).min(cl.hi);
            }
        }
    }
}

/// The taps `lo..hi` of a `k`-wide window at output position `o` (stride `s`, padding `pad`)
/// that fall inside an input axis of `len` values: those with `0 <= o * s + t - pad < len`.
pub(super) fn tap_range(o: usize, s: usize, pad: usize, len: usize, k: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(o * s);
    let hi = k.min((len + pad).saturating_sub(o * s));
    (lo, hi.max(lo))
}

/// `dst[j * rows + i] = src[i * cols + j]` for a row-major `[rows, cols]` `src`.
pub fn transpose<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    if src.len() < rows * cols || dst.len() < rows * cols {
        return;
    }
    for (i, row) in src.chunks_exact(cols.max(1)).take(rows).enumerate() {
        for (j, v) in row.iter().enumerate() {
            dst[j * rows + i] = *v;
        }
    }
}

/// Depthwise weights `[c, kh, kw]` (ONNX/tract layout) reordered to `[kh, kw, c]`.
pub fn taps_major<T: Copy + Default>(w: &[T], c: usize, taps: usize) -> Vec<T> {
    let mut out = vec![T::default(); w.len()];
    transpose(w, c, taps, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition on channels-first planes with explicit zero padding: `x` `[c, h, w]`,
    /// `w` `[c, kh, kw]`, result `[c, ho, wo]`.
    fn reference(x: &[f32], w: &[f32], b: &[f32], g: &Geometry) -> Vec<f32> {
        let ([h, wd], [ho, wo], [kh, kw]) = (g.input, g.output, g.kernel);
        let mut out = vec![0.0; g.channels * ho * wo];
        for c in 0..g.channels {
            for y in 0..ho {
                for xo in 0..wo {
                    let mut acc = b[c];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (y * g.stride + ky) as isize - g.pad[0] as isize;
                            let ix = (xo * g.stride + kx) as isize - g.pad[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                acc += w[(c * kh + ky) * kw + kx]
                                    * x[(c * h + iy as usize) * wd + ix as usize];
                            }
                        }
                    }
                    out[(c * ho + y) * wo + xo] = acc;
                }
            }
        }
        out
    }

    type Kernel = fn(&[f32], &[f32], &[f32], &Geometry, Clamp, &mut [f32]) -> bool;

    /// Every kernel this CPU can run, by name.
    fn kernels() -> Vec<(&'static str, Kernel)> {
        let all: Vec<(&'static str, Kernel)> = vec![
            ("dispatched", depthwise_hwc),
            ("portable", depthwise_hwc_portable),
        ];
        #[cfg(target_arch = "x86_64")]
        let all = {
            fn avx2(
                x: &[f32],
                w: &[f32],
                b: &[f32],
                g: &Geometry,
                c: Clamp,
                o: &mut [f32],
            ) -> bool {
                if !lengths_match(x, w, b, g, o) {
                    return false;
                }
                // SAFETY: only listed when the CPU has AVX2 and FMA.
                #[allow(unsafe_code)]
                unsafe {
                    hwc_avx2_fma(x, w, b, g, c, o)
                };
                true
            }
            let mut all = all;
            if super::super::x86::has_avx2_fma() {
                all.push(("avx2", avx2));
            }
            all
        };
        all
    }

    #[test]
    fn matches_the_definition_for_every_kernel_stride_padding_and_channel_tail() {
        let mut seed = 1u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let clamps = [
            Clamp::NONE,
            Clamp { lo: 0.0, hi: 6.0 },
            Clamp { lo: -0.1, hi: 0.2 },
        ];
        for &(k, s, pad, h, w) in &[
            (3, 1, [1, 1], 12, 12),
            (3, 2, [0, 0], 13, 12),
            (5, 1, [2, 2], 7, 9),
            (5, 2, [1, 1], 12, 12),
            (3, 2, [1, 1], 3, 3),
            (5, 2, [2, 2], 1, 2),
        ] {
            // One channel count below a register block, one with a block and a tail.
            for c in [3, 2 * BLOCK + 5] {
                let ho = (h + 2 * pad[0] - k) / s + 1;
                let wo = (w + 2 * pad[1] - k) / s + 1;
                let g = Geometry {
                    channels: c,
                    input: [h, w],
                    output: [ho, wo],
                    kernel: [k, k],
                    stride: s,
                    pad,
                };
                let x: Vec<f32> = (0..c * h * w).map(|_| next()).collect();
                let wt: Vec<f32> = (0..c * k * k).map(|_| next()).collect();
                let b: Vec<f32> = (0..c).map(|_| next()).collect();
                let want_chw = reference(&x, &wt, &b, &g);
                let mut want = vec![0.0; want_chw.len()];
                transpose(&want_chw, c, ho * wo, &mut want);
                let mut x_hwc = vec![0.0; x.len()];
                transpose(&x, c, h * w, &mut x_hwc);
                let taps = taps_major(&wt, c, k * k);
                for clamp in clamps {
                    for (name, kernel) in kernels() {
                        let mut got = vec![f32::NAN; want.len()];
                        assert!(kernel(&x_hwc, &taps, &b, &g, clamp, &mut got), "{name}");
                        for (i, (v, e)) in got.iter().zip(&want).enumerate() {
                            let e = e.max(clamp.lo).min(clamp.hi);
                            assert!(
                                (v - e).abs() < 1e-5,
                                "{name} c{c} k{k} s{s} pad{pad:?} {h}x{w} {clamp:?} at {i}: \
                                 {v} vs {e}"
                            );
                        }
                    }
                }
                let mut out = vec![0.0; want.len()];
                assert!(!depthwise_hwc(
                    &x_hwc[1..],
                    &taps,
                    &b,
                    &g,
                    Clamp::NONE,
                    &mut out
                ));
                assert!(!depthwise_hwc(
                    &x_hwc,
                    &taps[1..],
                    &b,
                    &g,
                    Clamp::NONE,
                    &mut out
                ));
                assert!(!depthwise_hwc(
                    &x_hwc,
                    &taps,
                    &b,
                    &g,
                    Clamp::NONE,
                    &mut out[1..]
                ));
                let g0 = Geometry { stride: 0, ..g };
                assert!(!depthwise_hwc_portable(
                    &x_hwc,
                    &taps,
                    &b,
                    &g0,
                    Clamp::NONE,
                    &mut out
                ));
            }
        }
    }
}
