//! The Levenberg-Marquardt rule for Hessian-free's damping lambda: a step whose reduction
//! ratio rho = actual / predicted is poor (below `damping_raise_below`) means the quadratic
//! model was trusted too far, so lambda grows; a good one (above `damping_lower_above`)
//! lets it shrink. Lambda stays within `[min_damping, max_damping]`.

use super::HessianFreeConfig;

/// What the rule does to lambda after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Raise,
    Lower,
    Keep,
}

/// The rule's verdict on a step with reduction ratio `rho`. A step too small for f32 to
/// judge (`unresolvable`) lowers lambda: either the batch's optimum is reached or lambda
/// damps the step to nothing, and lowering is right in both. A rho that is not finite (no
/// predicted decrease, or a non-finite value) raises it.
pub fn verdict(rho: f64, unresolvable: bool, config: &HessianFreeConfig) -> Verdict {
    if unresolvable {
        Verdict::Lower
    } else if !rho.is_finite() || rho < config.damping_raise_below {
        Verdict::Raise
    } else if rho > config.damping_lower_above {
        Verdict::Lower
    } else {
        Verdict::Keep
    }
}

/// Lambda after `verdict`.
pub fn apply(lambda: f64, verdict: Verdict, config: &HessianFreeConfig) -> f64 {
    match verdict {
        Verdict::Raise => (lambda * config.damping_raise).min(config.max_damping),
        Verdict::Lower => (lambda * config.damping_lower).max(config.min_damping),
        Verdict::Keep => lambda,
    }
}
