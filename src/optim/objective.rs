//! What an optimizer may ask of the objective on the current batch. The training loop
//! hands every optimizer the same `Objective` (`curvature::BatchObjective` implements it);
//! each asks for what it needs.

use burn::prelude::*;

use super::cg::LinearOperator;
use super::kronecker::KroneckerFactors;

/// The regularised objective's value and gradient at a point.
pub struct Gradient {
    /// Read back to the host.
    pub value: f64,
    pub gradient: Tensor<1>,
    /// Sums of squared per-example gradients (a diagonal preconditioner's input), when asked.
    pub squared: Option<Tensor<1>>,
}

/// Values and curvature of the objective near the current parameters: what Hessian-free
/// asks besides the gradient, and all a test problem has to provide.
pub trait Problem {
    /// The objective at `params` (read back to the host).
    fn value(&self, params: &Tensor<1>) -> f64;
    /// The objective on the subset the backtracking over CG's iterates compares them on,
    /// where that is not the whole batch (cheaper; the chosen iterate's `value` follows).
    fn backtracking_value(&self, _params: &Tensor<1>) -> Option<f64> {
        None
    }
    /// The Kronecker factors of the curvature at `params` (on the curvature batch), where
    /// the problem is a network's.
    fn kronecker_factors(&self, _params: &Tensor<1>) -> Option<KroneckerFactors> {
        None
    }
    /// The curvature operator at `params`.
    fn curvature(&self, params: &Tensor<1>) -> Box<dyn LinearOperator + '_>;
}

/// The objective on the current batch, as every optimizer sees it.
pub trait Objective: Problem {
    /// Gradient of the mean data loss alone: first-order rules add weight decay their own
    /// way (to the gradient, or decoupled).
    fn loss_gradient(&self, params: &Tensor<1>) -> Tensor<1>;
    /// The regularised objective (data loss plus `weight_decay / 2 |mask theta|^2`): value
    /// and gradient, and with `squared` the squared per-example gradients.
    fn gradient(&self, params: &Tensor<1>, squared: bool) -> Gradient;
}
