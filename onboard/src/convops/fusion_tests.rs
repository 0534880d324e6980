//! The int8 graphs' fusions ([`ResidualAdd`], [`QuantizeChannelsLast`]) give tract's unfused
//! values bit for bit: op by op on synthetic graphs, and end to end on the default encoder.

use std::path::Path;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::math::add;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};
use tract_onnx::tract_core::ops::quant::{quantize_linear_u8, DequantizeLinearF32};

use super::*;

fn codes(n: usize, seed: u32) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 24) as u8
        })
        .collect()
}

fn run(model: TypedModel, inputs: TVec<TValue>) -> Tensor {
    let plan = model.into_runnable().expect("plan");
    let mut out = plan.run(inputs).expect("run");
    out.remove(0).into_tensor()
}

const INT8: Kernels = Kernels {
    depthwise: false,
    dense: false,
    int8: true,
};

#[test]
fn quantize_channels_last_equals_quantize_then_move() {
    for (c, hw) in [
        (3, 128 * 128),
        (3, 1),
        (3, 341),
        (1, 1000),
        (4, 257),
        (16, 64),
        (5, 1023),
    ] {
        let x: Vec<f32> = codes(c * hw, c as u32 * 7 + hw as u32)
            .iter()
            .enumerate()
            .map(|(i, &v)| (f32::from(v) - 128.0) * 0.37 + (i % 3) as f32 * 0.5)
            .collect();
        for (scale, zp) in [(1.0, 0), (2.0, 128), (0.07, 3)] {
            let mut planar = vec![0u8; x.len()];
            assert!(quantize_u8(&x, scale, zp, &mut planar));
            let want: Vec<u8> = (0..c * hw).map(|i| planar[(i % c) * hw + i / c]).collect();
            let mut got = vec![0xAA; x.len()];
            assert!(quantize_channels_last(&x, c, scale, zp, &mut got));
            assert_eq!(got, want, "c {c} plane {hw} scale {scale} zero point {zp}");
        }
    }
    let mut out = vec![0u8; 6];
    assert!(!quantize_channels_last(&[0.0; 6], 0, 1.0, 0, &mut out));
    assert!(!quantize_channels_last(&[0.0; 6], 4, 1.0, 0, &mut out));
    assert!(!quantize_channels_last(
        &[0.0; 34],
        17,
        1.0,
        0,
        &mut [0u8; 34]
    ));
    assert!(!quantize_channels_last(&[0.0; 6], 3, 1.0, 0, &mut out[..3]));
}

/// A graph `q(dequantize(a) + b)` (or `dequantize(a) + dequantize(b)`, or without `q`), run by
/// tract as built and after [`substitute`]: equal bit for bit, and fused into one op.
#[test]
fn residual_add_equals_tracts_chain_bit_for_bit() {
    let shape = [1, 5, 7, 24];
    let n: usize = shape.iter().product();
    let a = tensor1(&codes(n, 1)).into_shape(&shape).expect("a");
    let b = tensor1(&codes(n, 2)).into_shape(&shape).expect("b");
    let skip: Vec<f32> = codes(n, 3)
        .iter()
        .map(|&v| f32::from(v) * 0.031 - 4.0)
        .collect();
    let skip = tensor1(&skip).into_shape(&shape).expect("skip");
    // Scales with exact halves (0.5, 0.25) and without; an output scale that saturates.
    let cases = [
        (0.5, 3, 0.25, 250, Some((1.0, 128))),
        (0.0478, 131, 0.0391, 117, Some((1.0 / 0.0617, 121))),
        (0.0478, 131, 0.0391, 117, Some((10.0, 0))),
        (0.0478, 131, 0.0391, 117, None),
    ];
    for (sa, za, sb, zb, quant) in cases {
        for u8_skip in [true, false] {
            let mut model = TypedModel::default();
            let xa = model.add_source("a", u8::fact(shape)).expect("a");
            let dqa = DequantizeLinearF32 {
                scale: sa,
                zero_point: za,
            };
            let da = model.wire_node("a.dq", dqa, &[xa]).expect("dq a")[0];
            let db = if u8_skip {
                let xb = model.add_source("b", u8::fact(shape)).expect("b");
                let dqb = DequantizeLinearF32 {
                    scale: sb,
                    zero_point: zb,
                };
                model.wire_node("b.dq", dqb, &[xb]).expect("dq b")[0]
            } else {
                model.add_source("b", f32::fact(shape)).expect("b")
            };
            let mut y = model.wire_node("add", add(), &[db, da]).expect("add")[0];
            if let Some((scale, zp)) = quant {
                y = model
                    .wire_node("q", quantize_linear_u8(scale, zp), &[y])
                    .expect("q")[0];
            }
            model.select_output_outlets(&[y]).expect("outputs");
            let second = if u8_skip { b.clone() } else { skip.clone() };
            let inputs = || tvec![a.clone().into_tvalue(), second.clone().into_tvalue()];
            let want = run(model.clone(), inputs());
            let (fused, replaced) = substitute(model, INT8).expect("substitute");
            assert_eq!(replaced.residual, 1);
            assert_eq!(replaced.quantize, usize::from(quant.is_some()));
            let names: Vec<String> = fused
                .nodes()
                .iter()
                .map(|n| n.op.name().to_string())
                .collect();
            assert!(
                !names.iter().any(|n| n.contains("Dequantize") || n == "Add"),
                "{names:?}"
            );
            let got = run(fused.into_optimized().expect("optimized"), inputs());
            assert_eq!(
                got.datum_type().unquantized(),
                want.datum_type().unquantized()
            );
            assert_eq!(
                got.as_bytes(),
                want.as_bytes(),
                "scales {sa} {sb} {quant:?} u8 skip {u8_skip}"
            );
        }
    }
}

/// `Reduce<Sum>` over the spatial axes of a dequantized `[1, .., c]` tensor, run by tract as
/// built and after [`substitute`]: equal bit for bit (tract sums the rows in order), fused.
#[test]
fn dequantize_sum_equals_tracts_chain_bit_for_bit() {
    let shapes: [&[usize]; 5] = [
        &[1, 4, 4, 1280],
        &[1, 7, 3, 17],
        &[1, 1, 1, 5],
        &[1, 9, 40],
        &[1, 2, 3, 2, 33],
    ];
    for (i, shape) in shapes.into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = tensor1(&codes(n, 11 + i as u32))
            .into_shape(shape)
            .expect("codes");
        let axes: TVec<usize> = (1..shape.len() - 1).collect();
        for (scale, zp) in [(0.0478, 131), (0.5, 0), (3.7e-3, 255)] {
            let mut model = TypedModel::default();
            let src = model.add_source("x", u8::fact(shape)).expect("x");
            let dq = DequantizeLinearF32 {
                scale,
                zero_point: zp,
            };
            let d = model.wire_node("dq", dq, &[src]).expect("dq")[0];
            let reduce = Reduce {
                axes: axes.clone(),
                reducer: Reducer::Sum,
            };
            let y = model.wire_node("sum", reduce, &[d]).expect("sum")[0];
            model.select_output_outlets(&[y]).expect("outputs");
            let inputs = || tvec![x.clone().into_tvalue()];
            let want = run(model.clone(), inputs());
            let (fused, replaced) = substitute(model, INT8).expect("substitute");
            assert_eq!(replaced.dequantize_sum, 1, "{shape:?}");
            let got = run(fused.into_optimized().expect("optimized"), inputs());
            assert_eq!(got.shape(), want.shape());
            assert_eq!(
                got.as_bytes(),
                want.as_bytes(),
                "{shape:?} scale {scale} zero point {zp}"
            );
        }
    }
    let mut out = [0f32; 3];
    assert!(!dequantize_sum(&[0; 7], 1.0, 0, &mut out));
    assert!(!dequantize_sum(&[0; 6], 1.0, 0, &mut []));
    assert!(dequantize_sum(&[1, 2, 3, 4, 5, 6], 1.0, 1, &mut out));
    assert_eq!(out, [3.0, 5.0, 7.0]);
}

/// The default int8 encoder with and without the fusions, on two fixture images and a
/// saturating input: the same latent bit for bit; the fused graph has no f32 dequantize-add
/// chain left on the skip connections and no separate move of the input.
#[test]
fn fused_int8_encoder_equals_the_unfused_bit_for_bit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bundle = crate::bundle::Bundle::load(&root.join("models/default")).expect("bundle");
    let path = root.join("models/default/encoder.int8.onnx");
    let shape = [
        1,
        3,
        bundle.manifest.input.height as usize,
        bundle.manifest.input.width as usize,
    ];
    let typed = crate::tract_isa::onnx()
        .model_for_path(&path)
        .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
        .and_then(|m| m.into_typed())
        .expect("typed model");
    let (unfused, _) = substitute_convolutions(typed.clone(), INT8).expect("unfused");
    let (fused, replaced) = substitute(typed, INT8).expect("fused");
    assert_eq!((replaced.residual, replaced.quantize_channels_last), (9, 1));
    assert_eq!(replaced.dequantize_sum, 1);
    let count =
        |m: &TypedModel, name: &str| m.nodes().iter().filter(|n| n.op.name() == name).count();
    assert_eq!(count(&fused, "ResidualAdd"), 9);
    assert_eq!(count(&fused, "QuantizeChannelsLast"), 1);
    assert_eq!(count(&fused, "DequantizeSum"), 1);
    assert_eq!(count(&unfused, "ResidualAdd"), 0);
    let unfused = unfused
        .into_optimized()
        .expect("optimized")
        .into_runnable()
        .expect("plan");
    let fused = fused
        .into_optimized()
        .expect("optimized")
        .into_runnable()
        .expect("plan");
    let mut inputs: Vec<Vec<f32>> = ["000_ground.jpg", "002_target.jpg"]
        .iter()
        .map(|n| {
            let image = root.join("testdata/pass").join(n);
            crate::preprocess::load_tensor(&image, &bundle.manifest.input).expect("image")
        })
        .collect();
    let n: usize = shape.iter().product();
    inputs.push((0..n).map(|i| if i % 7 < 3 { 1e3 } else { -1e3 }).collect());
    for x in inputs {
        let input = || tvec![Tensor::from_shape(&shape, &x).expect("input").into_tvalue()];
        let want = unfused.run(input()).expect("unfused run").remove(0);
        let got = fused.run(input()).expect("fused run").remove(0);
        let plain = |t: &TValue| {
            t.try_as_plain_ram()
                .expect("plain")
                .as_slice::<f32>()
                .map(<[f32]>::to_vec)
        };
        let (w, g) = (plain(&want).expect("f32"), plain(&got).expect("f32"));
        assert!(w.iter().any(|v| *v != 0.0));
        assert!(w.iter().zip(&g).all(|(p, q)| p.to_bits() == q.to_bits()));
    }
}
