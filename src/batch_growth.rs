//! Batch growth by a variance test: the norm test of Byrd, Chin, Nocedal and Wu (2012,
//! "Sample size selection in optimization methods for machine learning"). A gradient on a
//! batch S is a good enough descent direction while its estimate's variance is small beside
//! its own size,
//!
//! ```text
//! ||Var_i(grad l_i)||_1 / |S|  <=  theta^2 ||grad J_S||^2,
//! ```
//!
//! and where it is not, the batch that would pass is `||Var||_1 / (theta^2 ||grad J_S||^2)`.
//! Per-example gradients would cost a backward pass each; the variance is estimated from the
//! gradients of equal parts (chunks) of one batch: their sample variance is `Var / c` for
//! chunks of c images, so `||Var||_1 ~ c s^2`. With batch norm, each chunk is normalised by
//! its own statistics, a small departure from the batch's function.
//!
//! hftrain takes the test at the end of every epoch on the next epoch's first batch (one
//! gradient of a batch's cost an epoch) and grows the batch of the epochs after as a
//! milestone would: never smaller, at most `max_batch_size` (Byrd et al. test every step; an
//! epoch's batch is fixed here so that its steps, the schedule and resuming stay as they are).

use burn::prelude::*;

use crate::curvature::{Batch, NetworkObjective};
use crate::optim::read_scalars;

/// What one test measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VarianceTest {
    /// The batch the test was taken on.
    pub batch_size: usize,
    /// `||grad J_S||^2` of the regularised objective on the whole batch.
    pub gradient_norm_sq: f64,
    /// `||Var_i(grad l_i)||_1`: the trace of one example's gradient covariance.
    pub variance: f64,
    /// The smallest batch that passes: `variance / (theta^2 gradient_norm_sq)`.
    pub passing_batch_size: usize,
}

impl VarianceTest {
    pub fn passes(&self) -> bool {
        self.passing_batch_size <= self.batch_size
    }

    /// `||Var||_1 / (|S| ||grad J_S||^2)`: the test's ratio, at most `theta^2` to pass.
    pub fn ratio(&self) -> f64 {
        self.variance / (self.batch_size as f64 * self.gradient_norm_sq)
    }
}

/// The norm test on `batch`, from the gradients of its `chunks` equal parts (images left over
/// after the last whole part are not used).
pub fn variance_test(
    objective: &NetworkObjective,
    params: &Tensor<1>,
    batch: &Batch,
    chunks: usize,
    theta: f64,
) -> VarianceTest {
    let chunk = batch.len() / chunks;
    assert!(
        chunks >= 2 && chunk >= 1,
        "{chunks} chunks of {} images",
        batch.len()
    );
    let gradients: Vec<Tensor<1>> = (0..chunks)
        .map(|j| {
            let part = Batch {
                images: batch.images.clone().slice(j * chunk..(j + 1) * chunk),
                labels: batch.labels.clone().slice(j * chunk..(j + 1) * chunk),
            };
            objective.gradient(params, &part, false).gradient
        })
        .collect();
    let mean = gradients
        .iter()
        .cloned()
        .reduce(|a, b| a + b)
        .expect("at least two chunks")
        .div_scalar(chunks as f64);
    // The weight decay's term is the same in every chunk: it leaves the differences.
    let spread = gradients
        .into_iter()
        .map(|g| (g - mean.clone()).powi_scalar(2).sum())
        .reduce(|a, b| a + b)
        .expect("at least two chunks")
        .div_scalar((chunks - 1) as f64);
    let [spread, gradient_norm_sq] = read_scalars([spread, mean.clone().powi_scalar(2).sum()]);
    let variance = spread * chunk as f64;
    let passing = variance / (theta * theta * gradient_norm_sq);
    VarianceTest {
        batch_size: chunk * chunks,
        gradient_norm_sq,
        variance,
        passing_batch_size: match passing.is_finite() {
            true => passing.ceil() as usize,
            false => usize::MAX,
        },
    }
}

/// The next epochs' batch after a test on a batch of `current`: unchanged where it passed,
/// else the passing size, at most `max_batch_size` and never smaller than `current`.
pub fn grown_batch_size(test: &VarianceTest, current: usize, max_batch_size: usize) -> usize {
    match test.passes() {
        true => current,
        false => test.passing_batch_size.min(max_batch_size).max(current),
    }
}
