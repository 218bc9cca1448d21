//! Likelihoods and losses: masked MSE, negative binomial and zero-inflated negative binomial
//! log-likelihoods (CellPLM's NB decoder; scVI-style ZINB), cross-entropy with label smoothing,
//! binary cross-entropy, symmetric InfoNCE (CellLM §3.3.1, LangCell), focal loss.
//!
//! Scalar losses are returned as `Tensor<1>` of one element (means unless stated otherwise).
use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, log_softmax, softplus};

/// `ln Γ(x)` for `x > 0`, differentiable: shifts the argument by 6 with the recurrence
/// `Γ(x+1) = xΓ(x)` and applies Stirling's series (error < 1e-7 for the shifted argument).
///
/// # Shapes
/// any → same
pub fn lgamma<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let mut prod = x.clone();
    for k in 1..6 {
        prod = prod * x.clone().add_scalar(k as f64);
    }
    let z = x.add_scalar(6.0);
    let zr = z.clone().recip();
    let zr2 = zr.clone() * zr.clone();
    let inner = zr2.clone() * zr2.mul_scalar(1.0 / 1260.0).sub_scalar(1.0 / 360.0);
    let series = zr * inner.add_scalar(1.0 / 12.0);
    let stirling = (z.clone().sub_scalar(0.5)) * z.clone().log() - z + 0.5 * (2.0 * std::f64::consts::PI).ln();
    stirling + series - prod.log()
}

/// Mean squared error over the entries where `mask` is non-zero (weights), or over all entries.
///
/// # Shapes
/// - `pred`, `target`, `mask`: `[n, g]`
/// - output: `[1]`
pub fn masked_mse(pred: Tensor<2>, target: Tensor<2>, mask: Option<Tensor<2>>) -> Tensor<1> {
    let se = (pred - target).powi_scalar(2);
    match mask {
        Some(m) => (se * m.clone()).sum() / m.sum().clamp_min(1e-12),
        None => se.mean(),
    }
}

/// Element-wise negative binomial log-likelihood `log NB(x; μ, θ)` with mean `μ` and inverse
/// dispersion `θ`:
/// `lnΓ(x+θ) − lnΓ(θ) − lnΓ(x+1) + θ ln(θ/(θ+μ)) + x ln(μ/(θ+μ))`.
///
/// # Shapes
/// - `x`, `mu`: `[n, g]`; `theta`: `[n, g]` or broadcastable `[1, g]`
/// - output: `[n, g]`
pub fn nb_log_likelihood(x: Tensor<2>, mu: Tensor<2>, theta: Tensor<2>, eps: f64) -> Tensor<2> {
    let [n, g] = x.dims();
    let theta = theta.expand([n, g]);
    let log_theta_mu = (theta.clone() + mu.clone()).add_scalar(eps).log();
    lgamma(x.clone() + theta.clone()) - lgamma(theta.clone()) - lgamma(x.clone().add_scalar(1.0))
        + theta.clone() * (theta.add_scalar(eps).log() - log_theta_mu.clone())
        + x * (mu.add_scalar(eps).log() - log_theta_mu)
}

/// Element-wise zero-inflated NB log-likelihood with dropout logit `pi_logit`
/// (`π = σ(pi_logit)`): `ln(π + (1−π)NB(0))` at `x = 0`, `ln(1−π) + ln NB(x)` otherwise.
///
/// # Shapes
/// - `x`, `mu`, `pi_logit`: `[n, g]`; `theta`: `[n, g]` or `[1, g]`
/// - output: `[n, g]`
pub fn zinb_log_likelihood(x: Tensor<2>, mu: Tensor<2>, theta: Tensor<2>, pi_logit: Tensor<2>, eps: f64) -> Tensor<2> {
    let [n, g] = x.dims();
    let theta = theta.expand([n, g]);
    let log_pi = log_sigmoid(pi_logit.clone());
    let log_not_pi = log_sigmoid(pi_logit.neg());
    let nb = nb_log_likelihood(x.clone(), mu.clone(), theta.clone(), eps);
    // ln NB(0) = θ ln(θ/(θ+μ))
    let nb0 = theta.clone() * (theta.clone().add_scalar(eps).log() - (theta + mu).add_scalar(eps).log());
    let a = log_pi;
    let b = log_not_pi.clone() + nb0;
    let m = a.clone().max_pair(b.clone());
    let zero_case = m.clone() + ((a - m.clone()).exp() + (b - m).exp()).log();
    let nonzero_case = log_not_pi + nb;
    let is_zero = x.lower_equal_elem(eps);
    nonzero_case.mask_where(is_zero, zero_case)
}

/// Cross-entropy from logits with label smoothing `s` (targets become `(1−s)·onehot + s/C`).
///
/// # Shapes
/// - `logits`: `[n, c]`, `targets`: `[n]` class ids
/// - output: `[1]`
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>, label_smoothing: f64) -> Tensor<1> {
    let n = logits.dims()[0];
    let logp = log_softmax(logits, 1);
    let nll = logp.clone().gather(1, targets.reshape([n, 1])).neg().mean();
    if label_smoothing == 0.0 {
        return nll;
    }
    let uniform = logp.neg().mean_dim(1).mean();
    nll.mul_scalar(1.0 - label_smoothing) + uniform.mul_scalar(label_smoothing)
}

/// Binary cross-entropy from logits (numerically stable), mean over entries.
///
/// # Shapes
/// - `logits`, `targets` (in [0, 1]): same shape
/// - output: `[1]`
pub fn binary_cross_entropy<const D: usize>(logits: Tensor<D>, targets: Tensor<D>) -> Tensor<1> {
    // −[y log σ(z) + (1−y) log σ(−z)]
    let pos = log_sigmoid(logits.clone()) * targets.clone();
    let neg = log_sigmoid(logits.neg()) * targets.neg().add_scalar(1.0);
    (pos + neg).neg().mean()
}

/// Row-wise L2 normalisation.
///
/// # Shapes
/// `[n, d]` → `[n, d]`
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// InfoNCE with cosine similarity and temperature `tau`: row `i` of `a` must match row `i` of
/// `b` among all rows of `b` (CellLM §3.3.1). `symmetric` averages both directions (CLIP /
/// LangCell style).
///
/// # Shapes
/// - `a`, `b`: `[n, d]`
/// - output: `[1]`
pub fn info_nce(a: Tensor<2>, b: Tensor<2>, tau: f64, symmetric: bool) -> Tensor<1> {
    let n = a.dims()[0];
    let device = a.device();
    let sim = l2_normalize(a).matmul(l2_normalize(b).transpose()).div_scalar(tau);
    let labels = Tensor::<1, Int>::arange(0..n as i64, &device);
    let ab = cross_entropy(sim.clone(), labels.clone(), 0.0);
    if symmetric {
        (ab + cross_entropy(sim.transpose(), labels, 0.0)).div_scalar(2.0)
    } else {
        ab
    }
}

/// Focal loss (Lin et al. 2017) for multi-class logits: `−α (1−p_t)^γ log p_t`, mean.
///
/// # Shapes
/// - `logits`: `[n, c]`, `targets`: `[n]`
/// - output: `[1]`
pub fn focal_loss(logits: Tensor<2>, targets: Tensor<1, Int>, gamma: f64, alpha: f64) -> Tensor<1> {
    let n = logits.dims()[0];
    let logpt = log_softmax(logits, 1).gather(1, targets.reshape([n, 1]));
    let pt = logpt.clone().exp();
    (pt.neg().add_scalar(1.0).powf_scalar(gamma) * logpt).neg().mul_scalar(alpha).mean()
}

/// `softplus(x) = ln(1 + eˣ)` re-exported for decoders.
///
/// # Shapes
/// any → same
pub fn softplus1<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    softplus(x, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{scalar, to_vec};

    fn t2(v: &[f32], n: usize, g: usize) -> Tensor<2> {
        crate::util::tensor_from(v.to_vec(), [n, g], &crate::cpu_device())
    }

    /// ln Γ for positive integers and half-integers, computed exactly on the host.
    fn ln_fact(k: u64) -> f64 {
        (1..=k).map(|i| (i as f64).ln()).sum()
    }

    #[test]
    fn lgamma_matches_known_values() {
        let v = to_vec(lgamma(t2(&[1.0, 5.0, 0.5, 10.5, 0.1], 1, 5)));
        assert!(v[0].abs() < 1e-5);
        assert!((v[1] as f64 - 24f64.ln()).abs() < 1e-5);
        assert!((v[2] as f64 - std::f64::consts::PI.sqrt().ln()).abs() < 1e-5);
        // Γ(10.5) = 1133278.3889487855
        assert!((v[3] as f64 - 1_133_278.388_948_785_5f64.ln()).abs() < 1e-4);
        // Γ(0.1) = 9.513507698668732
        assert!((v[4] as f64 - 9.513_507_698_668_732f64.ln()).abs() < 1e-5);
    }

    #[test]
    fn nb_and_zinb_match_closed_form() {
        // Integer θ: NB(x) = C(x+θ−1, x) pθ^θ (1−pθ)^x with pθ = θ/(θ+μ).
        let (mu, theta) = (3.0f64, 2.0f64);
        let p = theta / (theta + mu);
        let exact = |x: u64| {
            (ln_fact(x + theta as u64 - 1) - ln_fact(x) - ln_fact(theta as u64 - 1))
                + theta * p.ln()
                + x as f64 * (1.0 - p).ln()
        };
        let x = t2(&[0.0, 1.0, 4.0, 7.0], 1, 4);
        let m = t2(&[mu as f32; 4], 1, 4);
        let th = t2(&[theta as f32; 4], 1, 4);
        let ll = to_vec(nb_log_likelihood(x.clone(), m.clone(), th.clone(), 0.0));
        for (k, xv) in [0u64, 1, 4, 7].iter().enumerate() {
            assert!((ll[k] as f64 - exact(*xv)).abs() < 1e-4, "x={xv}: {} vs {}", ll[k], exact(*xv));
        }
        // Probabilities sum to one over the support (truncated far in the tail).
        let xs: Vec<f32> = (0..200).map(|v| v as f32).collect();
        let total: f64 =
            to_vec(nb_log_likelihood(t2(&xs, 1, 200), t2(&[3.0; 200], 1, 200), t2(&[0.7; 200], 1, 200), 0.0))
                .iter()
                .map(|l| (*l as f64).exp())
                .sum();
        assert!((total - 1.0).abs() < 1e-3, "{total}");
        // ZINB with π = σ(0.3).
        let pi = 1.0 / (1.0 + (-0.3f64).exp());
        let zl = to_vec(zinb_log_likelihood(x, m, th, t2(&[0.3; 4], 1, 4), 0.0));
        assert!((zl[0] as f64 - (pi + (1.0 - pi) * exact(0).exp()).ln()).abs() < 1e-5);
        assert!((zl[2] as f64 - ((1.0 - pi).ln() + exact(4))).abs() < 1e-4);
    }

    #[test]
    fn classification_losses_match_hand_values() {
        let dev = crate::cpu_device();
        let logits = t2(&[2.0, 0.0, 0.0, 1.0], 2, 2);
        let targets = Tensor::<1, Int>::from_data([0i64, 1], &dev);
        let lse0 = (2f64.exp() + 1.0).ln();
        let lse1 = (1.0 + 1f64.exp()).ln();
        let ce = (lse0 - 2.0 + lse1 - 1.0) / 2.0;
        assert!((scalar(cross_entropy(logits.clone(), targets.clone(), 0.0)) - ce).abs() < 1e-5);
        let smooth_u = ((lse0 - 2.0 + lse0) / 2.0 + (lse1 + lse1 - 1.0) / 2.0) / 2.0;
        let expected = 0.9 * ce + 0.1 * smooth_u;
        assert!((scalar(cross_entropy(logits.clone(), targets.clone(), 0.1)) - expected).abs() < 1e-5);
        // Focal with γ = 0, α = 1 is plain CE; γ > 0 is smaller.
        assert!((scalar(focal_loss(logits.clone(), targets.clone(), 0.0, 1.0)) - ce).abs() < 1e-5);
        assert!(scalar(focal_loss(logits, targets, 2.0, 1.0)) < ce);
        // BCE: −[ln σ(1)] and −[ln(1−σ(−2))]
        let bce = scalar(binary_cross_entropy(t2(&[1.0, -2.0], 1, 2), t2(&[1.0, 0.0], 1, 2)));
        let e = ((1.0 + (-1f64).exp()).ln() + (1.0 + (-2f64).exp()).ln()) / 2.0;
        assert!((bce - e).abs() < 1e-5);
        // Masked MSE only counts masked entries.
        let mse = scalar(masked_mse(t2(&[1.0, 5.0], 1, 2), t2(&[0.0, 0.0], 1, 2), Some(t2(&[1.0, 0.0], 1, 2))));
        assert!((mse - 1.0).abs() < 1e-6);
    }

    #[test]
    fn info_nce_is_low_for_matching_pairs() {
        let a = t2(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 3, 2);
        let good = scalar(info_nce(a.clone(), a.clone(), 0.1, true));
        let shuffled = t2(&[0.0, 1.0, 1.0, 1.0, 1.0, 0.0], 3, 2);
        let bad = scalar(info_nce(a, shuffled, 0.1, true));
        assert!(good < bad);
        assert!(good > 0.0);
    }
}
