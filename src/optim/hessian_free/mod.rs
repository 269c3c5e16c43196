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
pub use config::{CurvatureKind, HessianFreeConfig, Preconditioning};
pub use line_search::armijo;

use super::cg::{self, CgSettings, CgStop, LinearOperator};
use super::kronecker::KroneckerEstimate;
use super::objective::{Objective, Problem};
use super::registry::{Capabilities, OptimizerSettings};
use super::step_log::{Cell, Column, Format, StepRecord};
use super::{Optimizer, OptimizerState, Step, StepInfo, check_weight_decay, dot, read_scalars};
use crate::support::validate::Problems;
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
    /// The step length taken along CG's direction: the line search's, times `multiplier`
    /// (0 when rejected).
    pub step_size: f64,
    /// Euclidean length of the parameter change.
    pub step_norm: f64,
    /// What the accepted step was multiplied by: the schedule's value with
    /// `step_schedule` (`value_after` is then the objective at the line search's step, before
    /// the multiplier), 1 otherwise.
    pub multiplier: f64,
    pub accepted: bool,
    /// CG's model predicted a change below what f32 resolves in the objective: the step
    /// cannot be judged, so it is neither taken nor a failure (no damping change, no count
    /// towards `max_rejected_steps`). A full-batch run at its optimum ends up here.
    pub converged: bool,
    pub timing: StepTiming,
}

/// `kind = "hessian-free"`: the weight decay is part of the objective it minimises (exact in
/// the gradient and every curvature product); its own settings are `[optimizer.hessian_free]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HessianFreeSettings {
    pub weight_decay: f64,
    pub hessian_free: HessianFreeConfig,
}

impl Default for HessianFreeSettings {
    fn default() -> Self {
        Self {
            weight_decay: 5e-4,
            hessian_free: HessianFreeConfig::default(),
        }
    }
}

impl OptimizerSettings for HessianFreeSettings {
    const KIND: &'static str = KIND;
    const CAPABILITIES: Capabilities = Capabilities {
        learning_rate: false,
        first_order: false,
        curvature_products: true,
    };
    const STEP_COLUMNS: &'static [Column] = STEP_COLUMNS;

    fn lr(&self) -> Option<f64> {
        None
    }

    /// With `step_schedule`, `[schedule]` (peaking at 1) multiplies the accepted step.
    fn scheduled(&self) -> bool {
        self.hessian_free.step_schedule
    }

    fn weight_decay(&self) -> f64 {
        self.weight_decay
    }

    fn curvature_batch_size(&self) -> Option<usize> {
        Some(self.hessian_free.curvature_batch_size)
    }

    fn validate(&self, problems: &mut Problems) {
        check_weight_decay(self.weight_decay, problems);
        self.hessian_free.validate(problems);
    }

    /// Weight decay is part of the objective Hessian-free minimises (curvature.rs), so the
    /// optimizer itself does not see it.
    fn build(&self, _decay_mask: Tensor<1>, len: usize) -> Box<dyn Optimizer> {
        Box::new(HessianFree::new(&self.hessian_free, len).with_weight_decay(self.weight_decay))
    }
}

/// `steps.csv`'s columns after `step,epoch,loss`: what a user of such an optimizer plots
/// (damping, CG iterations, rho, predicted against actual change) and where the time went.
const STEP_COLUMNS: &[Column] = &[
    Column::new("objective_before", Format::Exponent(8)),
    Column::new("objective_after", Format::Exponent(8)),
    Column::new("predicted", Format::Exponent(6)).tag("hessian_free/predicted_change"),
    Column::new("actual", Format::Exponent(6)).tag("hessian_free/actual_change"),
    Column::new("rho", Format::Fixed(6)).tag("hessian_free/rho"),
    Column::new("damping_used", Format::Exponent(6)).tag("hessian_free/damping"),
    Column::new("damping", Format::Exponent(6)),
    Column::new("cg_iterations", Format::Count).tag("hessian_free/cg_iterations"),
    Column::new("cg_stop", Format::Label),
    Column::new("chosen_iteration", Format::Count),
    Column::new("step_size", Format::Fixed(6)).tag("hessian_free/step_size"),
    Column::new("step_norm", Format::Exponent(6)).tag("hessian_free/step_norm"),
    Column::new("accepted", Format::Flag).tag("hessian_free/accepted"),
    Column::new("converged", Format::Flag).tag("hessian_free/converged"),
    Column::new("curvature_products", Format::Count).tag("hessian_free/curvature_products"),
    Column::new("seconds_gradient", Format::Fixed(4))
        .tag("time/step_gradient_seconds")
        .time(),
    Column::new("seconds_cg", Format::Fixed(4))
        .tag("time/step_cg_seconds")
        .time(),
    Column::new("seconds_backtracking", Format::Fixed(4))
        .tag("time/step_backtracking_seconds")
        .time(),
    Column::new("seconds_line_search", Format::Fixed(4))
        .tag("time/step_line_search_seconds")
        .time(),
    Column::new("seconds_step", Format::Fixed(4))
        .tag("time/step_seconds")
        .time(),
];

impl StepReport {
    /// The step's row of `steps.csv`, in `STEP_COLUMNS`' order.
    pub fn record(&self) -> StepRecord {
        let t = &self.timing;
        StepRecord::new(
            STEP_COLUMNS,
            vec![
                Cell::Number(self.value_before),
                Cell::Number(self.value_after),
                Cell::Number(self.predicted),
                Cell::Number(self.actual),
                Cell::Number(self.rho),
                Cell::Number(self.damping_used),
                Cell::Number(self.damping),
                Cell::Count(self.cg_iterations),
                Cell::Label(self.cg_stop.label().to_string()),
                Cell::Count(self.chosen_iteration),
                Cell::Number(self.step_size),
                Cell::Number(self.step_norm),
                Cell::Flag(self.accepted),
                Cell::Flag(self.converged),
                Cell::Count(t.products),
                Cell::Number(t.gradient),
                Cell::Number(t.cg),
                Cell::Number(t.backtracking),
                Cell::Number(t.line_search),
                Cell::Number(t.total),
            ],
        )
    }

    /// The Hessian-free part of the progress line.
    pub fn summary(&self) -> String {
        format!(
            "λ {:.2e} cg {} ({}) ρ {:.2} α {:.2}{} |Δθ| {:.2e} Δf {:.2e} (model {:.2e}){}",
            self.damping_used,
            self.cg_iterations,
            self.cg_stop.label(),
            self.rho,
            self.step_size,
            match self.multiplier == 1.0 {
                true => String::new(),
                false => format!(" (×{:.3} scheduled)", self.multiplier),
            },
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
    /// The objective's weight decay (its curvature's `weight_decay * I` on the weights).
    weight_decay: f64,
    /// With the Kronecker preconditioner: the factors last estimated, and their
    /// eigendecompositions.
    kronecker: Option<KroneckerEstimate>,
}

/// Hessian-free's scalar state, as checkpoints keep it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Counters {
    /// Exact in the checkpoint's JSON: a resumed run damps as the uninterrupted one does.
    #[serde(with = "crate::support::exact_float")]
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
            weight_decay: 0.0,
            kronecker: None,
        }
    }

    /// The objective's weight decay, which the Kronecker preconditioner adds to lambda.
    pub fn with_weight_decay(self, weight_decay: f64) -> Self {
        Self {
            weight_decay,
            ..self
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
        self.scaled_step_from(problem, params, value, gradient, squared_gradients, 1.0)
    }

    /// `step_from`, the accepted step (the line search's step length times CG's direction)
    /// multiplied by `multiplier`: the schedule's value with `step_schedule`, 1 otherwise.
    pub fn scaled_step_from(
        &mut self,
        problem: &dyn Problem,
        params: &Tensor<1>,
        value: f64,
        gradient: &Tensor<1>,
        squared_gradients: Option<&Tensor<1>>,
        multiplier: f64,
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
        let (solved, judge, candidate) = self.propose(
            problem,
            params,
            (value, gradient, gradient_norm_sq),
            squared_gradients,
            &mut timing,
        );

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
            multiplier,
            accepted: false,
            converged: false,
            timing,
        };
        let Some((alpha, judged_after)) = accepted else {
            return self.keep_params(params, report, solved.solution, unresolvable, verdict);
        };
        self.counters.rejected_in_a_row = 0;
        self.previous = Some(solved.solution);
        // Judged on the backtracking batch, the whole batch's objective after the step is
        // estimated by the change on that batch.
        report.value_after = match judge.on_subset {
            true => value + (judged_after - judge.before),
            false => judged_after,
        };
        let step = alpha * multiplier;
        report.step_size = step;
        report.step_norm = step * direction_norm;
        report.accepted = true;
        Ok((
            params.clone() + candidate.direction.mul_scalar(step),
            report,
        ))
    }

    /// CG's solve (timed in `timing`), then backtracking over its iterates: the solve, the
    /// objective the step is judged by, and the direction to try, from the objective's value,
    /// gradient and the gradient's squared norm at `params`.
    fn propose<'a>(
        &mut self,
        problem: &'a dyn Problem,
        params: &Tensor<1>,
        (value, gradient, gradient_norm_sq): (f64, &Tensor<1>, f64),
        squared_gradients: Option<&Tensor<1>>,
        timing: &mut StepTiming,
    ) -> (cg::CgResult, Judge<'a>, Candidate) {
        let damping_used = self.counters.damping;
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
        (solved, judge, candidate)
    }

    /// A step not taken: theta kept. Converged on this batch to f32's resolution
    /// (`unresolvable`): the warm start (`solution`) kept too. Rejected: lambda raised
    /// (unless rho's `verdict` already did) and the rejection counted.
    fn keep_params(
        &mut self,
        params: &Tensor<1>,
        mut report: StepReport,
        solution: Tensor<1>,
        unresolvable: bool,
        verdict: Verdict,
    ) -> Result<(Tensor<1>, StepReport)> {
        if unresolvable {
            report.converged = true;
            self.previous = Some(solution);
            return Ok((params.clone(), report));
        }
        if verdict != Verdict::Raise {
            self.judge(Verdict::Raise);
        }
        report.damping = self.counters.damping;
        self.reject(report.rho)?;
        Ok((params.clone(), report))
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
        if self.config.preconditioner == Preconditioning::Kronecker {
            self.refresh_kronecker(problem, params);
        }
        let c = &self.config;
        let damping = self.counters.damping;
        let diagonal = match (c.preconditioner, squared_gradients) {
            (Preconditioning::Diagonal, Some(sq)) => Some(cg::Diagonal(
                sq.clone()
                    .add_scalar(damping)
                    .powf_scalar(c.preconditioner_exponent),
            )),
            _ => None,
        };
        // The curvature CG solves with includes the weight decay's `weight_decay * I` on the
        // weights, which the factors leave out: it joins lambda in the preconditioner.
        let kronecker = self
            .kronecker
            .as_ref()
            .filter(|_| c.preconditioner == Preconditioning::Kronecker)
            .map(|k| k.eigen.preconditioner(damping + self.weight_decay));
        let preconditioner: Option<&dyn cg::Preconditioner> = match (&diagonal, &kronecker) {
            (Some(d), _) => Some(d),
            (None, Some(k)) => Some(k),
            (None, None) => None,
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
            damping,
            &gradient.clone().neg(),
            warm_start,
            preconditioner,
            &self.cg_settings(),
        );
        (solved, counted.products.get())
    }

    /// New Kronecker factors from the problem every `kronecker_refresh_steps` steps (and at
    /// the first), blended with the previous ones, and their eigendecompositions.
    fn refresh_kronecker(&mut self, problem: &dyn Problem, params: &Tensor<1>) {
        let c = &self.config;
        self.kronecker = KroneckerEstimate::refreshed(
            self.kronecker.take(),
            problem,
            params,
            self.counters.steps,
            c.kronecker_refresh_steps,
            c.kronecker_decay,
        );
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
    /// the preconditioner needs them), then `step_from`. The schedule's `lr` multiplies the
    /// accepted step with `step_schedule`, and does not apply otherwise.
    fn step(&mut self, objective: &dyn Objective, params: &Tensor<1>, lr: f64) -> Result<Step> {
        let clock = Instant::now();
        let diagonal = self.config.preconditioner == Preconditioning::Diagonal;
        let gradient = objective.gradient(params, diagonal);
        let gradient_seconds = clock.elapsed().as_secs_f64();
        let multiplier = if self.config.step_schedule { lr } else { 1.0 };
        let (params, mut report) = self.scaled_step_from(
            objective,
            params,
            gradient.value,
            &gradient.gradient,
            gradient.squared.as_ref(),
            multiplier,
        )?;
        report.timing.gradient = gradient_seconds;
        report.timing.total = clock.elapsed().as_secs_f64();
        Ok(Step {
            params,
            info: StepInfo::recorded(report.step_size, report.record(), report.summary(), report),
        })
    }

    fn state(&self) -> OptimizerState {
        let mut state = OptimizerState::new(KIND, &self.counters);
        state.put_vector(PREVIOUS_SOLUTION, &self.previous);
        KroneckerEstimate::save(self.kronecker.as_ref(), &mut state);
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
        self.kronecker = KroneckerEstimate::load(state, self.len, device)?;
        self.counters = counters;
        self.previous = state.take_vector(PREVIOUS_SOLUTION, self.len, device)?;
        Ok(())
    }
}
