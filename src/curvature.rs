//! What an optimizer may ask of the model on a batch: the loss and the gradient (and, with
//! the Hessian-free optimizer, curvature products). Optimizers see the network only through
//! this module, so SGD, Adam and Hessian-free share one training loop.

use burn::prelude::*;

use crate::model::{BatchStats, Mode, Network, correct_count, cross_entropy};

/// One batch's loss and gradient, with what the training loop reports and updates.
pub struct LossAndGradient {
    /// Mean loss of the batch (one element, no autodiff).
    pub loss: Tensor<1>,
    /// Flat gradient of the loss with respect to the flat parameters (no autodiff).
    pub gradient: Tensor<1>,
    /// Correct top-1 predictions in the batch (one element).
    pub correct: Tensor<1, Int>,
    /// Batch-norm statistics, for the running-statistics update.
    pub stats: Vec<BatchStats>,
}

/// Loss and gradient by Burn's autodiff (the first-order path).
///
/// Each parameter tensor is sliced from the flat vector *before* it is marked as a leaf, so
/// the backward pass writes each gradient into its own tensor instead of scattering every
/// slice's gradient into a zero vector of the full length.
pub fn loss_and_gradient(
    network: &Network,
    params: &Tensor<1>,
    buffers: &Tensor<1>,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    label_smoothing: f32,
) -> LossAndGradient {
    let leaves: Vec<Tensor<1>> = network
        .params
        .split(params)
        .into_iter()
        .map(|p| p.autodiff().require_grad())
        .collect();
    let buffer_parts = network.buffers.split(buffers);
    let out = network.forward(images, &leaves, &buffer_parts, Mode::Train);
    let correct = correct_count(out.logits.clone().detach().inner(), labels.clone());
    let loss = cross_entropy(out.logits, labels, label_smoothing);
    let grads = loss.backward();
    let parts = leaves
        .iter()
        .map(|leaf| {
            leaf.grad(&grads)
                .unwrap_or_else(|| leaf.clone().inner().zeros_like())
        })
        .collect();
    LossAndGradient {
        loss: loss.detach().inner(),
        gradient: network.params.join(parts),
        correct,
        stats: out.stats,
    }
}
