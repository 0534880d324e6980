//! The integer kernels against ONNX's `QLinearConv` definition, written out loop by loop on
//! channels-first planes, for every layer geometry and remainder the backbones use.

use std::path::Path;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::optim::Optimizer;

use super::depthwise_kernel::Geometry;
use super::q8_kernel::*;
use super::q8_op::{ConvQ8, QConvNode};
use super::q8_paths::*;
use super::{patch_order, patches_padded};

/// ONNX `QLinearConv` (reference implementation's arithmetic) on channels-first `x`
/// `[ci, h, w]`, weights `[co, ci / group, kh, kw]`, bias `[co]`: result `[co, ho, wo]`.
#[allow(clippy::too_many_arguments)]
fn qlinear_conv(
    x: &[u8],
    w: &[i8],
    bias: &[i32],
    g: &Geometry,
    co: usize,
    group: usize,
    (x_scale, x_zp): (f32, u8),
    w_scale: &[f32],
    (y_scale, y_zp): (f32, u8),
) -> Vec<u8> {
    let (ci, [h, wd], [ho, wo], [kh, kw], s, [pt, pl]) =
        (g.channels, g.input, g.output, g.kernel, g.stride, g.pad);
    let (cig, cog) = (ci / group, co / group);
    let mut out = vec![0u8; co * ho * wo];
    for o in 0..co {
        let grp = o / cog;
        let scale = f64::from(x_scale * w_scale[if w_scale.len() == 1 { 0 } else { o }] / y_scale);
        for y in 0..ho {
            for xo in 0..wo {
                let mut acc = i64::from(bias[o]);
                for c in 0..cig {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (y * s + ky) as isize - pt as isize;
                            let ix = (xo * s + kx) as isize - pl as isize;
                            let v = if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                0
                            } else {
                                let ch = grp * cig + c;
                                i64::from(x[(ch * h + iy as usize) * wd + ix as usize])
                                    - i64::from(x_zp)
                            };
                            acc += v * i64::from(w[((o * cig + c) * kh + ky) * kw + kx]);
                        }
                    }
                }
                let r = (acc as f64 * scale + f64::from(y_zp)).clamp(0.0, 255.0);
                out[(o * ho + y) * wo + xo] = r.round_ties_even() as u8;
            }
        }
    }
    out
}

/// `[c, h, w]` to `[h, w, c]`.
fn hwc(x: &[u8], c: usize, hw: usize) -> Vec<u8> {
    let mut out = vec![0; x.len()];
    super::transpose(x, c, hw, &mut out);
    out
}

struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0 >> 8
    }
    fn u8s(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as u8 as i8).collect()
    }
    fn scale(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next() % 1000) as f32 / 1000.0
    }
}

/// The layer's scales: activations around [0, 6] in 255 codes, weights per channel, an output
/// scale that keeps most codes inside [0, 255] and some saturated.
fn scales(rng: &mut Rng, co: usize, terms: usize) -> ((f32, u8), Vec<f32>, (f32, u8)) {
    let x = (rng.scale(0.01, 0.05), rng.next() as u8);
    let w: Vec<f32> = (0..co).map(|_| rng.scale(0.001, 0.02)).collect();
    let y_scale = x.0 * 0.01 * (terms as f32).sqrt() * rng.scale(5.0, 40.0);
    (x, w, (y_scale, rng.next() as u8))
}

#[test]
fn pointwise_and_stem_match_the_definition() {
    let mut rng = Rng(11);
    let kernels = pointwise_paths();
    let names: Vec<&str> = kernels.iter().map(|k| k.0).collect();
    eprintln!("pointwise paths on this CPU: {names:?}");
    // Whether some layer saturates at each end (the clamps are exercised).
    let mut ends = [false; 2];
    // (ci, co, side, kernel, stride, pad): 1x1 layers with every pixel, group and panel
    // remainder; the stem (3 -> 32, 3x3 s2: patch rows of 27, a group tail of 3); odd ones.
    for (ci, co, side, k, s, pad) in [
        (16, 96, 8, 1, 1, 0),
        (24, 144, 5, 1, 1, 0),
        (40, 24, 3, 1, 1, 0),
        (1, 1, 1, 1, 1, 0),
        (7, 33, 4, 1, 1, 0),
        (13, 40, 3, 1, 1, 0),
        (320, 1280, 2, 1, 1, 0),
        (3, 32, 17, 3, 2, 1),
        (3, 32, 16, 3, 2, 0),
        (2, 5, 7, 5, 2, 2),
    ] {
        let o = (side + 2 * pad - k) / s + 1;
        let g = Geometry {
            channels: ci,
            input: [side, side],
            output: [o, o],
            kernel: [k, k],
            stride: s,
            pad: [pad, pad],
        };
        let terms = ci * k * k;
        let (xq, ws, yq) = scales(&mut rng, co, terms);
        let x = rng.u8s(ci * side * side);
        let w = rng.i8s(co * terms);
        let bias: Vec<i32> = (0..co)
            .map(|_| (rng.next() % 20_001) as i32 - 10_000)
            .collect();
        let want = qlinear_conv(&x, &w, &bias, &g, co, 1, xq, &ws, yq);
        let rq = Requant::new(xq.0, &ws, yq.0, yq.1, co).expect("valid scales");
        let packed =
            PackedQ8::new(&patch_order(&w, ci, k * k), &bias, co, terms, xq.1).expect("fits");
        let mut rows = Vec::new();
        assert!(patches_padded(
            &hwc(&x, ci, side * side),
            &g,
            xq.1,
            &mut rows
        ));
        let saturated = want.iter().filter(|&&v| v == 0 || v == 255).count();
        assert!(saturated < want.len(), "{ci}->{co}: every code saturated");
        ends[0] |= want.contains(&0);
        ends[1] |= want.contains(&255);
        for &(name, kernel) in &kernels {
            let mut out = vec![0xAA; o * o * co];
            assert!(kernel(&rows, &packed, &rq, &mut out), "{name}");
            assert_eq!(
                out,
                hwc(&want, co, o * o),
                "{name} {ci}->{co} k{k} s{s} p{pad}"
            );
            assert!(!kernel(&rows[1..], &packed, &rq, &mut out), "{name}");
            assert!(!kernel(&rows, &packed, &rq, &mut out[1..]), "{name}");
            assert!(!kernel(&[], &packed, &rq, &mut []), "{name}: empty input");
        }
    }
    assert_eq!(ends, [true, true]);
}

#[test]
fn depthwise_matches_the_definition() {
    let mut rng = Rng(5);
    let kernels = depthwise_q8_paths();
    // (c, side, kernel, stride, pad_top_left, pad_bottom_right, extra columns): the backbones'
    // 3x3 and 5x5, strides 1 to 3, symmetric and asymmetric padding, channel remainders of the
    // 16-block, planes wider than high.
    for (c, side, k, s, pad, pad_end, extra) in [
        (32, 16, 3, 1, 1, 1, 0),
        (96, 16, 3, 2, 0, 1, 0),
        (144, 8, 5, 2, 1, 2, 0),
        (240, 4, 5, 1, 2, 2, 0),
        (1152, 2, 3, 1, 1, 1, 0),
        (21, 7, 3, 2, 1, 1, 0),
        (3, 5, 5, 1, 2, 2, 0),
        (48, 6, 2, 1, 0, 1, 0),
        (16, 9, 7, 1, 3, 3, 0),
        (32, 11, 7, 2, 3, 3, 2),
        (40, 9, 5, 2, 2, 1, 3),
        (16, 7, 1, 2, 0, 0, 1),
        (32, 10, 3, 3, 1, 1, 2),
        (64, 5, 3, 1, 1, 1, 7),
    ] {
        let o = (side + pad + pad_end - k) / s + 1;
        let ow = (side + extra + pad + pad_end - k) / s + 1;
        let g = Geometry {
            channels: c,
            input: [side, side + extra],
            output: [o, ow],
            kernel: [k, k],
            stride: s,
            pad: [pad, pad],
        };
        let (xq, ws, yq) = scales(&mut rng, c, k * k);
        let x = rng.u8s(c * side * (side + extra));
        let w = rng.i8s(c * k * k);
        let bias: Vec<i32> = (0..c)
            .map(|_| (rng.next() % 2_001) as i32 - 1_000)
            .collect();
        let want = qlinear_conv(&x, &w, &bias, &g, c, c, xq, &ws, yq);
        let rq = Requant::new(xq.0, &ws, yq.0, yq.1, c).expect("valid scales");
        let packed = DepthwiseQ8::new(&w, &bias, &g, xq.1).expect("fits");
        let xh = hwc(&x, c, side * (side + extra));
        for &(name, kernel) in &kernels {
            let mut out = vec![0xAA; o * ow * c];
            assert!(kernel(&xh, &packed, &rq, &mut out), "{name}");
            assert_eq!(
                out,
                hwc(&want, c, o * ow),
                "{name} c{c} k{k} s{s} p{pad},{pad_end} +{extra}"
            );
            assert!(!kernel(&xh[1..], &packed, &rq, &mut out), "{name}");
            assert!(!kernel(&xh, &packed, &rq, &mut out[1..]), "{name}");
        }
    }
}

/// Inputs a few codes either side of the zero point and small weights, so that most
/// accumulators land inside the output range.
fn near(rng: &mut Rng, n: usize, zp: u8) -> Vec<u8> {
    (0..n).map(|_| zp - 10 + (rng.next() % 21) as u8).collect()
}

#[test]
fn every_path_rounds_exact_halves_to_even() {
    // Scale 1 * 0.5 / 1: every odd accumulator lands exactly on a half; 0.25 adds the quarters.
    // With 0.5 + 2^-24 the exact value lies just past the half while its f32 rounding falls on
    // it: the case the paths that round in f32 lanes must hand to the exact f64 lanes.
    let mut rng = Rng(3);
    for w_scale in [0.5f32, 0.25, 0.5 + f32::EPSILON / 2.0] {
        let (c, side, zp, y_zp) = (48, 9, 128u8, 100u8);
        let x = near(&mut rng, c * side * side, zp);
        let bias: Vec<i32> = (0..c).map(|_| (rng.next() % 41) as i32 - 20).collect();
        // Depthwise, 3x3 and 5x5, strides 1 and 2.
        for (k, s) in [(3, 1), (5, 2)] {
            let (pad, o) = (k / 2, (side + 2 * (k / 2) - k) / s + 1);
            let g = Geometry {
                channels: c,
                input: [side, side],
                output: [o, o],
                kernel: [k, k],
                stride: s,
                pad: [pad, pad],
            };
            let w: Vec<i8> = (0..c * k * k).map(|_| (rng.next() % 7) as i8 - 3).collect();
            let ws = vec![w_scale; c];
            let want = qlinear_conv(&x, &w, &bias, &g, c, c, (1.0, zp), &ws, (1.0, y_zp));
            let rq = Requant::new(1.0, &ws, 1.0, y_zp, c).expect("valid scales");
            let packed = DepthwiseQ8::new(&w, &bias, &g, zp).expect("fits");
            let xh = hwc(&x, c, side * side);
            for (name, kernel) in depthwise_q8_paths() {
                let mut out = vec![0xAA; o * o * c];
                assert!(kernel(&xh, &packed, &rq, &mut out), "{name}");
                assert_eq!(out, hwc(&want, c, o * o), "{name} k{k} s{s} x{w_scale}");
            }
        }
        // 1x1, every pixel and panel remainder of the tiles.
        let co = 40;
        let g = Geometry {
            channels: c,
            input: [side, side],
            output: [side, side],
            kernel: [1, 1],
            stride: 1,
            pad: [0, 0],
        };
        let w: Vec<i8> = (0..co * c).map(|_| (rng.next() % 3) as i8 - 1).collect();
        let ws = vec![w_scale; co];
        let want = qlinear_conv(&x, &w, &bias[..co], &g, co, 1, (1.0, zp), &ws, (1.0, y_zp));
        let rq = Requant::new(1.0, &ws, 1.0, y_zp, co).expect("valid scales");
        let packed = PackedQ8::new(&w, &bias[..co], co, c, zp).expect("fits");
        let xh = hwc(&x, c, side * side);
        for (name, kernel) in pointwise_paths() {
            let mut out = vec![0xAA; side * side * co];
            assert!(kernel(&xh, &packed, &rq, &mut out), "{name}");
            assert_eq!(out, hwc(&want, co, side * side), "{name} 1x1 x{w_scale}");
        }
    }
}

#[test]
fn rounding_is_half_to_even_after_the_clamp() {
    // scale 0.5: accumulators 1, 3, 5 land on 0.5, 1.5, 2.5 (+ zero point 10).
    let rq = Requant::new(1.0, &[0.5], 1.0, 10, 1).expect("valid");
    assert_eq!([1, 3, 5, -3].map(|a| rq.code(a, 0)), [10, 12, 12, 8]);
    assert_eq!([1_000, -1_000].map(|a| rq.code(a, 0)), [255, 0]);
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(Requant::new(bad, &[0.5], 1.0, 0, 1).is_none());
        assert!(Requant::new(1.0, &[bad], 1.0, 0, 1).is_none());
        assert!(Requant::new(1.0, &[0.5], bad, 0, 1).is_none());
    }
    assert!(Requant::new(1.0, &[0.5, 0.5], 1.0, 0, 3).is_none());
}

#[test]
fn weights_that_could_overflow_the_accumulator_are_refused() {
    assert!(PackedQ8::new(&[1; 4], &[i32::MAX - 10, 0], 2, 2, 0).is_none());
    assert!(PackedQ8::new(&[127; 4], &[0, 0], 2, 2, 255).is_some());
    assert!(PackedQ8::new(&[1; 4], &[0; 3], 2, 2, 0).is_none());
    // Fits for the u8 kernels, not with the activations shifted by -128: the signed-dot path
    // is then not offered (the dispatch runs the portable loop).
    let near = i32::MAX - 2 * 255 * 128 - 100;
    let packed = PackedQ8::new(&[127; 2], &[near], 1, 2, 0).expect("fits unshifted");
    assert!(packed.bias_128.is_none());
    let shifted = PackedQ8::new(&[127; 2], &[7], 1, 2, 3).expect("fits");
    assert_eq!(
        shifted.bias_128.as_deref().map(|b| b[0]),
        Some(7 - 3 * 254 + 128 * 254)
    );
    let g = Geometry {
        channels: 1,
        input: [3, 3],
        output: [1, 1],
        kernel: [3, 3],
        stride: 1,
        pad: [0, 0],
    };
    assert!(DepthwiseQ8::new(&[1; 9], &[i32::MIN + 5], &g, 0).is_none());
    assert!(DepthwiseQ8::new(&[1; 9], &[7], &g, 0).is_some());
    assert!(DepthwiseQ8::new(&[1; 8], &[7], &g, 0).is_none());
}

/// Every `QLinearConv` of the default bundle's int8 encoder, on tract's values of its input for
/// a fixture image: the project's op equals the definition exactly; tract's own evaluation is
/// within one code of it (the bound the host-trainer suite holds it to).
#[test]
fn every_qlinearconv_of_the_default_int8_encoder_equals_the_definition() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bundle = crate::bundle::Bundle::load(&root.join("models/default")).expect("bundle");
    let path = root.join("models/default/encoder.int8.onnx");
    let image = root.join("testdata/pass/000_ground.jpg");
    let x = crate::preprocess::load_tensor(&image, &bundle.manifest.input).expect("image");
    let shape = [
        1,
        3,
        bundle.manifest.input.height as usize,
        bundle.manifest.input.width as usize,
    ];
    let mut model = crate::tract_isa::onnx()
        .model_for_path(&path)
        .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
        .and_then(|m| m.into_typed())
        .expect("typed model");
    Optimizer::prop_consts()
        .optimize(&mut model)
        .expect("constants");
    let mut convs = Vec::new();
    for node in model.nodes() {
        if let Some(conv) = QConvNode::parse(&model, node).expect("parse") {
            convs.push((node.id, conv));
        }
    }
    assert_eq!(
        convs.len(),
        49,
        "the stem, 16 depthwise and 32 1x1 convolutions"
    );
    let outlets: Vec<OutletId> = convs
        .iter()
        .flat_map(|(id, _)| [model.node(*id).inputs[0], OutletId::new(*id, 0)])
        .collect();
    model.select_output_outlets(&outlets).expect("outputs");
    let plan = model.into_runnable().expect("plan");
    let input = Tensor::from_shape(&shape, &x).expect("input");
    let values = plan.run(tvec![input.into()]).expect("run");
    let mut tract_off = 0;
    for ((id, conv), pair) in convs.iter().zip(values.chunks_exact(2)) {
        let s = &conv.shape;
        assert!(s.batch_axis && !s.channels_last, "node {id}: NCHW");
        let codes = |t: &TValue| -> Vec<u8> {
            t.try_as_plain_ram()
                .expect("plain")
                .as_slice::<u8>()
                .expect("u8")
                .to_vec()
        };
        let (xin, theirs) = (codes(&pair[0]), codes(&pair[1]));
        let (xs, ws, ys, yzp) = conv.scales.clone();
        let g = Geometry {
            channels: s.ci,
            ..s.geometry()
        };
        let want = qlinear_conv(
            &xin,
            &conv.weights,
            &conv.bias,
            &g,
            s.co,
            s.group,
            (xs, conv.x_zero_point),
            &ws,
            (ys, yzp),
        );
        let op = ConvQ8::new(conv).expect("fits the kernels");
        let mut ours = vec![0u8; want.len()];
        assert!(op.run(&hwc(&xin, s.ci, s.input[0] * s.input[1]), &mut ours));
        let hw = s.output[0] * s.output[1];
        assert_eq!(ours, hwc(&want, s.co, hw), "node {id} ({:?})", op.kind());
        let off = theirs
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert!(off <= 1, "node {id}: tract {off} codes from the definition");
        tract_off += usize::from(off > 0);
    }
    eprintln!("tract differs from the definition by one code on {tract_off} of 49 nodes");
}
