//! The pointwise (1x1) convolution kernel on channels-last rows: a matrix product with the
//! bias and the output clamp fused into its tiles.

use super::depthwise_kernel::Clamp;

/// Output channels per packed weight panel.
pub const PANEL: usize = 32;

/// Pointwise weights packed for [`pointwise`]: `[co.div_ceil(PANEL), ci, PANEL]`, output channels
/// innermost, the last panel zero-padded; bias `[co]` padded likewise. Equality is bitwise.
#[derive(Debug, Clone)]
pub struct Packed {
    pub(super) ci: usize,
    pub(super) co: usize,
    pub(super) panels: Vec<f32>,
    pub(super) bias: Vec<f32>,
}

impl PartialEq for Packed {
    fn eq(&self, other: &Self) -> bool {
        let bits = |a: &[f32], b: &[f32]| {
            a.iter()
                .map(|v| v.to_bits())
                .eq(b.iter().map(|v| v.to_bits()))
        };
        self.ci == other.ci
            && self.co == other.co
            && bits(&self.panels, &other.panels)
            && bits(&self.bias, &other.bias)
    }
}

impl Eq for Packed {}

impl Packed {
    /// Packs ONNX/tract weights `[co, ci]` (a `[co, ci, 1, 1]` kernel flattened) and bias `[co]`;
    /// None when a length does not match.
    pub fn new(w: &[f32], bias: &[f32], co: usize, ci: usize) -> Option<Self> {
        if w.len() != co * ci || bias.len() != co || co == 0 || ci == 0 {
            return None;
        }
        let n = co.div_ceil(PANEL);
        let mut panels = vec![0.0; n * ci * PANEL];
        for (o, row) in w.chunks_exact(ci).enumerate() {
            let (p, j) = (o / PANEL, o % PANEL);
            for (k, v) in row.iter().enumerate() {
                panels[(p * ci + k) * PANEL + j] = *v;
            }
        }
        let mut b = vec![0.0; n * PANEL];
        b[..co].copy_from_slice(bias);
        Some(Self {
            ci,
            co,
            panels,
            bias: b,
        })
    }

    /// Input channels.
    pub fn input_channels(&self) -> usize {
        self.ci
    }

    /// Output channels.
    pub fn output_channels(&self) -> usize {
        self.co
    }
}

/// `out[p, o] = clamp(bias[o] + sum_k x[p, k] * w[o, k])` for `x` `[pixels, ci]` and `out`
/// `[pixels, co]`, row-major. On x86-64 with AVX-512F or AVX2 + FMA (detected at run time,
/// [`has_simd`]) it runs register tiles with fused multiply-adds, elsewhere
/// [`pointwise_portable`]. Returns false (leaving `out` untouched) when a length does not match.
pub fn pointwise(x: &[f32], w: &Packed, clamp: Clamp, out: &mut [f32]) -> bool {
    if pixels(x, w, out).is_none() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if super::x86::has_avx512() {
            // SAFETY: AVX-512F is present and the lengths were checked by `pixels`.
            #[allow(unsafe_code)]
            unsafe {
                super::x86::gemm_avx512(x, w, clamp, out)
            };
            return true;
        }
        if super::x86::has_avx2_fma() {
            // SAFETY: AVX2 and FMA are present and the lengths were checked by `pixels`.
            #[allow(unsafe_code)]
            unsafe {
                super::x86::gemm_avx2(x, w, clamp, out)
            };
            return true;
        }
    }
    gemm_portable(x, w, clamp, out);
    true
}

/// Whether [`pointwise`] runs SIMD tiles on this CPU (else tract's own matrix product is the
/// faster choice).
pub fn has_simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::x86::has_avx512() || super::x86::has_avx2_fma()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`pointwise`] without fused multiply-adds or run-time dispatch.
pub fn pointwise_portable(x: &[f32], w: &Packed, clamp: Clamp, out: &mut [f32]) -> bool {
    if pixels(x, w, out).is_none() {
        return false;
    }
    gemm_portable(x, w, clamp, out);
    true
}

/// The pixel count when the lengths match (`x` `[pixels, ci]`, `out` `[pixels, co]`); the
/// kernels take at least one pixel, so an empty input is refused too.
pub(super) fn pixels(x: &[f32], w: &Packed, out: &[f32]) -> Option<usize> {
    let p = x.len() / w.ci;
    (p > 0 && x.len() == p * w.ci && out.len() == p * w.co).then_some(p)
}

/// Pixel by pixel and panel by panel, one panel's accumulators at a time (a loop the compiler
/// vectorizes for any target).
fn gemm_portable(x: &[f32], w: &Packed, clamp: Clamp, out: &mut [f32]) {
    let (ci, co) = (w.ci, w.co);
    for (row, o) in x.chunks_exact(ci).zip(out.chunks_exact_mut(co)) {
        for (p, panel) in w.panels.chunks_exact(ci * PANEL).enumerate() {
            let col = p * PANEL;
            let mut acc = [0.0f32; PANEL];
            acc.copy_from_slice(&w.bias[col..col + PANEL]);
            for (xv, wk) in row.iter().zip(panel.chunks_exact(PANEL)) {
                for (a, wv) in acc.iter_mut().zip(wk) {
                    *a += xv * wv;
                }
            }
            for (d, a) in o[col..].iter_mut().zip(acc) {
                *d = a.max(clamp.lo).min(clamp.hi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Kernel = fn(&[f32], &Packed, Clamp, &mut [f32]) -> bool;

    /// Every kernel this CPU can run, by name.
    fn kernels() -> Vec<(&'static str, Kernel)> {
        let all: Vec<(&'static str, Kernel)> =
            vec![("dispatched", pointwise), ("portable", pointwise_portable)];
        #[cfg(target_arch = "x86_64")]
        let all = {
            fn avx2(x: &[f32], w: &Packed, clamp: Clamp, out: &mut [f32]) -> bool {
                if pixels(x, w, out).is_none() {
                    return false;
                }
                // SAFETY: only listed when the CPU has AVX2 and FMA; lengths checked above.
                #[allow(unsafe_code)]
                unsafe {
                    super::super::x86::gemm_avx2(x, w, clamp, out)
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
    fn matches_the_definition_on_every_tile_and_panel_remainder() {
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for (pixels, ci, co) in [
            (1, 1, 1),
            (9, 5, 24),
            (15, 16, 40),
            (36, 33, 96),
            (23, 7, 70),
        ] {
            let x: Vec<f32> = (0..pixels * ci).map(|_| next()).collect();
            let w: Vec<f32> = (0..co * ci).map(|_| next()).collect();
            let b: Vec<f32> = (0..co).map(|_| next()).collect();
            let packed = Packed::new(&w, &b, co, ci).expect("lengths match");
            assert_eq!(
                (packed.input_channels(), packed.output_channels()),
                (ci, co)
            );
            for clamp in [Clamp::NONE, Clamp { lo: 0.0, hi: 0.3 }] {
                for (name, kernel) in kernels() {
                    let mut out = vec![f32::NAN; pixels * co];
                    assert!(kernel(&x, &packed, clamp, &mut out), "{name}");
                    for p in 0..pixels {
                        for o in 0..co {
                            let dot: f32 = (0..ci).map(|k| x[p * ci + k] * w[o * ci + k]).sum();
                            let want = (b[o] + dot).max(clamp.lo).min(clamp.hi);
                            let got = out[p * co + o];
                            assert!(
                                (got - want).abs() < 1e-5,
                                "{name} {pixels}x{ci}->{co} {clamp:?} at ({p}, {o}): {got} vs {want}"
                            );
                        }
                    }
                    assert!(!kernel(&x[1..], &packed, clamp, &mut out), "{name}");
                    assert!(!kernel(&x, &packed, clamp, &mut out[1..]), "{name}");
                }
            }
        }
        let packed = Packed::new(&[1.0; 4], &[0.0; 2], 2, 2).expect("lengths match");
        for (name, kernel) in kernels() {
            assert!(
                !kernel(&[], &packed, Clamp::NONE, &mut []),
                "{name}: empty input"
            );
        }
        assert!(Packed::new(&[1.0; 6], &[0.0; 2], 2, 2).is_none());
        assert!(Packed::new(&[1.0; 4], &[0.0; 3], 2, 2).is_none());
        assert!(Packed::new(&[], &[], 0, 0).is_none());
    }
}
