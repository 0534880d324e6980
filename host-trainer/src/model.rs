//! Networks: a convolutional autoencoder (image -> M-d latent -> image) and a small CNN
//! classifier. Built from `&nn::Path` with named sub-paths; each lists its inference graph as
//! [`export::Op`]s for the ONNX exporter.

use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::export::Op;

/// Inference-mode forward pass, implemented by every network and by the classifier's trunk.
pub trait Forward {
    /// Output for a batch `[b, 3, n, n]`, in eval mode.
    fn forward(&self, xs: &Tensor) -> Tensor;
}

impl<T: ModuleT> Forward for T {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.forward_t(xs, false)
    }
}

/// BatchNorm epsilon used by every BN layer (tch's default).
pub const BN_EPS: f64 = 1e-5;

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, bias: bool) -> nn::Conv2D {
    nn::conv2d(
        p,
        cin,
        cout,
        k,
        nn::ConvConfig {
            stride,
            padding: k / 2,
            bias,
            ..Default::default()
        },
    )
}

/// Tensor to a flat f32 vector on the CPU.
pub fn to_vec(t: &Tensor) -> Vec<f32> {
    let flat = t
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(tch::Kind::Float)
        .flatten(0, -1);
    Vec::<f32>::try_from(&flat).unwrap_or_default()
}

fn conv_op(c: &nn::Conv2D, stride: i64) -> Op {
    let size = c.ws.size();
    let bias =
        c.bs.as_ref()
            .map(to_vec)
            .unwrap_or_else(|| vec![0.0; size[0] as usize]);
    Op::Conv {
        weight: to_vec(&c.ws),
        shape: [size[0], size[1], size[2], size[3]],
        bias,
        stride,
        pads: [size[2] / 2; 4],
        group: 1,
    }
}

/// BatchNorm (eval mode, `eps`) folded into a bias-free convolution weight `[out, ...]`:
/// returns `(weight * scale, shift)` with `scale = gamma / sqrt(var + eps)` and
/// `shift = beta - mean * scale`.
pub fn fold_bn(weight: &Tensor, bn: &nn::BatchNorm, eps: f64) -> (Tensor, Tensor) {
    let scale = match &bn.ws {
        Some(g) => g / (&bn.running_var + eps).sqrt(),
        None => (&bn.running_var + eps).sqrt().reciprocal(),
    };
    let shift = match &bn.bs {
        Some(b) => b - &bn.running_mean * &scale,
        None => -(&bn.running_mean * &scale),
    };
    let mut dims = vec![-1i64];
    dims.resize(weight.dim(), 1);
    (weight * scale.view(dims.as_slice()), shift)
}

/// Encoder: stride-2 3x3 conv + ReLU stages, flatten, linear to `latent_dim`.
/// Input `[b, 3, n, n]`, output `[b, latent_dim]`.
#[derive(Debug)]
pub struct Encoder {
    convs: Vec<nn::Conv2D>,
    fc: nn::Linear,
}

impl Encoder {
    /// Builds the encoder under `p` for `n x n` inputs.
    pub fn new(p: &nn::Path, n: i64, channels: &[i64], latent_dim: i64) -> Self {
        let mut cin = 3;
        let mut convs = Vec::new();
        for (i, &c) in channels.iter().enumerate() {
            convs.push(conv(p / format!("conv{i}"), cin, c, 3, 2, true));
            cin = c;
        }
        let side = n >> channels.len();
        let fc = nn::linear(p / "fc", cin * side * side, latent_dim, Default::default());
        Self { convs, fc }
    }

    /// The inference graph.
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        for c in &self.convs {
            ops.push(conv_op(c, 2));
            ops.push(Op::Relu);
        }
        ops.push(Op::Flatten);
        ops.push(linear_op(&self.fc));
        ops
    }
}

/// A linear layer as a Gemm op.
pub fn linear_op(l: &nn::Linear) -> Op {
    let size = l.ws.size();
    Op::Gemm {
        weight: to_vec(&l.ws),
        out_dim: size[0],
        in_dim: size[1],
        bias: l
            .bs
            .as_ref()
            .map(to_vec)
            .unwrap_or_else(|| vec![0.0; size[0] as usize]),
    }
}

impl ModuleT for Encoder {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        for c in &self.convs {
            x = x.apply(c).relu();
        }
        x.flatten(1, -1).apply(&self.fc)
    }
}

/// Decoder mirroring [`Encoder`]: linear, then stride-2 transposed convs back to `[b, 3, n, n]`
/// with a tanh output (inputs are normalized to about [-1, 1]).
#[derive(Debug)]
pub struct Decoder {
    fc: nn::Linear,
    deconvs: Vec<nn::ConvTranspose2D>,
    first_channels: i64,
    side: i64,
}

impl Decoder {
    /// Builds the decoder under `p`.
    pub fn new(p: &nn::Path, n: i64, channels: &[i64], latent_dim: i64) -> Self {
        let side = n >> channels.len();
        let first_channels = *channels.last().unwrap_or(&3);
        let fc = nn::linear(
            p / "fc",
            latent_dim,
            first_channels * side * side,
            Default::default(),
        );
        let mut outs: Vec<i64> = channels.iter().rev().skip(1).copied().collect();
        outs.push(3);
        let mut cin = first_channels;
        let mut deconvs = Vec::new();
        for (i, &c) in outs.iter().enumerate() {
            let cfg = nn::ConvTransposeConfig {
                stride: 2,
                padding: 1,
                ..Default::default()
            };
            deconvs.push(nn::conv_transpose2d(
                p / format!("deconv{i}"),
                cin,
                c,
                4,
                cfg,
            ));
            cin = c;
        }
        Self {
            fc,
            deconvs,
            first_channels,
            side,
        }
    }
}

impl ModuleT for Decoder {
    fn forward_t(&self, z: &Tensor, _train: bool) -> Tensor {
        let mut x = z
            .apply(&self.fc)
            .relu()
            .view([-1, self.first_channels, self.side, self.side]);
        let last = self.deconvs.len().saturating_sub(1);
        for (i, d) in self.deconvs.iter().enumerate() {
            x = x.apply(d);
            x = if i == last { x.tanh() } else { x.relu() };
        }
        x
    }
}

/// Autoencoder: [`Encoder`] under `encoder/`, [`Decoder`] under `decoder/`.
#[derive(Debug)]
pub struct Autoencoder {
    /// The encoder (exported).
    pub encoder: Encoder,
    /// The decoder (training only).
    pub decoder: Decoder,
}

impl Autoencoder {
    /// Builds the autoencoder under `p`.
    pub fn new(p: &nn::Path, n: i64, channels: &[i64], latent_dim: i64) -> Self {
        Self {
            encoder: Encoder::new(&(p / "encoder"), n, channels, latent_dim),
            decoder: Decoder::new(&(p / "decoder"), n, channels, latent_dim),
        }
    }
}

impl ModuleT for Autoencoder {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.encoder
            .forward_t(xs, train)
            .apply_t(&self.decoder, train)
    }
}

/// Small CNN classifier: stride-2 3x3 conv-BN-ReLU blocks, global average pooling, linear to
/// `classes`. Input `[b, 3, n, n]`, output logits `[b, classes]`.
#[derive(Debug)]
pub struct Classifier {
    blocks: Vec<(nn::Conv2D, nn::BatchNorm)>,
    head: nn::Linear,
}

impl Classifier {
    /// Builds the classifier under `p`.
    pub fn new(p: &nn::Path, channels: &[i64], classes: i64) -> Self {
        let mut cin = 3;
        let mut blocks = Vec::new();
        for (i, &c) in channels.iter().enumerate() {
            let b = p / format!("block{i}");
            let cv = conv(&b / "conv", cin, c, 3, 2, false);
            let bn = nn::batch_norm2d(&b / "bn", c, Default::default());
            blocks.push((cv, bn));
            cin = c;
        }
        let head = nn::linear(p / "head", cin, classes, Default::default());
        Self { blocks, head }
    }

    /// The inference graph, with BatchNorm folded into the convolutions.
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        for (c, bn) in &self.blocks {
            let (w, shift) = fold_bn(&c.ws, bn, BN_EPS);
            let size = c.ws.size();
            ops.push(Op::Conv {
                weight: to_vec(&w),
                shape: [size[0], size[1], size[2], size[3]],
                bias: to_vec(&shift),
                stride: 2,
                pads: [size[2] / 2; 4],
                group: 1,
            });
            ops.push(Op::Relu);
        }
        ops.push(Op::GlobalAveragePool);
        ops.push(Op::Flatten);
        ops.push(linear_op(&self.head));
        ops
    }
}

impl Classifier {
    /// Pooled features `[b, channels]` before the linear head.
    pub fn embed(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        for (c, bn) in &self.blocks {
            x = x.apply(c).apply_t(bn, train).relu();
        }
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    /// Class logits from pooled features `[b, channels]`.
    pub fn head_logits(&self, features: &Tensor) -> Tensor {
        features.apply(&self.head)
    }

    /// The linear head's inference graph: pooled features `[1, channels]` -> logits.
    pub fn head_ops(&self) -> Vec<Op> {
        vec![linear_op(&self.head)]
    }

    /// The classifier without its head, as an encoder of pooled features.
    pub fn trunk(&self) -> Trunk<'_> {
        Trunk(self)
    }
}

impl ModuleT for Classifier {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.embed(xs, train).apply(&self.head)
    }
}

/// A [`Classifier`] without its linear head: image `[b, 3, n, n]` -> features `[b, channels]`.
#[derive(Debug, Clone, Copy)]
pub struct Trunk<'a>(&'a Classifier);

impl Trunk<'_> {
    /// The inference graph (BatchNorm folded), ending at the pooled features.
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = self.0.ops();
        ops.pop();
        ops
    }
}

impl Forward for Trunk<'_> {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.0.embed(xs, false)
    }
}
