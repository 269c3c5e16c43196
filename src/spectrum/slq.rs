//! The spectral density by stochastic Lanczos quadrature (Lin, Saad and Yang 2016; Ghorbani,
//! Krishnan and Xiao 2019; PyHessian): for a unit start vector `v`, `M` Lanczos steps give the
//! M-point Gauss quadrature of the measure `sum_i (v^T u_i)^2 delta(t - lambda_i)`: nodes
//! the Ritz values, weights the squared first components of T's eigenvectors. With `v` a
//! normalised Rademacher vector that measure is, in expectation, the eigenvalue density
//! `(1/n) sum_i delta(t - lambda_i)`. The runs are averaged and each node is broadened into
//! a Gaussian of standard deviation `sigma`, so the density integrates to 1 and its first
//! two moments are `trace(C)/n` and `trace(C^2)/n + sigma^2` in expectation (the quadrature
//! is exact for polynomials of degree up to 2M - 1).

use burn::prelude::*;

use super::lanczos::{LanczosStop, lanczos};
use crate::optim::cg::LinearOperator;

#[derive(Debug, Clone, PartialEq)]
pub struct SlqSettings {
    pub runs: usize,
    pub steps: usize,
    /// Standard deviation of the Gaussian broadening, as a fraction of the width of the
    /// spectrum found (the largest node minus the smallest).
    pub broadening: f64,
    /// Points of the grid the density is evaluated on.
    pub grid_points: usize,
}

impl Default for SlqSettings {
    fn default() -> Self {
        Self {
            runs: 1,
            steps: 80,
            broadening: 0.01,
            grid_points: 1000,
        }
    }
}

/// One run's Gauss quadrature.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Quadrature {
    /// Ritz values, increasing.
    pub nodes: Vec<f64>,
    /// Their weights, summing to 1.
    pub weights: Vec<f64>,
    pub steps: usize,
    pub stop: LanczosStop,
}

impl Quadrature {
    /// `sum_k w_k f(node_k)`.
    pub fn integrate(&self, f: impl Fn(f64) -> f64) -> f64 {
        self.nodes
            .iter()
            .zip(&self.weights)
            .map(|(&t, &w)| w * f(t))
            .sum()
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Density {
    pub grid: Vec<f64>,
    pub density: Vec<f64>,
    /// The broadening's standard deviation (absolute).
    pub sigma: f64,
    pub runs: Vec<Quadrature>,
    /// Products of the operator made (not written: `hftrain spectrum` reports per-batch
    /// products for the whole command).
    #[serde(skip)]
    pub products: usize,
}

/// Gauss quadrature of `op`'s spectral measure seen from `start`, by `steps` Lanczos steps.
pub fn quadrature(op: &dyn LinearOperator, start: &Tensor<1>, steps: usize) -> (Quadrature, usize) {
    let krylov = lanczos(op, start, steps, |_, _| false);
    let products = krylov.products;
    let quadrature = match krylov.eigen() {
        Some(eig) => Quadrature {
            weights: (0..eig.values.len())
                .map(|i| eig.first(i).powi(2))
                .collect(),
            nodes: eig.values,
            steps: krylov.steps(),
            stop: krylov.stop,
        },
        None => Quadrature {
            nodes: Vec::new(),
            weights: Vec::new(),
            steps: krylov.steps(),
            stop: LanczosStop::NonFinite,
        },
    };
    (quadrature, products)
}

/// The averaged, broadened density of `runs` on a grid reaching 5 sigma past the extreme
/// nodes. `sigma` is absolute.
pub fn broaden(runs: &[Quadrature], sigma: f64, grid_points: usize) -> (Vec<f64>, Vec<f64>) {
    let nodes = runs.iter().flat_map(|r| r.nodes.iter().copied());
    let (lo, hi) = nodes.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
        (lo.min(t), hi.max(t))
    });
    let usable: Vec<&Quadrature> = runs.iter().filter(|r| !r.nodes.is_empty()).collect();
    if usable.is_empty() || sigma.is_nan() || sigma <= 0.0 || grid_points < 2 {
        return (Vec::new(), Vec::new());
    }
    let (lo, hi) = (lo - 5.0 * sigma, hi + 5.0 * sigma);
    let step = (hi - lo) / (grid_points - 1) as f64;
    let grid: Vec<f64> = (0..grid_points).map(|i| lo + step * i as f64).collect();
    let norm = 1.0 / (sigma * (2.0 * std::f64::consts::PI).sqrt() * usable.len() as f64);
    let density = grid
        .iter()
        .map(|&t| {
            usable
                .iter()
                .map(|r| r.integrate(|node| (-(t - node).powi(2) / (2.0 * sigma * sigma)).exp()))
                .sum::<f64>()
                * norm
        })
        .collect();
    (grid, density)
}

/// SLQ: `settings.runs` runs of `settings.steps` Lanczos steps from `start(run)` (random
/// vectors: Rademacher, as PyHessian), averaged and broadened.
pub fn slq(
    op: &dyn LinearOperator,
    dimension: usize,
    settings: &SlqSettings,
    mut start: impl FnMut(usize) -> Tensor<1>,
) -> Density {
    let steps = settings.steps.min(dimension).max(1);
    let mut products = 0;
    let runs: Vec<Quadrature> = (0..settings.runs)
        .map(|run| {
            let (q, p) = quadrature(op, &start(run), steps);
            products += p;
            q
        })
        .collect();
    let (lo, hi) = runs
        .iter()
        .flat_map(|r| r.nodes.iter().copied())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
            (lo.min(t), hi.max(t))
        });
    let width = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    let sigma = settings.broadening * width;
    let (grid, density) = broaden(&runs, sigma, settings.grid_points);
    Density {
        grid,
        density,
        sigma,
        runs,
        products,
    }
}

/// `integral f(t) density(t) dt` on the grid by the trapezoid rule.
pub fn integrate(grid: &[f64], density: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    grid.windows(2)
        .zip(density.windows(2))
        .map(|(t, d)| 0.5 * (t[1] - t[0]) * (d[0] * f(t[0]) + d[1] * f(t[1])))
        .sum()
}
