//! Contrastive objectives of the semi-supervised classifier (Wang et al., Semi-supervised learning for Mars imagery classification). Every loss
//! takes two views' projections `z1`, `z2` `[n, d]` (row i of both comes from the same image)
//! and returns a scalar.

use tch::{Kind, Tensor};

/// Cosine similarity matrix `[n, n]` divided by `tau`: `S[i][j] = sim(z1_i, z2_j) / tau`.
fn scaled_similarity(z1: &Tensor, z2: &Tensor, tau: f64) -> Tensor {
    let n1 = z1 / z1.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
    let n2 = z2 / z2.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
    n1.matmul(&n2.tr()) / tau
}

/// Supervised inter-class contrastive loss `L_s`. For anchor `z1_i` of class `c_i`:
/// `-mean_{j: c_j = c_i} log( exp(S_ij) / sum_{k: c_k != c_i} exp(S_ik) )` with
/// `S = sim(z1, z2) / tau`; same-class pairs are positives and never negatives. Anchors with
/// no other class in the batch are left out; the result is the mean over the other anchors
/// (0 when there are none). With one sample per class this is the paper's `L_s`.
/// `labels`: `[n]` int64 on the projections' device.
pub fn inter_class_contrastive(z1: &Tensor, z2: &Tensor, labels: &Tensor, tau: f64) -> Tensor {
    let s = scaled_similarity(z1, z2, tau);
    let same = labels.unsqueeze(1).eq_tensor(&labels.unsqueeze(0));
    let log_denominator = s
        .masked_fill(&same, f64::NEG_INFINITY)
        .logsumexp([1], false);
    let same_f = same.to_kind(Kind::Float);
    let positive = (&s * &same_f).sum_dim_intlist(&[1i64][..], false, Kind::Float)
        / same_f.sum_dim_intlist(&[1i64][..], false, Kind::Float);
    let valid = same.logical_not().any_dim(1, false);
    let per_anchor = (log_denominator - positive).masked_fill(&valid.logical_not(), 0.0);
    let count = valid.to_kind(Kind::Float).sum(Kind::Float).clamp_min(1.0);
    per_anchor.sum(Kind::Float) / count
}

/// Plain sample-wise contrastive loss (the paper's Eq. 1): positives are the two views of the
/// same image; the denominator sums over every other image, whatever its class.
pub fn sample_contrastive(z1: &Tensor, z2: &Tensor, tau: f64) -> Tensor {
    let n = z1.size()[0];
    let ids = Tensor::arange(n, (Kind::Int64, z1.device()));
    inter_class_contrastive(z1, z2, &ids, tau)
}

/// Unsupervised similarity loss `L_u = -mean_i sim(z1_i, z2_i)` (positives only).
pub fn unsupervised_similarity(z1: &Tensor, z2: &Tensor) -> Tensor {
    -Tensor::cosine_similarity(z1, z2, 1, 1e-8).mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], rows: i64) -> Tensor {
        Tensor::from_slice(v).view([rows, -1])
    }

    fn scalar(x: Tensor) -> f64 {
        f64::try_from(x).unwrap()
    }

    /// z1 = [(1,0), (0,1), (1,1)], z2 = [(1,0), (1,0), (0,1)], tau = 0.5, so
    /// S = [[2, 2, 0], [0, 0, 2], [sqrt2, sqrt2, sqrt2]].
    fn views() -> (Tensor, Tensor) {
        (
            t(&[1., 0., 0., 1., 1., 1.], 3),
            t(&[1., 0., 1., 0., 0., 1.], 3),
        )
    }

    #[test]
    fn inter_class_by_hand_excludes_same_class_negatives() {
        let (z1, z2) = views();
        let labels = Tensor::from_slice(&[0i64, 0, 1]);
        // Anchor 0 (class 0): positives S00 = S01 = 2, denominator exp(S02) = 1 -> -2.
        // Anchor 1: positives S10 = S11 = 0, denominator exp(2) -> +2.
        // Anchor 2 (class 1): positive sqrt2, denominator 2 exp(sqrt2) -> ln 2.
        let want = (-2.0 + 2.0 + std::f64::consts::LN_2) / 3.0;
        let got = scalar(inter_class_contrastive(&z1, &z2, &labels, 0.5));
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn sample_wise_by_hand_counts_every_other_image() {
        let (z1, z2) = views();
        // Anchor 0: ln(1 + e^-2); anchor 1: ln(1 + e^2); anchor 2: ln 2.
        let e2 = 2f64.exp();
        let want = ((1.0 + 1.0 / e2).ln() + (1.0 + e2).ln() + std::f64::consts::LN_2) / 3.0;
        let got = scalar(sample_contrastive(&z1, &z2, 0.5));
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn one_class_batch_has_no_anchor() {
        let (z1, z2) = views();
        let labels = Tensor::from_slice(&[3i64, 3, 3]);
        assert_eq!(scalar(inter_class_contrastive(&z1, &z2, &labels, 0.2)), 0.0);
    }

    #[test]
    fn unsupervised_similarity_by_hand() {
        let (z1, z2) = views();
        // cos = 1, 0, 1/sqrt2.
        let want = -(1.0 + std::f64::consts::FRAC_1_SQRT_2) / 3.0;
        let got = scalar(unsupervised_similarity(&z1, &z2));
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn scale_invariant_and_differentiable() {
        let (z1, z2) = views();
        let labels = Tensor::from_slice(&[0i64, 1, 2]);
        let a = scalar(inter_class_contrastive(&z1, &z2, &labels, 0.2));
        let b = scalar(inter_class_contrastive(&(&z1 * 3.0), &z2, &labels, 0.2));
        assert!((a - b).abs() < 1e-5);
        let z = z1.set_requires_grad(true);
        inter_class_contrastive(&z, &z2, &labels, 0.2).backward();
        assert!(scalar(z.grad().abs().sum(Kind::Float)) > 0.0);
    }
}
