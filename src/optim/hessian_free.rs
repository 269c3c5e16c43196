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

use anyhow::{Result, bail};
use burn::prelude::*;

use super::OptimizerState;
use super::cg::{self, CgSettings, CgStop, LinearOperator};
use crate::config::HessianFreeConfig;

/// What the optimizer needs of the objective on the current batch besides its gradient.
pub trait Problem {
    /// The objective at `params` (read back to the host).
    fn value(&self, params: &Tensor<1>) -> f64;
    /// The objective on the subset the backtracking over CG's iterates compares them on,
    /// where that is not the whole batch (cheaper; the chosen iterate's `value` follows).
    fn backtracking_value(&self, _params: &Tensor<1>) -> Option<f64> {
        None
    }
    /// The curvature operator at `params`.
    fn curvature(&self, params: &Tensor<1>) -> Box<dyn LinearOperator + '_>;
}

/// What one step did, for the progress line and the per-step log.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    pub value_before: f64,
    /// The objective after the step (equal to `value_before` when rejected).
    pub value_after: f64,
    /// The damped quadratic model's change at the chosen CG iterate (negative when CG made
    /// progress).
    pub predicted: f64,
    /// The objective's change at the chosen CG iterate (before the line search).
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

/// Where a step's time went, in seconds (each part ends with a read of its result, so on a
/// GPU the device's work is in it). `gradient` and `total` are the caller's to fill.
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
    damping: f64,
    previous: Option<Tensor<1>>,
    steps: u64,
    rejected_in_a_row: u64,
    rejected_total: u64,
}

pub const KIND: &str = "hessian-free";

fn read(scalars: Vec<Tensor<1>>) -> Vec<f64> {
    Tensor::cat(scalars, 0).to_data().iter::<f64>().collect()
}

fn dot(a: &Tensor<1>, b: &Tensor<1>) -> Tensor<1> {
    (a.clone() * b.clone()).sum()
}

impl HessianFree {
    pub fn new(config: &HessianFreeConfig, len: usize) -> Self {
        Self {
            config: config.clone(),
            len,
            damping: config.initial_damping,
            previous: None,
            steps: 0,
            rejected_in_a_row: 0,
            rejected_total: 0,
        }
    }

    pub fn damping(&self) -> f64 {
        self.damping
    }

    fn cg_settings(&self) -> CgSettings {
        CgSettings {
            max_iterations: self.config.cg_max_iterations,
            tolerance: self.config.cg_tolerance,
            ..CgSettings::default()
        }
    }

    fn raise_damping(&mut self) {
        self.damping = (self.damping * self.config.damping_raise).min(self.config.max_damping);
    }

    /// One step. `value` and `gradient` are the objective and its gradient at `params` on
    /// the batch; `squared_gradients` feeds the preconditioner when it is on.
    pub fn step(
        &mut self,
        problem: &dyn Problem,
        params: &Tensor<1>,
        value: f64,
        gradient: &Tensor<1>,
        squared_gradients: Option<&Tensor<1>>,
    ) -> Result<(Tensor<1>, StepReport)> {
        let c = self.config.clone();
        let gradient_norm_sq = read(vec![dot(gradient, gradient)])[0];
        if !value.is_finite() || !gradient_norm_sq.is_finite() {
            bail!(
                "the objective ({value}) or its gradient (squared norm {gradient_norm_sq}) is not \
                 finite at the current parameters; no damping can repair that"
            );
        }
        let damping_used = self.damping;
        let preconditioner = match (c.preconditioner, squared_gradients) {
            (true, Some(sq)) => Some(
                sq.clone()
                    .add_scalar(damping_used)
                    .powf_scalar(c.preconditioner_exponent),
            ),
            _ => None,
        };
        let warm_start = self
            .previous
            .take()
            .filter(|_| c.warm_start_decay > 0.0)
            .map(|p| p.mul_scalar(c.warm_start_decay));
        let mut timing = StepTiming::default();
        let clock = std::time::Instant::now();
        let curvature = problem.curvature(params);
        let counted = Counted {
            inner: curvature.as_ref(),
            products: std::cell::Cell::new(0),
        };
        let solved = cg::solve(
            &counted,
            damping_used,
            &gradient.clone().neg(),
            warm_start,
            preconditioner.as_ref(),
            &self.cg_settings(),
        );
        timing.products = counted.products.get();
        drop(curvature);
        timing.cg = clock.elapsed().as_secs_f64();
        self.steps += 1;
        let mut report = StepReport {
            value_before: value,
            value_after: value,
            predicted: 0.0,
            actual: 0.0,
            rho: f64::NAN,
            damping_used,
            damping: self.damping,
            cg_iterations: solved.iterations,
            cg_stop: solved.stop,
            chosen_iteration: 0,
            step_size: 0.0,
            step_norm: 0.0,
            accepted: false,
            converged: false,
            timing,
        };
        let clock = std::time::Instant::now();

        // Backtracking over the iterates CG made (not its starting point), last first.
        let value_at = |p: &Tensor<1>| {
            let v = problem.value(&(params.clone() + p.clone()));
            if v.is_finite() { v } else { f64::INFINITY }
        };
        // Backtracking compares the iterates on the problem's subset where it has one
        // (`on_subset`); the chosen one's value on the whole batch then decides the rest.
        let compare_at =
            |p: &Tensor<1>| match problem.backtracking_value(&(params.clone() + p.clone())) {
                Some(v) if v.is_finite() => (v, true),
                Some(_) => (f64::INFINITY, true),
                None => (value_at(p), false),
            };
        let mut candidates = solved.iterates.iter().filter(|it| it.iteration > 0).rev();
        let mut chosen = candidates.next().map(|it| (it, compare_at(&it.x)));
        if let Some((_, (mut best, _))) = chosen {
            for it in candidates {
                let (v, on_subset) = compare_at(&it.x);
                if v >= best {
                    break;
                }
                best = v;
                chosen = Some((it, (v, on_subset)));
            }
        }
        let (direction, predicted, trial_value, chosen_iteration) = match chosen {
            Some((it, (_, true))) => (it.x.clone(), it.model_value, value_at(&it.x), it.iteration),
            Some((it, (v, false))) => (it.x.clone(), it.model_value, v, it.iteration),
            // CG made no iteration (negative curvature or a non-finite product at once):
            // fall back to the damped gradient step -g / lambda, whose model change (with
            // lambda I alone) is -|g|^2 / (2 lambda).
            None => {
                let p = gradient.clone().neg().div_scalar(damping_used);
                let v = value_at(&p);
                (p, -gradient_norm_sq / (2.0 * damping_used), v, 0)
            }
        };
        report.timing.backtracking = clock.elapsed().as_secs_f64();
        let clock = std::time::Instant::now();
        let actual = trial_value - value;
        let rho = if predicted < 0.0 {
            actual / predicted
        } else {
            f64::NAN
        };

        // A predicted change below what f32 resolves in f makes rho rounding noise, and a
        // step that does not lower f is then no failure. Either the batch's optimum is
        // reached or lambda damps the step to nothing: lowering lambda is right in both.
        let unresolvable =
            trial_value.is_finite() && predicted <= 0.0 && -predicted < RESOLUTION * value.abs();

        // Levenberg-Marquardt damping.
        let raised = !unresolvable && (!rho.is_finite() || rho < c.damping_raise_below);
        if raised {
            self.raise_damping();
        } else if unresolvable || rho > c.damping_lower_above {
            self.damping = (self.damping * c.damping_lower).max(c.min_damping);
        }

        // Armijo line search along the chosen direction.
        let [slope, direction_norm_sq] =
            read(vec![dot(gradient, &direction), dot(&direction, &direction)])[..]
        else {
            unreachable!("two scalars were read")
        };
        let mut accepted = None;
        if slope.is_finite() && slope < 0.0 && direction_norm_sq.is_finite() {
            let mut alpha = 1.0;
            let mut trial = trial_value;
            for _ in 0..c.line_search_max_tries.max(1) {
                if trial <= value + c.armijo_c * alpha * slope {
                    accepted = Some((alpha, trial));
                    break;
                }
                alpha *= c.line_search_shrink;
                trial = value_at(&direction.clone().mul_scalar(alpha));
            }
        }
        report.timing.line_search = clock.elapsed().as_secs_f64();
        report.predicted = predicted;
        report.actual = actual;
        report.rho = rho;
        report.damping = self.damping;
        report.chosen_iteration = chosen_iteration;
        let Some((alpha, new_value)) = accepted else {
            if unresolvable {
                // Converged on this batch to f32's resolution: keep theta and the warm start.
                report.converged = true;
                report.damping = self.damping;
                self.previous = Some(solved.solution);
                return Ok((params.clone(), report));
            }
            // Rejected: keep theta, raise lambda (unless rho already did), forget the warm
            // start that led here.
            if !raised {
                self.raise_damping();
            }
            report.damping = self.damping;
            self.rejected_in_a_row += 1;
            self.rejected_total += 1;
            if self.rejected_in_a_row as usize >= c.max_rejected_steps {
                bail!(
                    "Hessian-free rejected {} steps in a row (no decrease of the objective; \
                     damping now {:.3e}, last rho {rho:.3}); the parameters are those of the \
                     last accepted step. Try a larger optimizer.hessian_free.initial_damping or \
                     curvature_batch_size",
                    self.rejected_in_a_row,
                    self.damping
                );
            }
            return Ok((params.clone(), report));
        };
        self.rejected_in_a_row = 0;
        self.previous = Some(solved.solution);
        report.value_after = new_value;
        report.step_size = alpha;
        report.step_norm = alpha * direction_norm_sq.sqrt();
        report.accepted = true;
        Ok((params.clone() + direction.mul_scalar(alpha), report))
    }

    pub fn state(&self) -> OptimizerState {
        let mut state = OptimizerState::new(KIND);
        state.scalars.insert("damping".into(), self.damping);
        state.scalars.insert("steps".into(), self.steps as f64);
        state
            .scalars
            .insert("rejected_in_a_row".into(), self.rejected_in_a_row as f64);
        state
            .scalars
            .insert("rejected_total".into(), self.rejected_total as f64);
        state.put_vector("previous_solution", &self.previous);
        state
    }

    pub fn load_state(&mut self, state: &OptimizerState, device: &Device) -> Result<()> {
        super::check_kind(state, KIND)?;
        let scalar = |name: &str| -> Result<f64> {
            match state.scalars.get(name) {
                Some(v) if v.is_finite() && *v >= 0.0 => Ok(*v),
                Some(v) => bail!("optimizer state `{name}` = {v} is not a valid count or damping"),
                None => bail!("optimizer state has no `{name}`"),
            }
        };
        self.damping = scalar("damping")?;
        self.steps = scalar("steps")? as u64;
        self.rejected_in_a_row = scalar("rejected_in_a_row")? as u64;
        self.rejected_total = scalar("rejected_total")? as u64;
        self.previous = state.take_vector("previous_solution", self.len, device)?;
        Ok(())
    }
}
