//! The softmax cross-entropy loss, its gradient with respect to the logits, and the product
//! with its Hessian with respect to the logits (the `H_L` of the Gauss-Newton matrix).

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

/// Mean softmax cross-entropy with optional label smoothing, as a one-element tensor.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>, smoothing: f32) -> Tensor<1> {
    let [n, classes] = logits.dims();
    let log_p = log_softmax(logits, 1);
    let picked = log_p.clone().gather(1, labels.reshape([n, 1]));
    let nll = picked.neg().mean();
    if smoothing == 0.0 {
        return nll;
    }
    let uniform = log_p.neg().sum_dim(1).mean().div_scalar(classes as f64);
    // Scalars in f64: on an f64 device, f32 arithmetic on them would show up at 1e-9.
    let s = smoothing as f64;
    nll.mul_scalar(1.0 - s) + uniform.mul_scalar(s)
}

/// The smoothed one-hot targets: `(1 - s) onehot + s / classes`.
fn targets(labels: Tensor<1, Int>, classes: usize, smoothing: f32) -> Tensor<2> {
    let one_hot: Tensor<2> = labels.one_hot::<2>(classes).float();
    if smoothing == 0.0 {
        one_hot
    } else {
        let s = smoothing as f64;
        one_hot.mul_scalar(1.0 - s).add_scalar(s / classes as f64)
    }
}

/// Gradient of the mean cross-entropy with respect to the logits: `(softmax - target) / n`.
pub fn cross_entropy_gradient(
    logits: Tensor<2>,
    labels: Tensor<1, Int>,
    smoothing: f32,
) -> Tensor<2> {
    let [n, classes] = logits.dims();
    (softmax(logits, 1) - targets(labels, classes, smoothing)).div_scalar(n as f32)
}

/// `H_L u` for the mean cross-entropy, per example `(diag(p) - p p^T) u / n`, where
/// `probabilities` is the softmax of the logits. Label smoothing does not change it.
pub fn cross_entropy_hessian_product(probabilities: &Tensor<2>, u: Tensor<2>) -> Tensor<2> {
    let n = u.dims()[0];
    let p = probabilities.clone();
    let pu = (p.clone() * u.clone()).sum_dim(1);
    (p.clone() * u - p * pu).div_scalar(n as f32)
}

/// Number of correct top-1 predictions, as a one-element Int tensor.
pub fn correct_count(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1, Int> {
    let [n, _] = logits.dims();
    logits.argmax(1).reshape([n]).equal(labels).int().sum()
}
