//! The layers of the network, each a small value that knows its parameters' places in the
//! flat layout and how to run forward.
//!
//! The project owns its layers instead of using `burn::nn` modules because the Hessian-free
//! optimizer needs each layer's backward (`vjp`) and forward tangent (`jvp`) written with
//! differentiable Burn ops (Burn has first-order autodiff only; see DESIGN.md). Those live
//! beside `forward` here.

use burn::prelude::*;
use burn::tensor::module::{avg_pool2d, batch_norm, batch_norm_train, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};

/// An activation between layers: a feature map `[n, c, h, w]` or a matrix `[n, features]`.
#[derive(Debug, Clone)]
pub enum Activation {
    Map(Tensor<4>),
    Flat(Tensor<2>),
}

impl Activation {
    pub fn map(self) -> Tensor<4> {
        match self {
            Activation::Map(x) => x,
            Activation::Flat(_) => panic!("layer expected a feature map, got a matrix"),
        }
    }

    pub fn flat(self) -> Tensor<2> {
        match self {
            Activation::Flat(x) => x,
            Activation::Map(_) => panic!("layer expected a matrix, got a feature map"),
        }
    }
}

/// Whether batch norm normalises with the batch's statistics (training) or the running ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// The batch statistics a training forward pass saw, for the running-statistics update.
#[derive(Debug, Clone)]
pub struct BatchStats {
    /// Indices of the layer's running mean and variance in the buffer layout.
    pub running_mean: usize,
    pub running_var: usize,
    pub mean: Tensor<1>,
    /// Biased (population) variance of the batch.
    pub variance: Tensor<1>,
    /// Values per channel the statistics were taken over (for the unbiased correction).
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// 3x3 convolution, stride 1, padding 1. Weight `[out, in, 3, 3]`.
    Conv {
        weight: usize,
        bias: Option<usize>,
        in_channels: usize,
        out_channels: usize,
    },
    /// Batch normalisation over channels. `running_mean`/`running_var` index the buffers.
    BatchNorm {
        gamma: usize,
        beta: usize,
        running_mean: usize,
        running_var: usize,
        channels: usize,
    },
    Relu,
    /// 2x2 max-pooling, stride 2.
    MaxPool,
    /// Max over all positions, `[n, c, h, w] -> [n, c]`.
    GlobalMaxPool,
    /// Mean over all positions, `[n, c, h, w] -> [n, c]`.
    GlobalAvgPool,
    /// `[n, c, h, w] -> [n, c*h*w]`.
    Flatten,
    /// `y = x W^T + b`, weight `[out, in]` as in PyTorch.
    Linear {
        weight: usize,
        bias: usize,
        in_features: usize,
        out_features: usize,
    },
    /// Multiplies by a constant (the logit scale).
    Scale(f32),
}

pub const BN_EPSILON: f64 = 1e-5;

pub(crate) fn conv_options() -> ConvOptions<2> {
    ConvOptions::new([1, 1], [1, 1], [1, 1], 1)
}

pub(crate) fn reshape<const D: usize>(flat: &Tensor<1>, shape: [usize; D]) -> Tensor<D> {
    flat.clone().reshape(shape)
}

impl Layer {
    /// Runs the layer. `params` and `buffers` are the split flat vectors (one 1-D tensor per
    /// layout entry). In training mode, batch norm layers push their batch statistics to
    /// `stats`.
    pub fn forward(
        &self,
        x: Activation,
        params: &[Tensor<1>],
        buffers: &[Tensor<1>],
        mode: Mode,
        stats: &mut Vec<BatchStats>,
    ) -> Activation {
        match *self {
            Layer::Conv {
                weight,
                bias,
                in_channels,
                out_channels,
            } => {
                let w = reshape(&params[weight], [out_channels, in_channels, 3, 3]);
                let b = bias.map(|b| params[b].clone());
                Activation::Map(conv2d(x.map(), w, b, conv_options()))
            }
            Layer::BatchNorm {
                gamma,
                beta,
                running_mean,
                running_var,
                ..
            } => {
                let x = x.map();
                let (g, b) = (params[gamma].clone(), params[beta].clone());
                match mode {
                    Mode::Train => {
                        let [n, _, h, w] = x.dims();
                        let out = batch_norm_train(x, g, b, BN_EPSILON);
                        stats.push(BatchStats {
                            running_mean,
                            running_var,
                            mean: out.mean,
                            variance: out.variance,
                            count: n * h * w,
                        });
                        Activation::Map(out.output)
                    }
                    Mode::Eval => Activation::Map(batch_norm(
                        x,
                        g,
                        b,
                        buffers[running_mean].clone(),
                        buffers[running_var].clone(),
                        BN_EPSILON,
                    )),
                }
            }
            Layer::Relu => match x {
                Activation::Map(x) => Activation::Map(burn::tensor::activation::relu(x)),
                Activation::Flat(x) => Activation::Flat(burn::tensor::activation::relu(x)),
            },
            Layer::MaxPool => Activation::Map(max_pool2d(
                x.map(),
                MaxPoolOptions::new([2, 2]).with_stride([2, 2]),
            )),
            Layer::GlobalMaxPool => {
                let x = x.map();
                let [n, c, h, w] = x.dims();
                let pooled = max_pool2d(x, MaxPoolOptions::new([h, w]).with_stride([h, w]));
                Activation::Flat(pooled.reshape([n, c]))
            }
            Layer::GlobalAvgPool => {
                let x = x.map();
                let [n, c, h, w] = x.dims();
                let pooled = avg_pool2d(x, AvgPoolOptions::new([h, w]).with_stride([h, w]));
                Activation::Flat(pooled.reshape([n, c]))
            }
            Layer::Flatten => {
                let x = x.map();
                let [n, c, h, w] = x.dims();
                Activation::Flat(x.reshape([n, c * h * w]))
            }
            Layer::Linear {
                weight,
                bias,
                in_features,
                out_features,
            } => {
                let w = reshape(&params[weight], [out_features, in_features]);
                let b = params[bias].clone().unsqueeze_dim::<2>(0);
                Activation::Flat(x.flat().matmul(w.transpose()) + b)
            }
            Layer::Scale(s) => match x {
                Activation::Map(x) => Activation::Map(x.mul_scalar(s)),
                Activation::Flat(x) => Activation::Flat(x.mul_scalar(s)),
            },
        }
    }

    /// A short description for the model summary.
    pub fn describe(&self) -> String {
        match self {
            Layer::Conv {
                in_channels,
                out_channels,
                bias,
                ..
            } => format!(
                "conv 3x3 {in_channels} -> {out_channels}{}",
                if bias.is_some() { " (bias)" } else { "" }
            ),
            Layer::BatchNorm { channels, .. } => format!("batch norm {channels}"),
            Layer::Relu => "relu".into(),
            Layer::MaxPool => "max-pool 2x2".into(),
            Layer::GlobalMaxPool => "global max-pool".into(),
            Layer::GlobalAvgPool => "global avg-pool".into(),
            Layer::Flatten => "flatten".into(),
            Layer::Linear {
                in_features,
                out_features,
                ..
            } => format!("linear {in_features} -> {out_features}"),
            Layer::Scale(s) => format!("scale x{s}"),
        }
    }
}
