//! The trace of a symmetric operator by Hutchinson's estimator: the mean of `z^T C z` over
//! random vectors `z` with independent Rademacher (+1/-1) entries, an unbiased estimate
//! whose variance `2 (|C|_F^2 - sum_i C_ii^2)` is the smallest of its kind; its standard
//! error is the samples' standard deviation over the square root of their number.

use burn::prelude::*;

use super::lanczos::read;
use crate::optim::cg::LinearOperator;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TraceEstimate {
    pub estimate: f64,
    /// Standard deviation of the samples over sqrt(samples); 0 for a single sample.
    pub standard_error: f64,
    /// Each `z^T C z`.
    pub samples: Vec<f64>,
}

/// Mean and standard error of the mean (sample standard deviation / sqrt(n)).
pub fn mean_and_standard_error(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (variance / n).sqrt())
}

/// Hutchinson's estimate of `trace(C)` from `samples` vectors `probe(i)` (Rademacher
/// vectors, masked to a block for the trace of a diagonal block).
pub fn hutchinson(
    op: &dyn LinearOperator,
    samples: usize,
    mut probe: impl FnMut(usize) -> Tensor<1>,
) -> TraceEstimate {
    let values: Vec<f64> = (0..samples)
        .map(|i| {
            let z = probe(i);
            read(vec![(op.apply(&z) * z).sum()])[0]
        })
        .collect();
    let (estimate, standard_error) = mean_and_standard_error(&values);
    TraceEstimate {
        estimate,
        standard_error,
        samples: values,
    }
}
