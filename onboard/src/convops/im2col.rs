//! A dense (one-group) convolution on channels-last tensors as patch rows through the
//! [`pointwise`] kernel.

use super::depthwise_kernel::{transpose, Clamp, Geometry};
use super::pointwise_kernel::{pointwise, Packed};

/// Patch rows of `x` `[h, w, ci]` (channels-last) for a `g.kernel` window at `g.stride` with
/// zero padding `g.pad` (`g.channels` = `ci`): row `y * wo + x` holds the window's values in
/// `[ky, kx, ci]` order, zero outside the plane. `rows` is resized to `ho * wo * kh * kw * ci`.
/// Returns false when `x` does not hold `h * w * ci` values.
pub fn patches(x: &[f32], g: &Geometry, rows: &mut Vec<f32>) -> bool {
    patches_padded(x, g, 0.0, rows)
}

/// [`patches`] for any element type, with `pad` outside the plane (for u8 activations, their
/// zero point: the code of the real value 0).
pub fn patches_padded<T: Copy>(x: &[T], g: &Geometry, pad: T, rows: &mut Vec<T>) -> bool {
    let len = g.kernel[0] * g.kernel[1] * g.channels;
    patches_strided(x, g, pad, len, rows)
}

/// [`patches_padded`] into rows of `row_len >= kh * kw * ci` values, the values past a patch
/// set to `pad` (so a kernel can read whole groups of four; the weights there are 0). False also
/// when `row_len` is shorter than a patch.
pub fn patches_strided<T: Copy>(
    x: &[T],
    g: &Geometry,
    pad: T,
    row_len: usize,
    rows: &mut Vec<T>,
) -> bool {
    let (ci, [h, w], [ho, wo], [kh, kw], s, [pt, pl]) =
        (g.channels, g.input, g.output, g.kernel, g.stride, g.pad);
    if x.len() != h * w * ci || s == 0 || row_len < kh * kw * ci {
        return false;
    }
    rows.clear();
    rows.resize(ho * wo * row_len, pad);
    if row_len == 0 || wo == 0 {
        return true;
    }
    for (y, out_row) in rows.chunks_exact_mut(wo * row_len).enumerate() {
        // Window rows inside the plane.
        let ky0 = pt.saturating_sub(y * s);
        let ky1 = kh.min((h + pt).saturating_sub(y * s)).max(ky0);
        for (xo, row) in out_row.chunks_exact_mut(row_len).enumerate() {
            // Window columns inside the plane: one contiguous run per window row.
            let kx0 = pl.saturating_sub(xo * s);
            let kx1 = kw.min((w + pl).saturating_sub(xo * s)).max(kx0);
            let run = (kx1 - kx0) * ci;
            if run == 0 {
                continue;
            }
            for ky in ky0..ky1 {
                let from = ((y * s + ky - pt) * w + xo * s + kx0 - pl) * ci;
                let to = (ky * kw + kx0) * ci;
                copy_run(&mut row[to..to + run], &x[from..from + run]);
            }
        }
    }
    true
}

/// `dst.copy_from_slice(src)` for the short runs of a patch (the stem's are 9 values): up to 16
/// values as two overlapping copies of a fixed length, which compile to plain moves instead of
/// a call.
#[inline]
fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    let n = dst.len();
    match n {
        8..=16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..].copy_from_slice(&src[n - 8..n]);
        }
        4..=7 => {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..].copy_from_slice(&src[n - 4..n]);
        }
        _ => dst.copy_from_slice(src),
    }
}

std::thread_local! {
    static ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The one-group convolution `g` (`g.channels` = input channels) of channels-last `x`
/// `[h, w, ci]` into `out` `[ho, wo, co]`: [`patches`] (into a buffer reused per thread) through
/// [`pointwise`] with `w` packed from [`patch_order`] weights. False when a length does not match.
pub fn im2col(x: &[f32], g: &Geometry, w: &Packed, clamp: Clamp, out: &mut [f32]) -> bool {
    ROWS.with(|rows| {
        let rows = &mut rows.borrow_mut();
        patches(x, g, rows) && pointwise(rows, w, clamp, out)
    })
}

/// Weights `[co, ci, kh, kw]` reordered to `[co, kh, kw, ci]`, the order of a [`patches`] row
/// (`taps` = `kh * kw`).
pub fn patch_order<T: Copy + Default>(w: &[T], ci: usize, taps: usize) -> Vec<T> {
    let mut out = vec![T::default(); w.len()];
    for (src, dst) in w
        .chunks_exact((ci * taps).max(1))
        .zip(out.chunks_exact_mut((ci * taps).max(1)))
    {
        transpose(src, ci, taps, dst);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_rows_are_the_patches_then_the_pad() {
        // The stem's shape: patches of 27 in rows of 28.
        let g = Geometry {
            channels: 3,
            input: [5, 5],
            output: [3, 3],
            kernel: [3, 3],
            stride: 2,
            pad: [1, 1],
        };
        let x: Vec<u8> = (0..75).collect();
        let (mut plain, mut strided) = (Vec::new(), Vec::new());
        assert!(patches_padded(&x, &g, 200, &mut plain));
        assert!(patches_strided(&x, &g, 200, 28, &mut strided));
        assert_eq!(strided.len(), 9 * 28);
        for (row, patch) in strided.chunks_exact(28).zip(plain.chunks_exact(27)) {
            assert_eq!(&row[..27], patch);
            assert_eq!(row[27], 200);
        }
        assert!(!patches_strided(&x, &g, 200, 26, &mut strided));
    }

    #[test]
    fn patches_through_the_pointwise_kernel_match_the_definition() {
        let mut seed = 3u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        // (ci, co, side, kernel, stride, pad): the stem's shape, and odd ones.
        for (ci, co, side, k, s, pad) in
            [(3, 32, 11, 3, 2, 0), (2, 5, 7, 3, 1, 1), (4, 3, 6, 5, 2, 2)]
        {
            let out_side = (side + 2 * pad - k) / s + 1;
            let g = Geometry {
                channels: ci,
                input: [side, side],
                output: [out_side, out_side],
                kernel: [k, k],
                stride: s,
                pad: [pad, pad],
            };
            let x: Vec<f32> = (0..side * side * ci).map(|_| next()).collect();
            let w: Vec<f32> = (0..co * ci * k * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..co).map(|_| next()).collect();
            let packed = Packed::new(&patch_order(&w, ci, k * k), &b, co, ci * k * k)
                .expect("lengths match");
            let mut out = vec![f32::NAN; out_side * out_side * co];
            assert!(im2col(&x, &g, &packed, Clamp::NONE, &mut out));
            for y in 0..out_side {
                for xo in 0..out_side {
                    for o in 0..co {
                        let mut want = b[o];
                        for c in 0..ci {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (y * s + ky) as isize - pad as isize;
                                    let ix = (xo * s + kx) as isize - pad as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= side as isize
                                        || ix >= side as isize
                                    {
                                        continue;
                                    }
                                    let v = x[(iy as usize * side + ix as usize) * ci + c];
                                    want += w[((o * ci + c) * k + ky) * k + kx] * v;
                                }
                            }
                        }
                        let got = out[(y * out_side + xo) * co + o];
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{ci}->{co} k{k} s{s}: {got} vs {want}"
                        );
                    }
                }
            }
            assert!(!patches(&x[1..], &g, &mut Vec::new()));
            assert!(!im2col(&x[1..], &g, &packed, Clamp::NONE, &mut out));
        }
    }
}
