//! Hessian-free optimisation (truncated Newton, Martens 2010, with Steihaug's safeguard for
//! an indefinite Hessian).
//!
//! One step from parameters theta with value f0 and gradient g:
//! 1. CG on `(C + lambda I) p = -g`, warm-started from a decayed previous solution, with the
//!    curvature products of a `Problem` (on a sub-batch) and an optional diagonal
//!    preconditioner.
//! 2. Backtracking over the kept CG iterates: from the last one back while an earlier one
//!    has the lower objective (later iterates fit the curvature sub-batch ever more closely).
//! 3. The reduction ratio rho = actual / predicted (the damped quadratic model's value at the
//!    chosen iterate); Levenberg-Marquardt: rho below 1/4 raises lambda, above 3/4 lowers it.
//! 4. An Armijo line search along the chosen iterate. No sufficient decrease, or a NaN or Inf
//!    anywhere: the step is rejected, theta is kept and lambda raised. Too many rejections in
//!    a row stop the run with a message. A step whose predicted decrease is below what f32
//!    resolves in the objective is not judged: taken if it lowers f, else `converged` (theta
//!    kept, lambda lowered, not counted as a rejection).
//!
//! The parts, each testable alone: `damping` (the Levenberg-Marquardt rule), `backtracking`
//! (over CG's iterates) and `line_search` (Armijo); this file composes them into a step.

mod backtracking;
mod config;
pub mod damping;
mod line_search;

use std::time::Instant;

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use backtracking::choose as backtrack;
pub use config::{CurvatureKind, HessianFreeConfig};
pub use line_search::armijo;

use super::cg::{self, CgSettings, CgStop, LinearOperator};
use super::objective::{Objective, Problem};
use super::{Optimizer, OptimizerState, Step, StepInfo, dot, read_scalars};
use damping::Verdict;

/// What one step did, for the progress line and the per-step log.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The objective on the whole batch before the step.
    pub value_before: f64,
    /// The objective after the step (equal to `value_before` when rejected); with
    /// `judge_on_backtracking_batch`, `value_before` plus the backtracking batch's change.
    pub value_after: f64,
    /// The damped quadratic model's change at the chosen CG iterate (negative when CG made
    /// progress).
    pub predicted: f64,
    /// The judged objective's change at the chosen CG iterate (before the line search): the
    /// whole batch's, or the backtracking batch's with `judge_on_backtracking_batch`.
    pub actual: f64,
    pub rho: f64,
    /// Lambda used for this step's CG solve, and after its update.
    pub damping_used: f64,
    pub damping: f64,
    pub cg_iterations: usize,
    pub cg_stop: CgStop,
    /// CG iteration of the iterate chosen by backtracking (0: the gradient fallback).
    pub chosen_iteration: usize,
    /// The line search's step length (0 when rejected).
    pub step_size: f64,
    /// Euclidean length of the parameter change.
    pub step_norm: f64,
    pub accepted: bool,
    /// CG's model predicted a change below what f32 resolves in the objective: the step
    /// cannot be judged, so it is neither taken nor a failure (no damping change, no count
    /// towards `max_rejected_steps`). A full-batch run at its optimum ends up here.
    pub converged: bool,
    pub timing: StepTiming,
}

impl StepReport {
    /// The Hessian-free part of the progress line.
    pub fn summary(&self) -> String {
        format!(
            "λ {:.2e} cg {} ({}) ρ {:.2} α {:.2} |Δθ| {:.2e} Δf {:.2e} (model {:.2e}){}",
            self.damping_used,
            self.cg_iterations,
            self.cg_stop.label(),
            self.rho,
            self.step_size,
            self.step_norm,
            self.actual,
            self.predicted,
            match (self.accepted, self.converged) {
                (true, _) => "",
                (false, true) => " converged (below f32 resolution)",
                (false, false) => " rejected",
            }
        )
    }
}

/// Where a step's time went, in seconds (each part ends with a read of its result, so on a
/// GPU the device's work is in it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTiming {
    pub gradient: f64,
    pub cg: f64,
    /// Curvature products CG made (seconds per product: `cg / products`).
    pub products: usize,
    pub backtracking: f64,
    pub line_search: f64,
    pub total: f64,
}

/// The objective's relative resolution in f32: a change below `RESOLUTION * |f|` is rounding.
/// A few ulps, for the sums over the batch that make f.
pub const RESOLUTION: f64 = 16.0 * f32::EPSILON as f64;

/// A curvature operator that counts its products.
struct Counted<'a> {
    inner: &'a dyn LinearOperator,
    products: std::cell::Cell<usize>,
}

impl LinearOperator for Counted<'_> {
    fn apply(&self, v: &Tensor<1>) -> Tensor<1> {
        self.products.set(self.products.get() + 1);
        self.inner.apply(v)
    }
}

pub struct HessianFree {
    config: HessianFreeConfig,
    len: usize,
    counters: Counters,
    /// The previous step's CG solution, CG's next warm start.
    previous: Option<Tensor<1>>,
}

/// Hessian-free's scalar state, as checkpoints keep it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Counters {
    damping: f64,
    steps: u64,
    rejected_in_a_row: u64,
    rejected_total: u64,
}

pub const KIND: &str = "hessian-free";
const PREVIOUS_SOLUTION: &str = "previous_solution";

impl HessianFree {
    pub fn new(config: &HessianFreeConfig, len: usize) -> Self {
        Self {
            config: config.clone(),
            len,
            counters: Counters {
                damping: config.initial_damping,
                steps: 0,
                rejected_in_a_row: 0,
                rejected_total: 0,
            },
            previous: None,
        }
    }

    pub fn damping(&self) -> f64 {
        self.counters.damping
    }

    fn cg_settings(&self) -> CgSettings {
        CgSettings {
            max_iterations: self.config.cg_max_iterations,
            tolerance: self.config.cg_tolerance,
            ..CgSettings::default()
        }
    }

    fn judge(&mut self, verdict: Verdict) {
        self.counters.damping = damping::apply(self.counters.damping, verdict, &self.config);
    }

    /// One step from `params`, where the objective has `value` and `gradient`;
    /// `squared_gradients` feeds the preconditioner when it is on.
    pub fn step_from(
        &mut self,
        problem: &dyn Problem,
        params: &Tensor<1>,
        value: f64,
        gradient: &Tensor<1>,
        squared_gradients: Option<&Tensor<1>>,
    ) -> Result<(Tensor<1>, StepReport)> {
        let [gradient_norm_sq] = read_scalars([dot(gradient, gradient)]);
        if !value.is_finite() || !gradient_norm_sq.is_finite() {
            bail!(
                "the objective ({value}) or its gradient (squared norm {gradient_norm_sq}) is not \
                 finite at the current parameters; no damping can repair that"
            );
        }
        let damping_used = self.counters.damping;
        let mut timing = StepTiming::default();
        let clock = Instant::now();
        let (solved, products) = self.solve(problem, params, gradient, squared_gradients);
        (timing.cg, timing.products) = (clock.elapsed().as_secs_f64(), products);
        self.counters.steps += 1;

        let clock = Instant::now();
        let judge = Judge::new(
            problem,
            params,
            value,
            self.config.judge_on_backtracking_batch,
        );
        let candidate = choose_direction(
            &judge,
            params,
            gradient,
            gradient_norm_sq,
            damping_used,
            &solved,
        );
        timing.backtracking = clock.elapsed().as_secs_f64();

        let clock = Instant::now();
        let actual = candidate.value - judge.before;
        let predicted = candidate.predicted;
        let rho = if predicted < 0.0 {
            actual / predicted
        } else {
            f64::NAN
        };
        // A predicted change below what f32 resolves in f makes rho rounding noise, and a
        // step that does not lower f is then no failure.
        let unresolvable = candidate.value.is_finite()
            && predicted <= 0.0
            && -predicted < RESOLUTION * judge.before.abs();
        let verdict = damping::verdict(rho, unresolvable, &self.config);
        self.judge(verdict);
        let (accepted, direction_norm) = self.line_search(&judge, params, gradient, &candidate);
        timing.line_search = clock.elapsed().as_secs_f64();

        let mut report = StepReport {
            value_before: value,
            value_after: value,
            predicted,
            actual,
            rho,
            damping_used,
            damping: self.counters.damping,
            cg_iterations: solved.iterations,
            cg_stop: solved.stop,
            chosen_iteration: candidate.iteration,
            step_size: 0.0,
            step_norm: 0.0,
            accepted: false,
            converged: false,
            timing,
        };
        let Some((alpha, judged_after)) = accepted else {
            if unresolvable {
                // Converged on this batch to f32's resolution: keep theta and the warm start.
                report.converged = true;
                self.previous = Some(solved.solution);
                return Ok((params.clone(), report));
            }
            // Rejected: keep theta and raise lambda (unless rho already did).
            if verdict != Verdict::Raise {
                self.judge(Verdict::Raise);
            }
            report.damping = self.counters.damping;
            self.reject(rho)?;
            return Ok((params.clone(), report));
        };
        self.counters.rejected_in_a_row = 0;
        self.previous = Some(solved.solution);
        // Judged on the backtracking batch, the whole batch's objective after the step is
        // estimated by the change on that batch.
        report.value_after = match judge.on_subset {
            true => value + (judged_after - judge.before),
            false => judged_after,
        };
        report.step_size = alpha;
        report.step_norm = alpha * direction_norm;
        report.accepted = true;
        Ok((
            params.clone() + candidate.direction.mul_scalar(alpha),
            report,
        ))
    }

    /// CG on `(C + lambda I) p = -g`, warm-started from the decayed previous solution (which
    /// is taken: a rejected step forgets it), preconditioned where that is on. Returns CG's
    /// result and the curvature products it made.
    fn solve(
        &mut self,
        problem: &dyn Problem,
        params: &Tensor<1>,
        gradient: &Tensor<1>,
        squared_gradients: Option<&Tensor<1>>,
    ) -> (cg::CgResult, usize) {
        let c = &self.config;
        let preconditioner = match (c.preconditioner, squared_gradients) {
            (true, Some(sq)) => Some(
                sq.clone()
                    .add_scalar(self.counters.damping)
                    .powf_scalar(c.preconditioner_exponent),
            ),
            _ => None,
        };
        let warm_start = self
            .previous
            .take()
            .filter(|_| c.warm_start_decay > 0.0)
            .map(|p| p.mul_scalar(c.warm_start_decay));
        let curvature = problem.curvature(params);
        let counted = Counted {
            inner: curvature.as_ref(),
            products: std::cell::Cell::new(0),
        };
        let solved = cg::solve(
            &counted,
            self.counters.damping,
            &gradient.clone().neg(),
            warm_start,
            preconditioner.as_ref(),
            &self.cg_settings(),
        );
        (solved, counted.products.get())
    }

    /// The Armijo line search along the chosen direction: the accepted (step length,
    /// objective), if any, and the direction's length.
    fn line_search(
        &self,
        judge: &Judge,
        params: &Tensor<1>,
        gradient: &Tensor<1>,
        candidate: &Candidate,
    ) -> (Option<(f64, f64)>, f64) {
        let c = &self.config;
        let direction = &candidate.direction;
        let [slope, norm_sq] = read_scalars([dot(gradient, direction), dot(direction, direction)]);
        let slope = if norm_sq.is_finite() { slope } else { f64::NAN };
        let accepted = armijo(
            judge.before,
            slope,
            candidate.value,
            c.armijo_c,
            c.line_search_shrink,
            c.line_search_max_tries,
            |alpha| judge.value_at(params, &direction.clone().mul_scalar(alpha)),
        );
        (accepted, norm_sq.sqrt())
    }

    /// Counts a rejected step; too many in a row end the run with a message.
    fn reject(&mut self, rho: f64) -> Result<()> {
        self.counters.rejected_in_a_row += 1;
        self.counters.rejected_total += 1;
        if self.counters.rejected_in_a_row as usize >= self.config.max_rejected_steps {
            bail!(
                "Hessian-free rejected {} steps in a row (no decrease of the objective; damping \
                 now {:.3e}, last rho {rho:.3}); the parameters are those of the last accepted \
                 step. Try a larger optimizer.hessian_free.initial_damping or \
                 curvature_batch_size",
                self.counters.rejected_in_a_row,
                self.counters.damping
            );
        }
        Ok(())
    }
}

/// The direction a step tries, with its quadratic model's predicted change and the
/// objective the step is judged by (`Judge`) at theta + direction.
struct Candidate {
    direction: Tensor<1>,
    predicted: f64,
    value: f64,
    /// CG iteration it comes from (0: the gradient fallback).
    iteration: usize,
}

/// The objective at theta + p on the whole batch (infinite where not finite, so that such a
/// point is never chosen).
fn value_at(problem: &dyn Problem, params: &Tensor<1>, p: &Tensor<1>) -> f64 {
    finite_or_infinity(problem.value(&(params.clone() + p.clone())))
}

fn finite_or_infinity(v: f64) -> f64 {
    if v.is_finite() { v } else { f64::INFINITY }
}

/// The objective a step is judged by (rho and the line search): the whole batch's, or with
/// `judge_on_backtracking_batch` the backtracking batch's, whose value before the step then
/// costs one forward pass on that batch, where the whole batch's after the step would cost
/// one on the whole batch. The change on the same images before and after is what rho reads.
struct Judge<'a> {
    problem: &'a dyn Problem,
    /// The judged objective at theta.
    before: f64,
    on_subset: bool,
}

impl<'a> Judge<'a> {
    fn new(problem: &'a dyn Problem, params: &Tensor<1>, value: f64, on_subset: bool) -> Self {
        let subset_value = if on_subset {
            problem.backtracking_value(params)
        } else {
            None
        };
        match subset_value {
            Some(before) => Self {
                problem,
                before,
                on_subset: true,
            },
            None => Self {
                problem,
                before: value,
                on_subset: false,
            },
        }
    }

    /// The judged objective at theta + p (infinite where not finite).
    fn value_at(&self, params: &Tensor<1>, p: &Tensor<1>) -> f64 {
        match self.on_subset {
            true => self.subset_value_at(params, p).unwrap_or(f64::INFINITY),
            false => value_at(self.problem, params, p),
        }
    }

    /// The backtracking batch's objective at theta + p, where the problem has such a batch.
    fn subset_value_at(&self, params: &Tensor<1>, p: &Tensor<1>) -> Option<f64> {
        self.problem
            .backtracking_value(&(params.clone() + p.clone()))
            .map(finite_or_infinity)
    }
}

/// Backtracking over CG's iterates, compared on the problem's subset where it has one (the
/// chosen one's judged objective then decides the rest: on the whole batch unless the step is
/// judged on the subset too); where CG made no iteration (negative curvature or a non-finite
/// product at once), the damped gradient step -g / lambda, whose model change (with lambda I
/// alone) is -|g|^2 / (2 lambda).
fn choose_direction(
    judge: &Judge,
    params: &Tensor<1>,
    gradient: &Tensor<1>,
    gradient_norm_sq: f64,
    damping: f64,
    solved: &cg::CgResult,
) -> Candidate {
    let on_subset = std::cell::Cell::new(true);
    let compare_at = |it: &cg::Iterate| match judge.subset_value_at(params, &it.x) {
        Some(v) => v,
        None => {
            on_subset.set(false);
            value_at(judge.problem, params, &it.x)
        }
    };
    match backtrack(&solved.iterates, compare_at) {
        Some((it, compared)) => Candidate {
            direction: it.x.clone(),
            predicted: it.model_value,
            value: if on_subset.get() == judge.on_subset {
                compared
            } else {
                judge.value_at(params, &it.x)
            },
            iteration: it.iteration,
        },
        None => {
            let direction = gradient.clone().neg().div_scalar(damping);
            Candidate {
                value: judge.value_at(params, &direction),
                direction,
                predicted: -gradient_norm_sq / (2.0 * damping),
                iteration: 0,
            }
        }
    }
}

impl Optimizer for HessianFree {
    /// The gradient of the regularised objective (with squared per-example gradients where
    /// the preconditioner needs them), then `step_from`. The learning rate does not apply.
    fn step(&mut self, objective: &dyn Objective, params: &Tensor<1>, _lr: f64) -> Result<Step> {
        let clock = Instant::now();
        let gradient = objective.gradient(params, self.config.preconditioner);
        let gradient_seconds = clock.elapsed().as_secs_f64();
        let (params, mut report) = self.step_from(
            objective,
            params,
            gradient.value,
            &gradient.gradient,
            gradient.squared.as_ref(),
        )?;
        report.timing.gradient = gradient_seconds;
        report.timing.total = clock.elapsed().as_secs_f64();
        Ok(Step {
            params,
            info: StepInfo {
                step_length: report.step_size,
                report: Some(report),
            },
        })
    }

    fn state(&self) -> OptimizerState {
        let mut state = OptimizerState::new(KIND, &self.counters);
        state.put_vector(PREVIOUS_SOLUTION, &self.previous);
        state
    }

    fn load_state(&mut self, state: &OptimizerState, device: &Device) -> Result<()> {
        let counters: Counters = state.scalars(KIND)?;
        if !counters.damping.is_finite() || counters.damping <= 0.0 {
            bail!(
                "the checkpoint's Hessian-free damping is {}: not a valid damping",
                counters.damping
            );
        }
        self.counters = counters;
        self.previous = state.take_vector(PREVIOUS_SOLUTION, self.len, device)?;
        Ok(())
    }
}
