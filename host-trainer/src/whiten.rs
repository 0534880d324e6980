//! PCA whitening of clustering features: `z = (x - mean) W` with `W = U_r diag(1 / sqrt(l_r +
//! eps))`, the top `r` eigenvectors `U_r` and eigenvalues `l_r` of the training features'
//! covariance. Exported as one Gemm appended to the encoder graph.

use tch::{Device, Kind, Tensor};

use crate::export::Op;
use crate::model::{to_vec, Forward};

/// A fitted whitening of `dim`-d features to `components` dimensions.
#[derive(Debug)]
pub struct Whitening {
    /// Feature mean `[dim]`.
    mean: Tensor,
    /// Projection `[dim, components]`.
    w: Tensor,
}

impl Whitening {
    /// Fits on row-major features `[n, dim]`, keeping at most `components` directions (and at
    /// most `n - 1`). `eps` is 1e-5 of the largest eigenvalue.
    pub fn fit(feats: &[f32], dim: usize, components: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            dim > 0 && feats.len().is_multiple_of(dim),
            "whitening: bad feature length"
        );
        let n = feats.len() / dim;
        anyhow::ensure!(n >= 2, "whitening needs at least 2 points, got {n}");
        let x = Tensor::from_slice(feats)
            .view([n as i64, dim as i64])
            .to_kind(Kind::Double);
        let mean = x.mean_dim(&[0i64][..], false, Kind::Double);
        let xc = &x - &mean;
        let cov = xc.tr().matmul(&xc) / (n as f64 - 1.0);
        let (values, vectors) = cov.linalg_eigh("L");
        let r = components.min(dim).min(n - 1).max(1) as i64;
        // eigh sorts ascending: take the last r, largest first.
        let top = Tensor::arange_start_step(
            dim as i64 - 1,
            dim as i64 - 1 - r,
            -1,
            (Kind::Int64, Device::Cpu),
        );
        let l = values.index_select(0, &top);
        let u = vectors.index_select(1, &top);
        let largest = f64::try_from(l.max()).unwrap_or(0.0).max(0.0);
        let eps = 1e-5 * largest + 1e-12;
        let w = u / (l.clamp_min(0.0) + eps).sqrt().unsqueeze(0);
        anyhow::ensure!(
            f64::try_from(w.abs().max()).is_ok_and(f64::is_finite),
            "whitening: non-finite projection"
        );
        Ok(Self {
            mean: mean.to_kind(Kind::Float),
            w: w.to_kind(Kind::Float),
        })
    }

    /// Output dimension.
    pub fn components(&self) -> usize {
        self.w.size()[1] as usize
    }

    /// Whitened row-major features `[n, components]` of `[n, dim]` features.
    pub fn apply(&self, feats: &[f32]) -> Vec<f32> {
        let dim = self.w.size()[0];
        let x = Tensor::from_slice(feats).view([-1, dim]);
        to_vec(&self.transform(&x))
    }

    fn transform(&self, x: &Tensor) -> Tensor {
        let dev = x.device();
        (x - self.mean.to_device(dev)).matmul(&self.w.to_device(dev))
    }

    /// The whitening as a Gemm op: `y = x W^T' + b` with weight `W^T` and bias `-mean W`.
    pub fn op(&self) -> Op {
        let size = self.w.size();
        Op::Gemm {
            weight: to_vec(&self.w.tr().contiguous()),
            out_dim: size[1],
            in_dim: size[0],
            bias: to_vec(&(-self.mean.unsqueeze(0).matmul(&self.w)).squeeze_dim(0)),
        }
    }

    /// `inner` followed by this whitening, as one module.
    pub fn after<'a>(&'a self, inner: &'a dyn Forward) -> Whitened<'a> {
        Whitened { inner, w: self }
    }
}

/// An encoder followed by a whitening.
pub struct Whitened<'a> {
    inner: &'a dyn Forward,
    w: &'a Whitening,
}

impl std::fmt::Debug for Whitened<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whitened")
            .field("w", self.w)
            .finish_non_exhaustive()
    }
}

impl Forward for Whitened<'_> {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.w.transform(&self.inner.forward(xs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitened_features_have_identity_covariance_and_the_op_matches() {
        // Correlated 3-d data: x = [a, a + b, 2c], a, b, c from a fixed sequence.
        let mut feats = Vec::new();
        for i in 0..200 {
            let t = i as f32;
            let (a, b, c) = ((t * 0.37).sin(), (t * 1.3).cos(), (t * 0.11).sin() * 3.0);
            feats.extend([a, a + 0.5 * b, 2.0 * c]);
        }
        let wh = Whitening::fit(&feats, 3, 3).unwrap();
        assert_eq!(wh.components(), 3);
        let z = Tensor::from_slice(&wh.apply(&feats)).view([200, 3]);
        let zc = &z - z.mean_dim(&[0i64][..], true, Kind::Float);
        let cov = zc.tr().matmul(&zc) / 199.0;
        let eye = Tensor::eye(3, (Kind::Float, Device::Cpu));
        let off = f64::try_from((cov - eye).abs().max()).unwrap();
        // eps (1e-5 of the largest eigenvalue) shrinks the smallest direction's variance by
        // eps / (l + eps): a fraction of a percent here.
        assert!(off < 5e-3, "covariance differs from identity by {off}");
        let Op::Gemm { weight, bias, .. } = wh.op() else {
            panic!("not a gemm")
        };
        let w = Tensor::from_slice(&weight).view([3, 3]);
        let b = Tensor::from_slice(&bias);
        let x = Tensor::from_slice(&feats).view([200, 3]);
        let y = x.matmul(&w.tr()) + b;
        assert!(f64::try_from((y - z).abs().max()).unwrap() < 1e-4);
        let two = Whitening::fit(&feats, 3, 2).unwrap();
        assert_eq!(two.components(), 2);
    }
}
