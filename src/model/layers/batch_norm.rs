//! Batch normalisation over channels: `"batch-norm"`. Scale (`weight`) and shift (`bias`) per
//! channel, and the running mean and variance as buffers, under PyTorch's names. Training
//! mode normalises with the batch's statistics and reports them for the running update;
//! evaluation mode uses the running ones.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::module::{batch_norm, batch_norm_train};

use crate::model::builder::{Builder, Init};
use crate::model::layer::{
    BatchStats, Gradients, Layer, Mode, Pass, Recorded, Shape, channel_mean, channel_sum,
    per_channel,
};
use crate::model::spec::LayerSpec;

pub const USAGE: &str = "batch-norm";

pub const EPSILON: f64 = 1e-5;

#[derive(Debug, Clone, Copy)]
pub struct BatchNorm {
    gamma: usize,
    beta: usize,
    running_mean: usize,
    running_var: usize,
    channels: usize,
}

pub fn build(
    spec: &mut LayerSpec,
    input: Shape,
    b: &mut Builder,
) -> Result<(Arc<dyn Layer>, Shape), String> {
    spec.finish(USAGE)?;
    let c = input.channels;
    let layer = BatchNorm {
        gamma: b.param("weight", &[c], false, Init::Constant(1.0)),
        beta: b.param("bias", &[c], false, Init::Constant(0.0)),
        running_mean: b.buffer("running_mean", &[c], Init::Constant(0.0)),
        running_var: b.buffer("running_var", &[c], Init::Constant(1.0)),
        channels: c,
    };
    Ok((Arc::new(layer), input))
}

/// The dtype batch norm computes in: f32 for a half-precision input (`train.precision`), as
/// cuDNN's batch norm does: its statistics are sums over every position of a channel, and
/// normalising subtracts nearly equal numbers.
fn compute_dtype(input: DType) -> DType {
    match input {
        DType::BF16 | DType::F16 => DType::F32,
        other => other,
    }
}

impl BatchNorm {
    fn stats(&self, mean: Tensor<1>, variance: Tensor<1>, input: &Tensor<4>) -> BatchStats {
        let [n, _, h, w] = input.dims();
        BatchStats {
            running_mean: self.running_mean,
            running_var: self.running_var,
            mean,
            variance,
            count: n * h * w,
        }
    }
}

impl Layer for BatchNorm {
    fn describe(&self) -> String {
        format!("batch norm {}", self.channels)
    }

    fn forward(&self, x: Tensor<4>, pass: &mut Pass) -> Tensor<4> {
        let io = x.dtype();
        let wide = compute_dtype(io);
        let x = x.cast(wide);
        let (g, b) = (
            pass.params[self.gamma].clone().cast(wide),
            pass.params[self.beta].clone().cast(wide),
        );
        let y = match pass.mode {
            Mode::Train => {
                let out = batch_norm_train(x.clone(), g, b, EPSILON);
                pass.stats.push(self.stats(out.mean, out.variance, &x));
                out.output
            }
            Mode::Eval => batch_norm(
                x,
                g,
                b,
                pass.buffers[self.running_mean].clone().cast(wide),
                pass.buffers[self.running_var].clone().cast(wide),
                EPSILON,
            ),
        };
        y.cast(io)
    }

    fn record(&self, x: Tensor<4>, params: &[Tensor<1>]) -> (Tensor<4>, Box<dyn Recorded>) {
        // Written out in differentiable ops (Burn's fused batch norm cannot be differentiated
        // a second time).
        let io = x.dtype();
        let x = x.cast(compute_dtype(io));
        let mean = channel_mean(x.clone());
        let centered = x.clone() - mean.clone();
        let variance = channel_mean(centered.clone().powi_scalar(2));
        let inv_std = variance.clone().add_scalar(EPSILON).sqrt().recip();
        let normalized = centered * inv_std.clone();
        let wide = x.dtype();
        let y = normalized.clone() * per_channel(params[self.gamma].clone().cast(wide))
            + per_channel(params[self.beta].clone().cast(wide));
        let c = self.channels;
        let stats = self.stats(mean.reshape([c]), variance.reshape([c]), &x);
        let record = BatchNormRecord {
            layer: *self,
            normalized,
            inv_std,
            stats,
            io,
        };
        (y.cast(io), Box::new(record))
    }
}

struct BatchNormRecord {
    layer: BatchNorm,
    /// `(x - mean) * inv_std`, `[n, c, h, w]`.
    normalized: Tensor<4>,
    /// `1 / sqrt(var + eps)`, `[1, c, 1, 1]`.
    inv_std: Tensor<4>,
    stats: BatchStats,
    /// The dtype of the layer's input and output (the record's tensors are in
    /// `compute_dtype(io)`).
    io: DType,
}

impl BatchNormRecord {
    /// `t` in the dtype the record's tensors are in.
    fn wide<const D: usize>(&self, t: Tensor<D>) -> Tensor<D> {
        t.cast(self.normalized.dtype())
    }

    /// How the normalised input moves with the input: the batch statistics move too.
    /// `inv_std * (d - mean(d) - x_hat * mean(x_hat * d))`, means per channel.
    fn normalized_change(&self, d: Tensor<4>) -> Tensor<4> {
        let mean_d = channel_mean(d.clone());
        let mean_xhat_d = channel_mean(self.normalized.clone() * d.clone());
        (d - mean_d - self.normalized.clone() * mean_xhat_d) * self.inv_std.clone()
    }
}

impl Recorded for BatchNormRecord {
    fn vjp(
        &self,
        params: &[Tensor<1>],
        dy: Tensor<4>,
        grads: &mut Gradients,
        need_input: bool,
    ) -> Option<Tensor<4>> {
        let l = &self.layer;
        // The parameters' gradients stay in the dtype batch norm computes in (f32 under half
        // precision, as autocast keeps batch norm's parameters: each is a sum over every
        // position of a channel, which f16's range would cap).
        let dy = self.wide(dy);
        grads.put(l.gamma, channel_sum(dy.clone() * self.normalized.clone()));
        grads.put(l.beta, channel_sum(dy.clone()));
        if grads.wants_squares() {
            let dy2 = dy.clone().powi_scalar(2);
            let xhat2 = self.normalized.clone().powi_scalar(2);
            grads.put_square(l.gamma, channel_sum(dy2.clone() * xhat2));
            grads.put_square(l.beta, channel_sum(dy2));
        }
        // The map from x to x_hat is self-adjoint, so its vjp is the same expression.
        need_input.then(|| {
            let gamma = per_channel(self.wide(params[l.gamma].clone()));
            (self.normalized_change(dy) * gamma).cast(self.io)
        })
    }

    fn jvp(
        &self,
        params: &[Tensor<1>],
        tangents: &[Tensor<1>],
        dx: Option<Tensor<4>>,
    ) -> Option<Tensor<4>> {
        let l = &self.layer;
        let from_params = self.normalized.clone()
            * per_channel(self.wide(tangents[l.gamma].clone()))
            + per_channel(self.wide(tangents[l.beta].clone()));
        let from_input = dx.map(|dx| {
            self.normalized_change(self.wide(dx)) * per_channel(self.wide(params[l.gamma].clone()))
        });
        crate::model::layer::add_tangents(Some(from_params), from_input).map(|t| t.cast(self.io))
    }

    fn batch_stats(&self, stats: &mut Vec<BatchStats>) {
        stats.push(self.stats.clone());
    }
}
