//! Batch-norm running statistics that match the weights. The running averages follow the
//! batches of past steps, so after few, large steps (Hessian-free's) they describe weights
//! that are gone, and the test loss shows it. Before each end-of-epoch evaluation and
//! checkpoint they are recomputed with the current weights: each layer's running mean and
//! variance become the average over a few training batches of the batch mean and unbiased
//! variance (as SWA's `bn_update` and the fast CIFAR-10 recipes do). The parameters are not
//! touched: training uses batch statistics.

use burn::prelude::*;

use crate::data::Dataset;
use crate::data::batcher::{EpochPlan, HostBatch, Transform};
use crate::model::{Mode, Network};

/// The buffers with every batch norm layer's running statistics set to the average, over
/// `batches`, of the statistics of a training-mode pass on each (unbiased variance, as the
/// running update keeps).
pub fn average_over(
    network: &Network,
    params: &Tensor<1>,
    buffers: Tensor<1>,
    batches: impl IntoIterator<Item = Tensor<4>>,
) -> Tensor<1> {
    let param_parts = network.params.split(params);
    let mut parts = network.buffers.split(&buffers);
    let mut sums: Vec<(usize, usize, Tensor<1>, Tensor<1>)> = Vec::new();
    let mut count = 0;
    for images in batches {
        let stats = network
            .forward(images, &param_parts, &parts, Mode::Train)
            .stats;
        for (i, s) in stats.into_iter().enumerate() {
            let unbiased = s.count as f64 / (s.count.max(2) - 1) as f64;
            let variance = s.variance.mul_scalar(unbiased);
            match sums.get_mut(i) {
                Some((_, _, mean, var)) => {
                    *mean = mean.clone() + s.mean;
                    *var = var.clone() + variance;
                }
                None => sums.push((s.running_mean, s.running_var, s.mean, variance)),
            }
        }
        count += 1;
    }
    if count == 0 {
        return buffers;
    }
    for (running_mean, running_var, mean, var) in sums {
        parts[running_mean] = mean.div_scalar(count as f64);
        parts[running_var] = var.div_scalar(count as f64);
    }
    network.buffers.join(parts)
}

/// `average_over` the first `batches` batches of `plan` (the order of the epoch just
/// trained), without augmentation (`transform` is the evaluation one).
#[allow(clippy::too_many_arguments)]
pub fn recompute(
    network: &Network,
    params: &Tensor<1>,
    buffers: Tensor<1>,
    train: &Dataset,
    plan: &EpochPlan,
    batches: usize,
    transform: &Transform,
    device: &Device,
) -> Tensor<1> {
    if batches == 0 || network.buffers.total() == 0 {
        return buffers;
    }
    let images = (0..batches.min(plan.steps())).map(|step| {
        HostBatch::assemble(train, plan.batch_indices(step), transform, None)
            .to_device(device)
            .0
    });
    average_over(network, params, buffers, images)
}
