//! aarch64 kernels for [`super::q8_kernel`]'s 1x1 tiles, on lengths the caller has checked:
//! [`Multiply::Sdot`], `sdot` by element (Armv8.2's dot product: four i8 x i8 products summed
//! into each i32 lane), entered only after run-time feature detection; and [`Multiply::Smull`]
//! for cores without it (Cortex-A53, A72): `smull`/`smull2` (eight i8 x i8 products into i16
//! lanes, exact: at most 128 * 128) and `sadalp` (adjacent pairs added into i32 accumulators),
//! the pairs of each channel added at the end. Both multiply signed bytes, so the u8
//! activations enter as `x - 128` (a flip of the top bit) and the packed
//! [`PackedQ8::bias_128`] carries the `128 * sum_k w[o, k]` that the shift takes away.
#![allow(unsafe_code)]

use std::arch::aarch64::*;
use std::arch::asm;

use super::depthwise_kernel::tap_range;
use super::q8_kernel::{channel_acc, store, DepthwiseQ8, PackedQ8, Requant, GROUP, PANEL_Q8};

/// Whether [`Multiply::Sdot`] can run on this CPU.
pub fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// Which instructions a 1x1 tile multiplies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Multiply {
    /// `sdot` by element: needs the dot-product extension ([`has_dotprod`]).
    Sdot,
    /// `smull` / `smull2` and `sadalp`: any aarch64 core (NEON is part of the base ISA).
    Smull,
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
/// two pixels by one 32-channel panel at a time, multiplied as `multiply` says. `bias` is
/// `w.bias_128` (the bias for activations shifted by -128).
///
/// # Safety
/// With [`Multiply::Sdot`] the CPU has the dot-product extension ([`has_dotprod`]); the lengths
/// match at one pixel or more (`q8_kernel::lengths_match`); `bias` holds a value per packed
/// channel (whole panels).
pub unsafe fn gemm_neon(
    x: &[u8],
    w: &PackedQ8,
    bias: &[i32],
    rq: &Requant,
    out: &mut [u8],
    multiply: Multiply,
) {
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
            // (whole chunks or groups only, the rest copied byte by byte); the panel holds
            // `k.div_ceil(GROUP)` groups of `PANEL_Q8 * GROUP` bytes and only those groups are
            // read; `bias` holds `PANEL_Q8` values; `Sdot` only with the dot product (caller).
            unsafe {
                let r0 = x.as_ptr().add(p0 * k);
                let r1 = if rows == 2 { r0.add(k) } else { r0 };
                match multiply {
                    Multiply::Sdot => tile(r0, r1, k, panel.as_ptr(), bias.as_ptr(), &mut acc),
                    Multiply::Smull => {
                        tile_smull(r0, r1, k, panel.as_ptr(), bias.as_ptr(), &mut acc)
                    }
                }
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
/// As [`gemm_neon`]: the dot product is present; `r0` and `r1` point at `k` readable bytes,
/// `panel` at `k.div_ceil(GROUP) * PANEL_Q8 * GROUP` bytes, `bias` at `PANEL_Q8` values.
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

/// Channels [`tile_smull`] accumulates at once: four registers of four channels, each channel
/// in two registers of pair sums.
const HALF: usize = PANEL_Q8 / 2;

/// [`tile`] on `smull` and `sadalp`, half a panel (16 channels) at a time: per group of four
/// inputs, the four bytes of each row broadcast to every 32-bit lane, multiplied with 16 bytes
/// of weights (4 channels x 4 inputs) by `smull` (low 8) and `smull2` (high 8) into i16
/// products, whose adjacent pairs `sadalp` adds into i32 lanes (channel `c`'s lanes `2c` and
/// `2c + 1` of the pair of registers); `addp` then sums each channel's two lanes.
///
/// # Safety
/// As [`tile`], except that any aarch64 core runs it.
#[target_feature(enable = "neon")]
unsafe fn tile_smull(
    r0: *const u8,
    r1: *const u8,
    k: usize,
    panel: *const i8,
    bias: *const i32,
    acc: &mut [[i32; PANEL_Q8]; 2],
) {
    let groups = k.div_ceil(GROUP);
    // The four input bytes of group `g` of a row, shifted to i8, in every 32-bit lane. The
    // last group of a row whose length is not a multiple of four is copied (its missing bytes
    // meet zero weights).
    let word = |r: *const u8, g: usize| -> int8x16_t {
        let mut b = [0u8; GROUP];
        let n = GROUP.min(k - g * GROUP);
        // SAFETY: bytes g * GROUP .. g * GROUP + n of the row lie inside its `k` bytes.
        unsafe { std::ptr::copy_nonoverlapping(r.add(g * GROUP), b.as_mut_ptr(), n) };
        let v = u32::from_le_bytes(b) ^ 0x8080_8080;
        vreinterpretq_s8_u32(vdupq_n_u32(v))
    };
    for half in 0..2 {
        let mut s0 = [[vdupq_n_s32(0); 2]; HALF / 4];
        let mut s1 = s0;
        for g in 0..groups {
            let (x0, x1) = (word(r0, g), word(r1, g));
            // SAFETY: group `g < k.div_ceil(GROUP)` of the panel, this half's 64 bytes.
            let wg = unsafe { panel.add((g * PANEL_Q8 + half * HALF) * GROUP) };
            for (q, (a0, a1)) in s0.iter_mut().zip(s1.iter_mut()).enumerate() {
                // SAFETY: 16 bytes of the 64 above.
                let wv = unsafe { vld1q_s8(wg.add(16 * q)) };
                let lo = vget_low_s8(wv);
                a0[0] = vpadalq_s16(a0[0], vmull_s8(lo, vget_low_s8(x0)));
                a0[1] = vpadalq_s16(a0[1], vmull_high_s8(wv, x0));
                a1[0] = vpadalq_s16(a1[0], vmull_s8(lo, vget_low_s8(x1)));
                a1[1] = vpadalq_s16(a1[1], vmull_high_s8(wv, x1));
            }
        }
        for (row, s) in acc.iter_mut().zip([s0, s1]) {
            for (q, pair) in s.iter().enumerate() {
                let c = half * HALF + 4 * q;
                // SAFETY: `bias` holds `PANEL_Q8` values and `c + 4 <= PANEL_Q8`; `row` too.
                unsafe {
                    let sum = vaddq_s32(vpaddq_s32(pair[0], pair[1]), vld1q_s32(bias.add(c)));
                    vst1q_s32(row.as_mut_ptr().add(c), sum);
                }
            }
        }
    }
}

/// Channels per register block of [`depthwise_neon`]: four i32 registers.
const DW_BLOCK: usize = 16;

/// [`super::depthwise_q8`] on NEON: per output pixel and 16-channel block, each in-plane tap's
/// inputs less the zero point widened to i16 (`usubl`, exact: `|x - zp| <= 255`) and multiplied
/// by the tap's weights (pre-widened to i16 at load) into four i32 accumulators
/// (`smlal`/`smlal2`); the padding contributes nothing and is skipped, as in the portable loop.
/// Channels past the last whole block take the shared scalar loop.
///
/// # Safety
/// The lengths match (`q8_kernel::depthwise_lengths_match`).
#[target_feature(enable = "neon")]
pub unsafe fn depthwise_neon(x: &[u8], w: &DepthwiseQ8, rq: &Requant, out: &mut [u8]) {
    let g = w.geometry();
    let (c, [h, wd], [ho, wo], [kh, kw], s) = (g.channels, g.input, g.output, g.kernel, g.stride);
    let [pt, pl] = g.pad;
    // The zero point is a u8 code (`DepthwiseQ8::new` takes it as one).
    let zp = vdupq_n_u8(w.x_zero_point as u8);
    let blocks = c / DW_BLOCK * DW_BLOCK;
    for y in 0..ho {
        let (ky0, ky1) = tap_range(y, s, pt, h, kh);
        for xo in 0..wo {
            let (kx0, kx1) = tap_range(xo, s, pl, wd, kw);
            let at = (y * wo + xo) * c;
            let o = &mut out[at..at + c];
            for ch in (0..blocks).step_by(DW_BLOCK) {
                let b = &w.bias[ch..ch + DW_BLOCK];
                // SAFETY: `b` holds 16 values.
                let mut acc: [int32x4_t; 4] =
                    std::array::from_fn(|j| unsafe { vld1q_s32(b.as_ptr().add(4 * j)) });
                for ky in ky0..ky1 {
                    let row = (y * s + ky - pt) * wd;
                    for kx in kx0..kx1 {
                        let from = (row + xo * s + kx - pl) * c + ch;
                        let tap = (ky * kw + kx) * c + ch;
                        let (xs, ws) = (&x[from..from + DW_BLOCK], &w.taps16[tap..tap + DW_BLOCK]);
                        // SAFETY: 16 bytes and 16 i16 in the slices just taken.
                        let (xv, w0, w1) = unsafe {
                            (
                                vld1q_u8(xs.as_ptr()),
                                vld1q_s16(ws.as_ptr()),
                                vld1q_s16(ws.as_ptr().add(8)),
                            )
                        };
                        let lo = vreinterpretq_s16_u16(vsubl_u8(vget_low_u8(xv), vget_low_u8(zp)));
                        let hi = vreinterpretq_s16_u16(vsubl_high_u8(xv, zp));
                        acc[0] = vmlal_s16(acc[0], vget_low_s16(lo), vget_low_s16(w0));
                        acc[1] = vmlal_high_s16(acc[1], lo, w0);
                        acc[2] = vmlal_s16(acc[2], vget_low_s16(hi), vget_low_s16(w1));
                        acc[3] = vmlal_high_s16(acc[3], hi, w1);
                    }
                }
                let mut a = [0i32; DW_BLOCK];
                for (j, v) in acc.iter().enumerate() {
                    // SAFETY: lanes 4j .. 4j + 4 of the 16 in `a`.
                    unsafe { vst1q_s32(a.as_mut_ptr().add(4 * j), *v) };
                }
                store(&a, rq, ch, &mut o[ch..ch + DW_BLOCK]);
            }
            for (ch, d) in o.iter_mut().enumerate().skip(blocks) {
                *d = rq.code(channel_acc(x, w, [y, xo], ch, [ky0, ky1], [kx0, kx1]), ch);
            }
        }
    }
}
