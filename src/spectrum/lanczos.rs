//! The Lanczos process with full reorthogonalisation, and the top eigenvalues of a
//! symmetric operator from it with their residual norms.
//!
//! Each step is one product. The basis vectors stay on the device; each step reads back
//! the dot products of the new vector with the basis (twice: classical Gram-Schmidt is
//! repeated, "twice is enough") and its norm. Full reorthogonalisation keeps the basis
//! orthogonal to rounding, so no ghost copies of converged eigenvalues appear and the
//! Lanczos residual estimate `beta_m |s_mi|` is the true residual of the Ritz pair.

use burn::prelude::*;

use super::tridiagonal::{TridiagonalEigen, eigen};
use crate::optim::cg::LinearOperator;

/// Why the Lanczos process stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LanczosStop {
    /// The caller's test passed (the top eigenvalues' residuals are below the tolerance).
    Converged,
    /// The step limit (or the dimension of the space) was reached.
    MaxSteps,
    /// The Krylov space is invariant (`beta` vanished): the Ritz values are exact
    /// eigenvalues of the operator.
    InvariantSubspace,
    /// A product or a dot product was not finite.
    NonFinite,
}

impl LanczosStop {
    pub fn label(self) -> &'static str {
        match self {
            LanczosStop::Converged => "converged",
            LanczosStop::MaxSteps => "max-steps",
            LanczosStop::InvariantSubspace => "invariant-subspace",
            LanczosStop::NonFinite => "non-finite",
        }
    }
}

/// What `lanczos` built: an orthonormal basis `Q` and the tridiagonal `T = Q^T C Q`.
pub struct Krylov {
    pub basis: Vec<Tensor<1>>,
    /// The diagonal of T (one per step).
    pub alpha: Vec<f64>,
    /// `beta[j]` couples steps j and j + 1; the last is the norm of the residual left after
    /// the last step (`C Q = Q T + beta_m q_{m+1} e_m^T`).
    pub beta: Vec<f64>,
    pub stop: LanczosStop,
    /// Products made.
    pub products: usize,
}

impl Krylov {
    pub fn steps(&self) -> usize {
        self.alpha.len()
    }

    /// The eigen-decomposition of T (`None` only for non-finite input).
    pub fn eigen(&self) -> Option<TridiagonalEigen> {
        let m = self.alpha.len();
        eigen(&self.alpha, &self.beta[..m.saturating_sub(1)])
    }

    /// `beta_m`, the norm of what the last step left outside the basis.
    pub fn last_beta(&self) -> f64 {
        self.beta.last().copied().unwrap_or(0.0)
    }
}

fn dot(a: &Tensor<1>, b: &Tensor<1>) -> Tensor<1> {
    (a.clone() * b.clone()).sum()
}

/// Reads one-element tensors back together (one device sync).
pub(crate) fn read(scalars: Vec<Tensor<1>>) -> Vec<f64> {
    if scalars.is_empty() {
        return Vec::new();
    }
    Tensor::cat(scalars, 0).to_data().iter::<f64>().collect()
}

/// `w - sum_i c_i q_i`.
fn subtract_projections(w: Tensor<1>, basis: &[Tensor<1>], c: &[f64]) -> Tensor<1> {
    basis
        .iter()
        .zip(c)
        .fold(w, |w, (q, &ci)| w - q.clone().mul_scalar(ci))
}

/// Relative size of `beta` below which the Krylov space counts as invariant: rounding of
/// the device's float type, with room for the reorthogonalisation's own.
fn breakdown_threshold(v: &Tensor<1>) -> f64 {
    if v.dtype() == burn::tensor::DType::F64 {
        1e-12
    } else {
        1e-5
    }
}

/// Runs at most `max_steps` Lanczos steps on `op` from `start` (any non-zero vector).
/// After each step `done(alpha, beta)` may stop the process (`Converged`).
pub fn lanczos(
    op: &dyn LinearOperator,
    start: &Tensor<1>,
    max_steps: usize,
    mut done: impl FnMut(&[f64], &[f64]) -> bool,
) -> Krylov {
    let mut krylov = Krylov {
        basis: Vec::new(),
        alpha: Vec::new(),
        beta: Vec::new(),
        stop: LanczosStop::MaxSteps,
        products: 0,
    };
    let norm = read(vec![dot(start, start)])[0].sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        krylov.stop = LanczosStop::NonFinite;
        return krylov;
    }
    let threshold = breakdown_threshold(start);
    krylov.basis.push(start.clone().div_scalar(norm));
    let mut scale = 0f64;
    for j in 0..max_steps {
        let mut w = op.apply(&krylov.basis[j]);
        krylov.products += 1;
        let mut alpha = 0.0;
        for _pass in 0..2 {
            let c = read(krylov.basis.iter().map(|q| dot(q, &w)).collect());
            if c.iter().any(|x| !x.is_finite()) {
                krylov.stop = LanczosStop::NonFinite;
                return krylov;
            }
            alpha += c[j];
            w = subtract_projections(w, &krylov.basis, &c);
        }
        let beta = read(vec![dot(&w, &w)])[0].sqrt();
        if !beta.is_finite() {
            krylov.stop = LanczosStop::NonFinite;
            return krylov;
        }
        krylov.alpha.push(alpha);
        krylov.beta.push(beta);
        scale = scale.max(alpha.abs()).max(beta);
        if done(&krylov.alpha, &krylov.beta) {
            krylov.stop = LanczosStop::Converged;
            break;
        }
        if beta <= threshold * scale {
            krylov.stop = LanczosStop::InvariantSubspace;
            break;
        }
        if j + 1 == max_steps {
            break;
        }
        krylov.basis.push(w.div_scalar(beta));
    }
    krylov
}

/// How to find the top eigenvalues.
#[derive(Debug, Clone, PartialEq)]
pub struct TopSettings {
    /// How many of the largest (algebraic) eigenvalues.
    pub count: usize,
    /// Lanczos steps at most (capped at the dimension).
    pub max_steps: usize,
    /// Stop once each of the top `count` Ritz pairs has `||C v - lambda v|| <= tolerance *
    /// max |lambda|` (the largest Ritz value in magnitude).
    pub tolerance: f64,
    /// Also compute `||C v - lambda v||` by one product per eigenvector at the end, rather
    /// than report only Lanczos' estimate `beta_m |s_mi|`.
    pub explicit_residuals: bool,
}

impl Default for TopSettings {
    fn default() -> Self {
        Self {
            count: 1,
            max_steps: 100,
            tolerance: 1e-3,
            explicit_residuals: true,
        }
    }
}

/// One Ritz pair.
#[derive(Debug, Clone)]
pub struct Eigenpair {
    pub value: f64,
    /// `||C v - lambda v||` for the unit vector v: computed by a product where
    /// `explicit_residuals`, else Lanczos' estimate.
    pub residual: f64,
    /// Lanczos' estimate `beta_m |s_mi|` of the same residual.
    pub estimated_residual: f64,
    pub vector: Tensor<1>,
}

/// The top eigenvalues of an operator.
pub struct TopEigen {
    /// Largest first; fewer than asked where the space (or its invariant part) is smaller.
    pub pairs: Vec<Eigenpair>,
    pub steps: usize,
    pub stop: LanczosStop,
    /// Products made (Lanczos steps, plus one per pair for explicit residuals).
    pub products: usize,
}

/// Whether the top `count` Ritz pairs of (alpha, beta) have converged to `tolerance`.
fn top_converged(alpha: &[f64], beta: &[f64], count: usize, tolerance: f64) -> bool {
    let m = alpha.len();
    if m < count {
        return false;
    }
    let Some(eig) = eigen(alpha, &beta[..m - 1]) else {
        return false;
    };
    let scale = eig.values[0].abs().max(eig.values[m - 1].abs());
    let beta_m = beta[m - 1];
    (m - count..m).all(|i| beta_m * eig.last(i).abs() <= tolerance * scale)
}

/// The `settings.count` largest eigenvalues of `op` on a space of `dimension` (the length of
/// the vectors, or of the block they are restricted to) by Lanczos from `start`.
pub fn top_eigenpairs(
    op: &dyn LinearOperator,
    start: &Tensor<1>,
    dimension: usize,
    settings: &TopSettings,
) -> TopEigen {
    let count = settings.count.min(dimension);
    let max_steps = settings.max_steps.max(count).min(dimension);
    let krylov = lanczos(op, start, max_steps, |alpha, beta| {
        top_converged(alpha, beta, count, settings.tolerance)
    });
    let mut products = krylov.products;
    let mut pairs = Vec::new();
    if let Some(eig) = krylov.eigen() {
        let m = krylov.steps();
        for i in (m.saturating_sub(count)..m).rev() {
            let vector = krylov
                .basis
                .iter()
                .zip(&eig.vectors)
                .map(|(q, row)| q.clone().mul_scalar(row[i]))
                .reduce(|a, b| a + b)
                .expect("a Lanczos run of one step or more has a basis");
            let estimated = krylov.last_beta() * eig.last(i).abs();
            let value = eig.values[i];
            let residual = if settings.explicit_residuals {
                products += 1;
                let r = op.apply(&vector) - vector.clone().mul_scalar(value);
                read(vec![dot(&r, &r)])[0].sqrt()
            } else {
                estimated
            };
            pairs.push(Eigenpair {
                value,
                residual,
                estimated_residual: estimated,
                vector,
            });
        }
    }
    TopEigen {
        pairs,
        steps: krylov.steps(),
        stop: krylov.stop,
        products,
    }
}
