//! Backtracking over CG's iterates (Martens 2010, section 4.6): later iterates fit the
//! curvature sub-batch ever more closely and may overfit it, so from the last kept iterate
//! back, an earlier one is taken while it has the lower objective.

use crate::optim::cg::Iterate;

/// The chosen iterate and its objective as `value_at` gave it. The starting point
/// (iteration 0) is never a candidate; None when CG kept no other iterate.
pub fn choose(
    iterates: &[Iterate],
    mut value_at: impl FnMut(&Iterate) -> f64,
) -> Option<(&Iterate, f64)> {
    let mut candidates = iterates.iter().filter(|it| it.iteration > 0).rev();
    let last = candidates.next()?;
    let mut chosen = (last, value_at(last));
    for earlier in candidates {
        let value = value_at(earlier);
        if value >= chosen.1 {
            break;
        }
        chosen = (earlier, value);
    }
    Some(chosen)
}
