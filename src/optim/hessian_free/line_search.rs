//! The Armijo line search along a chosen direction p: the first step length alpha in
//! 1, s, s^2, ... (s = `line_search_shrink`) with `f(theta + alpha p) <= f0 + c alpha g.p`.

/// The accepted step length and the objective there, or None when no tried length gives a
/// sufficient decrease (or `slope`, the directional derivative g.p, is not a descent).
/// `value_at_one` is f at alpha = 1, already known to the caller; `value_at(alpha)` computes
/// the others.
pub fn armijo(
    value: f64,
    slope: f64,
    value_at_one: f64,
    c: f64,
    shrink: f64,
    max_tries: usize,
    mut value_at: impl FnMut(f64) -> f64,
) -> Option<(f64, f64)> {
    if !slope.is_finite() || slope >= 0.0 {
        return None;
    }
    let mut alpha = 1.0;
    let mut trial = value_at_one;
    for _ in 0..max_tries.max(1) {
        if trial <= value + c * alpha * slope {
            return Some((alpha, trial));
        }
        alpha *= shrink;
        trial = value_at(alpha);
    }
    None
}
