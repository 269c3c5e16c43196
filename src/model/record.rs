//! The recorded forward pass: each layer's output plus what its `vjp` and `jvp` need later
//! (its input, batch norm's normalised input and inverse standard deviation, max-pooling's
//! argmax indices).
//!
//! It always uses batch statistics (training mode): curvature products are taken on the
//! function the optimizer minimises, and they must never touch the running statistics.
//! Everything here is ordinary differentiable Burn ops, so when the parameters are autodiff
//! leaves the whole record (and the vjp chain built on it) is a tracked expression that Burn
//! can differentiate once more: that is the double backprop of the Hessian-vector product.

use burn::prelude::*;
use burn::tensor::module::max_pool2d_with_indices;
use burn::tensor::ops::MaxPoolOptions;

use super::layers::{Activation, BN_EPSILON, Layer};

/// What one layer's forward pass keeps.
#[derive(Debug, Clone)]
pub struct LayerRecord {
    /// The layer's input.
    pub input: Activation,
    pub aux: Aux,
}

// One per layer of a recorded forward pass: the size of the small variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Aux {
    None,
    BatchNorm {
        /// `(x - mean) * inv_std`, `[n, c, h, w]`.
        normalized: Tensor<4>,
        /// `1 / sqrt(var + eps)`, `[1, c, 1, 1]`.
        inv_std: Tensor<4>,
        /// Batch mean and biased variance, `[c]` (for the running-statistics update).
        mean: Tensor<1>,
        variance: Tensor<1>,
    },
    /// Flat argmax positions within each `h * w` plane, `[n, c, oh, ow]`.
    MaxPool {
        indices: Tensor<4, Int>,
    },
}

/// Per-channel mean of a feature map, kept as `[1, c, 1, 1]` for broadcasting.
pub fn channel_mean(x: Tensor<4>) -> Tensor<4> {
    x.mean_dims(&[0, 2, 3])
}

/// Per-channel sum of a feature map, as `[c]`.
pub fn channel_sum(x: Tensor<4>) -> Tensor<1> {
    let c = x.dims()[1];
    x.sum_dims(&[0, 2, 3]).reshape([c])
}

/// A `[c]` vector as `[1, c, 1, 1]`.
pub fn per_channel(v: Tensor<1>) -> Tensor<4> {
    let c = v.dims()[0];
    v.reshape([1, c, 1, 1])
}

/// Pooling windows of a max-pooling layer for an input of `side_h x side_w`.
pub fn pool_options(layer: &Layer, h: usize, w: usize) -> MaxPoolOptions<2> {
    match layer {
        Layer::MaxPool => MaxPoolOptions::new([2, 2]).with_stride([2, 2]),
        Layer::GlobalMaxPool => MaxPoolOptions::new([h, w]).with_stride([h, w]),
        other => unreachable!("{} is not a max-pooling layer", other.describe()),
    }
}

impl Layer {
    /// Training-mode forward pass that keeps what `vjp` and `jvp` need.
    pub fn forward_recorded(
        &self,
        x: Activation,
        params: &[Tensor<1>],
    ) -> (Activation, LayerRecord) {
        let mut aux = Aux::None;
        let output = match *self {
            Layer::BatchNorm { gamma, beta, .. } => {
                let input = x.clone().map();
                let mean = channel_mean(input.clone());
                let centered = input - mean.clone();
                let variance = channel_mean(centered.clone().powi_scalar(2));
                let inv_std = variance.clone().add_scalar(BN_EPSILON).sqrt().recip();
                let normalized = centered * inv_std.clone();
                let out = normalized.clone() * per_channel(params[gamma].clone())
                    + per_channel(params[beta].clone());
                let c = mean.dims()[1];
                aux = Aux::BatchNorm {
                    normalized,
                    inv_std,
                    mean: mean.reshape([c]),
                    variance: variance.reshape([c]),
                };
                Activation::Map(out)
            }
            Layer::MaxPool | Layer::GlobalMaxPool => {
                let input = x.clone().map();
                let [n, c, h, w] = input.dims();
                let (pooled, indices) = max_pool2d_with_indices(input, pool_options(self, h, w));
                aux = Aux::MaxPool { indices };
                if *self == Layer::GlobalMaxPool {
                    Activation::Flat(pooled.reshape([n, c]))
                } else {
                    Activation::Map(pooled)
                }
            }
            // The other layers need nothing beyond their input (kept below): their plain
            // forward pass serves.
            _ => self.forward(x.clone(), params, &[], super::Mode::Train, &mut Vec::new()),
        };
        (output, LayerRecord { input: x, aux })
    }
}
