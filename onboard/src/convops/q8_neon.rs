//! aarch64 kernel for [`super::q8_kernel`]: the 1x1 tiles on `sdot` by element (Armv8.2's dot
//! product: four i8 x i8 products summed into each i32 lane), entered only after run-time
//! feature detection, on lengths the caller has checked. `sdot` multiplies signed bytes, so the
//! u8 activations enter as `x - 128` (a flip of the top bit) and the packed
//! [`PackedQ8::bias_128`] carries the `128 * sum_k w[o, k]` that the shift takes away.
//! Cores without the dot product run the portable loop, which the compiler vectorizes for NEON.
#![allow(unsafe_code)]

use std::arch::aarch64::*;
use std::arch::asm;

use super::q8_kernel::{store, PackedQ8, Requant, GROUP, PANEL_Q8};

/// Whether [`gemm_sdot`] can run on this CPU.
pub fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// Accumulator registers per pixel: one panel's 32 channels, four per register.
const REGS: usize = PANEL_Q8 / 4;
/// Input bytes per register: four groups of [`GROUP`].
const CHUNK: usize = 16;

/// `acc[j] += sum_i w[4 j + i] * x[4 L + i]` for the four lanes `j` (`sdot` by element).
///
/// # Safety
/// The CPU has the dot-product extension ([`has_dotprod`]).
#[inline(always)]
unsafe fn sdot<const L: i32>(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let mut a = acc;
    // SAFETY: register-only instruction of the dot-product extension, present (caller).
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {a:v}.4s, {w:v}.16b, {x:v}.4b[{l}]",
            a = inout(vreg) a,
            w = in(vreg) w,
            x = in(vreg) x,
            l = const L,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    a
}

/// `out = code(x * w + bias)` (see `q8_kernel`) with `x` `[pixels, k]`, `out` `[pixels, co]`,
/// two pixels by one 32-channel panel at a time (16 accumulator registers, 8 of weights).
/// `bias` is `w.bias_128` (the bias for activations shifted by -128).
///
/// # Safety
/// The CPU has the dot-product extension ([`has_dotprod`]); the lengths match at one pixel or
/// more (`q8_kernel::lengths_match`); `bias` holds a value per packed channel (whole panels).
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn gemm_sdot(x: &[u8], w: &PackedQ8, bias: &[i32], rq: &Requant, out: &mut [u8]) {
    let (k, co) = (w.k, w.co);
    let pixels = x.len() / k;
    for p in 0..co.div_ceil(PANEL_Q8) {
        let col = p * PANEL_Q8;
        let cols = PANEL_Q8.min(co - col);
        let panel = w.panel(p);
        let bias = &bias[col..col + PANEL_Q8];
        let mut p0 = 0;
        while p0 < pixels {
            let rows = (pixels - p0).min(2);
            let mut acc = [[0i32; PANEL_Q8]; 2];
            // SAFETY: rows p0..p0 + rows are below `pixels`, so the row reads stay inside `x`
            // (whole chunks only below `k / CHUNK * CHUNK`, the rest copied byte by byte); the
            // panel holds `k.div_ceil(GROUP)` groups of `PANEL_Q8 * GROUP` bytes and only those
            // groups are read; `bias` holds `PANEL_Q8` values; the dot product is present.
            unsafe {
                let r0 = x.as_ptr().add(p0 * k);
                let r1 = if rows == 2 { r0.add(k) } else { r0 };
                tile(r0, r1, k, panel.as_ptr(), bias.as_ptr(), &mut acc);
            }
            for (r, a) in acc.iter().enumerate().take(rows) {
                let o = &mut out[(p0 + r) * co + col..(p0 + r) * co + col + cols];
                if cols == PANEL_Q8 {
                    store(a, rq, col, o);
                } else {
                    for (j, d) in o.iter_mut().enumerate() {
                        *d = rq.code(a[j], col + j);
                    }
                }
            }
            p0 += rows;
        }
    }
}

/// The accumulators of input rows `r0` and `r1` (`k` bytes each; the same row twice for a
/// single pixel) against one panel, into `acc`.
///
/// # Safety
/// As [`gemm_sdot`]: `r0` and `r1` point at `k` readable bytes, `panel` at
/// `k.div_ceil(GROUP) * PANEL_Q8 * GROUP` bytes, `bias` at `PANEL_Q8` values.
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile(
    r0: *const u8,
    r1: *const u8,
    k: usize,
    panel: *const i8,
    bias: *const i32,
    acc: &mut [[i32; PANEL_Q8]; 2],
) {
    // SAFETY: every pointer stays inside the extents the caller guarantees (see the loops).
    unsafe {
        let mut a0 = [vdupq_n_s32(0); REGS];
        for (j, a) in a0.iter_mut().enumerate() {
            *a = vld1q_s32(bias.add(4 * j));
        }
        let mut a1 = a0;
        let flip = vdupq_n_u8(0x80);
        let signed = |v: uint8x16_t| vreinterpretq_s8_u8(veorq_u8(v, flip));
        let whole = k / CHUNK;
        for c in 0..whole {
            let x0 = signed(vld1q_u8(r0.add(c * CHUNK)));
            let x1 = signed(vld1q_u8(r1.add(c * CHUNK)));
            let g = panel.add(c * CHUNK / GROUP * PANEL_Q8 * GROUP);
            lanes(g, x0, x1, CHUNK / GROUP, &mut a0, &mut a1);
        }
        let rest = k - whole * CHUNK;
        if rest > 0 {
            let mut b0 = [0u8; CHUNK];
            let mut b1 = [0u8; CHUNK];
            std::ptr::copy_nonoverlapping(r0.add(whole * CHUNK), b0.as_mut_ptr(), rest);
            std::ptr::copy_nonoverlapping(r1.add(whole * CHUNK), b1.as_mut_ptr(), rest);
            let g = panel.add(whole * CHUNK / GROUP * PANEL_Q8 * GROUP);
            // Groups past `k` are not packed: only the groups holding the rest are read (the
            // weights of a partial group are zero-padded, so its padding bytes add nothing).
            let groups = rest.div_ceil(GROUP);
            let (x0, x1) = (signed(vld1q_u8(b0.as_ptr())), signed(vld1q_u8(b1.as_ptr())));
            lanes(g, x0, x1, groups, &mut a0, &mut a1);
        }
        for j in 0..REGS {
            vst1q_s32(acc[0].as_mut_ptr().add(4 * j), a0[j]);
            vst1q_s32(acc[1].as_mut_ptr().add(4 * j), a1[j]);
        }
    }
}

/// The first `groups` (1 to 4) groups of one input chunk: group `L` is lane `L` of `x0` / `x1`
/// against the panel's weights at `g + L * PANEL_Q8 * GROUP`.
///
/// # Safety
/// The dot product is present; `g` points at `groups * PANEL_Q8 * GROUP` readable bytes.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn lanes(
    g: *const i8,
    x0: int8x16_t,
    x1: int8x16_t,
    groups: usize,
    a0: &mut [int32x4_t; REGS],
    a1: &mut [int32x4_t; REGS],
) {
    // SAFETY: group `l < groups` reads its `PANEL_Q8 * GROUP` bytes inside the extent above.
    unsafe {
        macro_rules! lane {
            ($l:literal) => {
                let wg = g.add($l * PANEL_Q8 * GROUP);
                for j in 0..REGS {
                    let wv = vld1q_s8(wg.add(16 * j));
                    a0[j] = sdot::<$l>(a0[j], wv, x0);
                    a1[j] = sdot::<$l>(a1[j], wv, x1);
                }
            };
        }
        lane!(0);
        if groups > 1 {
            lane!(1);
        }
        if groups > 2 {
            lane!(2);
        }
        if groups > 3 {
            lane!(3);
        }
    }
}
