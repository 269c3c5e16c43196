//! Truncated preconditioned conjugate gradient for `(C + lambda I) x = b` over flat
//! parameter-space tensors, as Hessian-free optimisation uses it (Martens 2010).
//!
//! Every vector stays on the device; each iteration reads back two small batches of
//! scalars (the curvature along the search direction, then the residual norm and the model
//! value together). CG minimises the quadratic model `phi(x) = x^T A x / 2 - b^T x`, and it
//! stops on Martens' relative-progress rule, an iteration cap, or negative curvature (with
//! the true Hessian, `p^T A p <= 0`: the model has no minimum along `p`, so CG keeps the last
//! iterate instead of dividing by it).

use burn::prelude::*;

use super::{dot, read_scalars};

/// A symmetric linear map on flat parameter vectors: a curvature product.
pub trait LinearOperator {
    fn apply(&self, v: &Tensor<1>) -> Tensor<1>;
}

/// `M^-1 r` for a symmetric positive definite `M` close to CG's system matrix: CG then works
/// on the better-conditioned `M^-1 A` (fewer iterations for the same residual).
pub trait Preconditioner {
    fn apply(&self, r: &Tensor<1>) -> Tensor<1>;
}

/// A diagonal `M`, its entries in a vector (Martens' preconditioner).
pub struct Diagonal(pub Tensor<1>);

impl Preconditioner for Diagonal {
    fn apply(&self, r: &Tensor<1>) -> Tensor<1> {
        r.clone() / self.0.clone()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CgSettings {
    pub max_iterations: usize,
    /// Martens' rule: stop at iteration i once `i > k` and
    /// `(phi_i - phi_{i-k}) / phi_i < k * tolerance`, with `k = max(10, 0.1 i)`.
    pub tolerance: f64,
    /// Keep the iterates at iterations ceil(g^j) (and the last) for backtracking.
    pub keep_growth: f64,
    /// Stop as converged once the (preconditioned) residual norm falls below this fraction
    /// of its start.
    pub residual_tolerance: f64,
}

impl Default for CgSettings {
    fn default() -> Self {
        Self {
            max_iterations: 50,
            tolerance: 5e-4,
            keep_growth: 1.3,
            residual_tolerance: 1e-6,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgStop {
    /// Martens' relative-progress rule.
    Progress,
    MaxIterations,
    /// `p^T A p <= 0` (or not finite): the previous iterate is kept.
    NegativeCurvature,
    /// The residual fell below `residual_tolerance` of its start: the system is solved.
    Converged,
    /// A non-finite scalar appeared (curvature product overflow, NaN input).
    NonFinite,
}

impl CgStop {
    pub fn label(self) -> &'static str {
        match self {
            CgStop::Progress => "progress",
            CgStop::MaxIterations => "max-iterations",
            CgStop::NegativeCurvature => "negative-curvature",
            CgStop::Converged => "converged",
            CgStop::NonFinite => "non-finite",
        }
    }

    /// The stop a `label` names.
    pub fn from_label(label: &str) -> Option<Self> {
        [
            CgStop::Progress,
            CgStop::MaxIterations,
            CgStop::NegativeCurvature,
            CgStop::Converged,
            CgStop::NonFinite,
        ]
        .into_iter()
        .find(|stop| stop.label() == label)
    }
}

/// A kept CG iterate.
#[derive(Debug, Clone)]
pub struct Iterate {
    /// Iterations done when it was kept (0: the starting point).
    pub iteration: usize,
    pub x: Tensor<1>,
    /// The quadratic model's value `phi(x)` there (damped: A includes lambda I).
    pub model_value: f64,
}

#[derive(Debug, Clone)]
pub struct CgResult {
    /// The final iterate.
    pub solution: Tensor<1>,
    pub model_value: f64,
    pub iterations: usize,
    pub stop: CgStop,
    /// Kept iterates in increasing iteration order; the last is `solution`.
    pub iterates: Vec<Iterate>,
    /// `phi` after each iteration, starting with the starting point's.
    pub model_values: Vec<f64>,
}

/// Martens' relative-progress rule on the model values `history` (the starting point's
/// first): stop at iteration i once `i > k` and `(phi_i - phi_{i-k}) / phi_i < k * tolerance`,
/// with `k = max(10, i / 10)`: the last k iterations gained too little of the model's value.
fn martens_progress_stop(history: &[f64], tolerance: f64) -> bool {
    let i = history.len() - 1;
    let k = 10usize.max(i / 10);
    let phi = history[i];
    i > k && phi < 0.0 && (phi - history[i - k]) / phi < k as f64 * tolerance
}

/// The iteration after `kept` whose iterate is kept for backtracking: ceil(kept * growth),
/// at least the next one.
fn next_kept_iteration(kept: usize, growth: f64) -> usize {
    ((kept as f64) * growth).ceil().max(kept as f64 + 1.0) as usize
}

/// Solves `(C + damping I) x = b` approximately. `x0` is the warm start (zero if None),
/// `preconditioner` the `M` CG then works with (as `M^-1 r`).
pub fn solve(
    curvature: &dyn LinearOperator,
    damping: f64,
    b: &Tensor<1>,
    x0: Option<Tensor<1>>,
    preconditioner: Option<&dyn Preconditioner>,
    settings: &CgSettings,
) -> CgResult {
    let system = System {
        curvature,
        damping,
        b,
        preconditioner,
    };
    let (x, r) = match x0 {
        Some(x0) => {
            let r = b.clone() - system.apply(&x0);
            (x0, r)
        }
        None => (b.zeros_like(), b.clone()),
    };
    let y = system.precondition(&r);
    let [ry, phi] = read_scalars([dot(&r, &y), system.model(&x, &r)]);
    // Converged: the residual small against the right-hand side (not against the warm
    // start's residual, which may already be tiny).
    let [b_norm_sq] = read_scalars([dot(b, &system.precondition(b))]);
    let converged_below = b_norm_sq * settings.residual_tolerance.powi(2);
    let mut trace = Trace::start(&x, phi);
    let (x, phi, stop) = if !(ry.is_finite() && phi.is_finite()) {
        (x, phi, CgStop::NonFinite)
    } else if ry <= converged_below {
        (x, phi, CgStop::Converged)
    } else {
        let start = Search {
            x,
            r,
            p: y,
            ry,
            phi,
        };
        iterate(&system, settings, converged_below, start, &mut trace)
    };
    trace.finish(x, phi, stop)
}

/// The damped, preconditioned system `(C + damping I) x = b` CG works on.
struct System<'a> {
    curvature: &'a dyn LinearOperator,
    damping: f64,
    b: &'a Tensor<1>,
    preconditioner: Option<&'a dyn Preconditioner>,
}

impl System<'_> {
    /// `A v = (C + damping I) v`.
    fn apply(&self, v: &Tensor<1>) -> Tensor<1> {
        self.curvature.apply(v) + v.clone().mul_scalar(self.damping)
    }

    /// `M^-1 r`.
    fn precondition(&self, r: &Tensor<1>) -> Tensor<1> {
        match self.preconditioner {
            Some(m) => m.apply(r),
            None => r.clone(),
        }
    }

    /// `phi(x) = -x^T (b + r) / 2`, since `A x = b - r`.
    fn model(&self, x: &Tensor<1>, r: &Tensor<1>) -> Tensor<1> {
        dot(x, &(self.b.clone() + r.clone())).mul_scalar(-0.5)
    }
}

/// Where CG stands: the iterate `x`, its residual `r = b - A x`, the search direction `p`,
/// `r^T M^-1 r` and the model's value at `x`.
struct Search {
    x: Tensor<1>,
    r: Tensor<1>,
    p: Tensor<1>,
    ry: f64,
    phi: f64,
}

/// CG's iterations from `start` until a stopping rule holds; the last iterate, its model
/// value, and the rule.
fn iterate(
    system: &System,
    settings: &CgSettings,
    converged_below: f64,
    start: Search,
    trace: &mut Trace,
) -> (Tensor<1>, f64, CgStop) {
    let Search {
        mut x,
        mut r,
        mut p,
        mut ry,
        mut phi,
    } = start;
    while trace.iterations < settings.max_iterations {
        let ap = system.apply(&p);
        let [pap] = read_scalars([dot(&p, &ap)]);
        if !pap.is_finite() {
            return (x, phi, CgStop::NonFinite);
        }
        if pap <= 0.0 {
            return (x, phi, CgStop::NegativeCurvature);
        }
        let alpha = ry / pap;
        let x_next = x.clone() + p.clone().mul_scalar(alpha);
        let r_next = r.clone() - ap.mul_scalar(alpha);
        let y_next = system.precondition(&r_next);
        let [ry_next, phi_next] =
            read_scalars([dot(&r_next, &y_next), system.model(&x_next, &r_next)]);
        if !(ry_next.is_finite() && phi_next.is_finite()) {
            return (x, phi, CgStop::NonFinite);
        }
        (x, r, phi) = (x_next, r_next, phi_next);
        trace.record(&x, phi, settings.keep_growth);
        if ry_next <= converged_below {
            return (x, phi, CgStop::Converged);
        }
        if martens_progress_stop(&trace.history, settings.tolerance) {
            return (x, phi, CgStop::Progress);
        }
        p = y_next + p.mul_scalar(ry_next / ry);
        ry = ry_next;
    }
    (x, phi, CgStop::MaxIterations)
}

/// What a solve leaves behind besides its solution: the model value after each iteration
/// and the iterates kept for backtracking.
struct Trace {
    iterations: usize,
    history: Vec<f64>,
    iterates: Vec<Iterate>,
    /// The iteration whose iterate is kept next.
    next_keep: usize,
}

impl Trace {
    fn start(x: &Tensor<1>, phi: f64) -> Self {
        Self {
            iterations: 0,
            history: vec![phi],
            iterates: vec![Iterate {
                iteration: 0,
                x: x.clone(),
                model_value: phi,
            }],
            next_keep: 1,
        }
    }

    /// One more iteration, ending at `x` with model value `phi`.
    fn record(&mut self, x: &Tensor<1>, phi: f64, keep_growth: f64) {
        self.iterations += 1;
        self.history.push(phi);
        if self.iterations >= self.next_keep {
            self.iterates.push(Iterate {
                iteration: self.iterations,
                x: x.clone(),
                model_value: phi,
            });
            self.next_keep = next_kept_iteration(self.next_keep, keep_growth);
        }
    }

    /// The result, the final iterate kept last.
    fn finish(mut self, x: Tensor<1>, phi: f64, stop: CgStop) -> CgResult {
        if self
            .iterates
            .last()
            .is_none_or(|last| last.iteration != self.iterations)
        {
            self.iterates.push(Iterate {
                iteration: self.iterations,
                x: x.clone(),
                model_value: phi,
            });
        }
        CgResult {
            solution: x,
            model_value: phi,
            iterations: self.iterations,
            stop,
            iterates: self.iterates,
            model_values: self.history,
        }
    }
}
