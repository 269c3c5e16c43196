//! `[optimizer.hessian_free]`: the settings of the Hessian-free optimizer.

use serde::{Deserialize, Serialize};

use crate::support::validate::{Problems, fraction, positive};

/// Which curvature matrix CG solves with (also `hftrain spectrum --matrix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CurvatureKind {
    /// The exact Hessian of the loss, by double backprop (indefinite in general; CG stops on
    /// negative curvature).
    Hessian,
    /// The generalised Gauss-Newton matrix J^T H_L J (positive semi-definite; Martens'
    /// choice).
    GaussNewton,
}

impl std::fmt::Display for CurvatureKind {
    /// The name a config writes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CurvatureKind::Hessian => "hessian",
            CurvatureKind::GaussNewton => "gauss-newton",
        })
    }
}

/// CG's preconditioner (`optimizer.hessian_free.preconditioner`). A config may also write
/// `true` (diagonal) or `false` (none), as configs before the Kronecker one did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preconditioning {
    None,
    /// Martens' diagonal, `(diag(sum of squared gradients) + lambda)^exponent`.
    Diagonal,
    /// K-FAC's factors for linear layers and KFC's for convolutions, the curvature's
    /// diagonal for the other parameters, estimated on the curvature batch every
    /// `kronecker_refresh_steps` steps; their damped inverse, exactly (src/optim/kronecker/).
    Kronecker,
}

impl<'de> Deserialize<'de> for Preconditioning {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Flag(bool),
            Name(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Flag(false) => Ok(Self::None),
            Written::Flag(true) => Ok(Self::Diagonal),
            Written::Name(name) => match name.as_str() {
                "none" => Ok(Self::None),
                "diagonal" => Ok(Self::Diagonal),
                "kronecker" => Ok(Self::Kronecker),
                other => Err(serde::de::Error::custom(format!(
                    "preconditioner = {other:?}: expected \"none\", \"diagonal\" or \"kronecker\""
                ))),
            },
        }
    }
}

/// The Hessian-free optimizer (Martens 2010). Every step: the gradient on the training
/// batch; CG on `(C + damping I) p = -g` with curvature products on the first
/// `curvature_batch_size` images of that batch; backtracking over CG iterates; Levenberg-
/// Marquardt damping from the reduction ratio; an Armijo line search. There is no learning
/// rate; with `step_schedule` the `[schedule]` multiplies each accepted step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HessianFreeConfig {
    pub curvature: CurvatureKind,
    /// Images of each training batch the curvature products use.
    pub curvature_batch_size: usize,
    /// Images of each training batch the backtracking over CG's iterates compares them on
    /// (0: the whole batch). Only the chosen iterate's objective is then taken on the whole
    /// batch, for rho and the line search (Martens 2010 backtracks on a subset).
    pub backtracking_batch_size: usize,
    /// Judge each step (rho, the line search) by the objective's change on the backtracking
    /// batch, before and after the step, instead of on the whole batch: one forward pass on
    /// the backtracking batch a step instead of one on the whole batch. Needs
    /// `backtracking_batch_size` > 0.
    pub judge_on_backtracking_batch: bool,
    /// Starting damping lambda.
    pub initial_damping: f64,
    /// Lambda stays within these bounds.
    pub min_damping: f64,
    pub max_damping: f64,
    /// rho below `damping_raise_below` multiplies lambda by `damping_raise`; rho above
    /// `damping_lower_above` multiplies it by `damping_lower`.
    pub damping_raise_below: f64,
    pub damping_lower_above: f64,
    pub damping_raise: f64,
    pub damping_lower: f64,
    pub cg_max_iterations: usize,
    /// Martens' relative-progress tolerance.
    pub cg_tolerance: f64,
    /// CG starts from this multiple of the previous step's solution.
    pub warm_start_decay: f64,
    /// CG's preconditioner: none, Martens' diagonal, or Kronecker-factored.
    pub preconditioner: Preconditioning,
    /// The diagonal one's exponent.
    pub preconditioner_exponent: f64,
    /// The Kronecker factors are estimated afresh every this many steps (on that step's
    /// curvature batch: one forward and one backward pass per class), and blended with the
    /// previous estimate as `decay * previous + (1 - decay) * new`.
    pub kronecker_refresh_steps: usize,
    pub kronecker_decay: f64,
    /// Armijo sufficient-decrease constant and the line search's shrink factor.
    pub armijo_c: f64,
    pub line_search_shrink: f64,
    pub line_search_max_tries: usize,
    /// Stop the run after this many consecutive rejected steps.
    pub max_rejected_steps: usize,
    /// A decaying Newton step: each accepted step (the line search's step length times CG's
    /// direction) is multiplied by `[schedule]`'s value at that step, with a peak of 1 (a
    /// one-cycle schedule's last epochs then take ever smaller steps, as a first-order
    /// optimizer's learning rate decays). Off: no schedule, and a `[schedule]` is refused.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub step_schedule: bool,
}

impl Default for HessianFreeConfig {
    fn default() -> Self {
        Self {
            curvature: CurvatureKind::GaussNewton,
            curvature_batch_size: 128,
            backtracking_batch_size: 0,
            judge_on_backtracking_batch: false,
            initial_damping: 1.0,
            min_damping: 1e-6,
            max_damping: 1e6,
            damping_raise_below: 0.25,
            damping_lower_above: 0.75,
            damping_raise: 1.5,
            damping_lower: 2.0 / 3.0,
            cg_max_iterations: 50,
            cg_tolerance: 5e-4,
            warm_start_decay: 0.95,
            preconditioner: Preconditioning::None,
            preconditioner_exponent: 0.75,
            kronecker_refresh_steps: 5,
            kronecker_decay: 0.5,
            armijo_c: 1e-2,
            line_search_shrink: 0.8,
            line_search_max_tries: 10,
            max_rejected_steps: 20,
            step_schedule: false,
        }
    }
}

impl HessianFreeConfig {
    pub fn validate(&self, problems: &mut Problems) {
        let h = self;
        let key = "optimizer.hessian_free";
        problems.check(
            h.curvature_batch_size > 0,
            format!("{key}.curvature_batch_size = 0: expected at least 1"),
        );
        problems.check(
            !h.judge_on_backtracking_batch || h.backtracking_batch_size > 0,
            format!(
                "{key}.judge_on_backtracking_batch = true with backtracking_batch_size = 0: \
                 give the backtracking batch a size (for example a tenth of train.batch_size), \
                 or set judge_on_backtracking_batch = false"
            ),
        );
        problems.check(
            positive(h.min_damping) && h.min_damping <= h.max_damping && h.max_damping.is_finite(),
            format!(
                "{key}.min_damping = {}, max_damping = {}: expected 0 < min_damping <= max_damping",
                h.min_damping, h.max_damping
            ),
        );
        problems.check(
            positive(h.initial_damping)
                && (h.min_damping..=h.max_damping).contains(&h.initial_damping),
            format!(
                "{key}.initial_damping = {}: expected a number between min_damping and max_damping",
                h.initial_damping
            ),
        );
        problems.check(
            fraction(h.damping_raise_below)
                && fraction(h.damping_lower_above)
                && h.damping_raise_below <= h.damping_lower_above,
            format!(
                "{key}.damping_raise_below = {}, damping_lower_above = {}: expected \
                 0 <= damping_raise_below <= damping_lower_above <= 1",
                h.damping_raise_below, h.damping_lower_above
            ),
        );
        problems.check(
            h.damping_raise.is_finite() && h.damping_raise > 1.0,
            format!(
                "{key}.damping_raise = {}: expected a number above 1",
                h.damping_raise
            ),
        );
        problems.check(
            h.damping_lower > 0.0 && h.damping_lower < 1.0,
            format!(
                "{key}.damping_lower = {}: expected a number in (0, 1)",
                h.damping_lower
            ),
        );
        self.validate_solver(problems);
    }

    /// CG's, the preconditioner's and the line search's settings.
    fn validate_solver(&self, problems: &mut Problems) {
        let h = self;
        let key = "optimizer.hessian_free";
        problems.check(
            h.cg_max_iterations > 0,
            format!("{key}.cg_max_iterations = 0: expected at least 1"),
        );
        problems.check(
            positive(h.cg_tolerance),
            format!(
                "{key}.cg_tolerance = {}: expected a positive number",
                h.cg_tolerance
            ),
        );
        problems.check(
            fraction(h.warm_start_decay),
            format!(
                "{key}.warm_start_decay = {}: expected a number in [0, 1]",
                h.warm_start_decay
            ),
        );
        problems.check(
            fraction(h.preconditioner_exponent),
            format!(
                "{key}.preconditioner_exponent = {}: expected a number in [0, 1]",
                h.preconditioner_exponent
            ),
        );
        problems.check(
            h.kronecker_refresh_steps > 0,
            format!("{key}.kronecker_refresh_steps = 0: expected at least 1"),
        );
        problems.check(
            h.kronecker_decay >= 0.0 && h.kronecker_decay < 1.0,
            format!(
                "{key}.kronecker_decay = {}: expected a number in [0, 1) (0: each refresh \
                 replaces the factors)",
                h.kronecker_decay
            ),
        );
        problems.check(
            h.armijo_c > 0.0 && h.armijo_c < 1.0,
            format!(
                "{key}.armijo_c = {}: expected a number in (0, 1)",
                h.armijo_c
            ),
        );
        problems.check(
            h.line_search_shrink > 0.0 && h.line_search_shrink < 1.0,
            format!(
                "{key}.line_search_shrink = {}: expected a number in (0, 1)",
                h.line_search_shrink
            ),
        );
        problems.check(
            h.max_rejected_steps > 0,
            format!("{key}.max_rejected_steps = 0: expected at least 1"),
        );
    }
}
