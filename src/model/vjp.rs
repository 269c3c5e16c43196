//! Each layer's backward pass (vector-Jacobian product), written with ordinary differentiable
//! Burn ops so that Burn's autodiff can differentiate it once more (see DESIGN.md).
//!
//! Given the gradient `dy` of the loss with respect to a layer's output, `vjp` returns the
//! gradient with respect to its input (unless not needed: the images) and to its parameters.

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::module::{conv_transpose2d, conv2d_weight_backward};
use burn::tensor::ops::ConvTransposeOptions;

use super::layers::{Activation, Layer, conv_options, reshape};
use super::record::{Aux, LayerRecord, channel_mean, channel_sum, per_channel};

/// Gradients of one layer's parameters: (parameter index in the layout, flat gradient).
pub type ParamGradients = Vec<(usize, Tensor<1>)>;

/// The transpose of the 3x3, stride 1, padding 1 convolution.
fn conv_transpose_options() -> ConvTransposeOptions<2> {
    ConvTransposeOptions::new([1, 1], [1, 1], [0, 0], [1, 1], 1)
}

fn flatten<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n = t.shape().num_elements();
    t.reshape([n])
}

impl Layer {
    /// The backward pass of one layer. `need_input_gradient` is false for the first layer,
    /// whose input (the images) has no parameters behind it.
    pub fn vjp(
        &self,
        record: &LayerRecord,
        params: &[Tensor<1>],
        dy: Activation,
        need_input_gradient: bool,
    ) -> (Option<Activation>, ParamGradients) {
        let grads = self.param_gradients(record, params, dy.clone(), false);
        let dx = need_input_gradient.then(|| self.input_gradient(record, params, dy));
        (dx, grads)
    }

    /// The parameter part of the backward pass. With `squared`, every product of input and
    /// output gradient is taken of their squares instead: the sum over examples and positions
    /// of the squared per-position gradients, the diagonal the Hessian-free preconditioner
    /// needs (exact for linear layers; for convolutions and batch norm it counts each position
    /// as its own example, the usual cheap approximation).
    pub fn param_gradients(
        &self,
        record: &LayerRecord,
        params: &[Tensor<1>],
        dy: Activation,
        squared: bool,
    ) -> ParamGradients {
        let sq = |t: Tensor<4>| if squared { t.powi_scalar(2) } else { t };
        match *self {
            Layer::Conv {
                weight,
                bias,
                in_channels,
                out_channels,
            } => {
                let x = sq(record.input.clone().map());
                let dy = sq(dy.map());
                // Burn reads only the weight's shape here (its value takes no part).
                let w = reshape(&params[weight], [out_channels, in_channels, 3, 3]);
                let dw = conv2d_weight_backward(x, w, dy.clone(), conv_options());
                let mut out = vec![(weight, flatten(dw))];
                if let Some(b) = bias {
                    out.push((b, channel_sum(dy)));
                }
                out
            }
            Layer::BatchNorm { gamma, beta, .. } => {
                let Aux::BatchNorm { normalized, .. } = &record.aux else {
                    unreachable!("a batch norm record holds its normalised input")
                };
                let dy = sq(dy.map());
                vec![
                    (gamma, channel_sum(dy.clone() * sq(normalized.clone()))),
                    (beta, channel_sum(dy)),
                ]
            }
            Layer::Linear { weight, bias, .. } => {
                let x = record.input.clone().flat();
                let dy = dy.flat();
                let (x, dy) = if squared {
                    (x.powi_scalar(2), dy.powi_scalar(2))
                } else {
                    (x, dy)
                };
                let out_features = dy.dims()[1];
                vec![
                    (weight, flatten(dy.clone().transpose().matmul(x))),
                    (bias, dy.sum_dim(0).reshape([out_features])),
                ]
            }
            _ => Vec::new(),
        }
    }

    /// The input part of the backward pass.
    fn input_gradient(
        &self,
        record: &LayerRecord,
        params: &[Tensor<1>],
        dy: Activation,
    ) -> Activation {
        match *self {
            Layer::Conv {
                weight,
                in_channels,
                out_channels,
                ..
            } => {
                let w = reshape(&params[weight], [out_channels, in_channels, 3, 3]);
                Activation::Map(conv_transpose2d(
                    dy.map(),
                    w,
                    None,
                    conv_transpose_options(),
                ))
            }
            Layer::BatchNorm { gamma, .. } => {
                let Aux::BatchNorm {
                    normalized,
                    inv_std,
                    ..
                } = &record.aux
                else {
                    unreachable!("a batch norm record holds its normalised input")
                };
                // dx = gamma * inv_std * (dy - mean(dy) - x_hat * mean(dy * x_hat)),
                // means per channel over batch and positions.
                let dy = dy.map();
                let mean_dy = channel_mean(dy.clone());
                let mean_dy_xhat = channel_mean(dy.clone() * normalized.clone());
                let scale = per_channel(params[gamma].clone()) * inv_std.clone();
                Activation::Map((dy - mean_dy - normalized.clone() * mean_dy_xhat) * scale)
            }
            Layer::Relu => match (&record.input, dy) {
                (Activation::Map(x), Activation::Map(dy)) => {
                    Activation::Map(dy.mask_fill(x.clone().lower_equal_elem(0.0), 0.0))
                }
                (Activation::Flat(x), Activation::Flat(dy)) => {
                    Activation::Flat(dy.mask_fill(x.clone().lower_equal_elem(0.0), 0.0))
                }
                _ => unreachable!("relu keeps the shape of its input"),
            },
            Layer::MaxPool | Layer::GlobalMaxPool => {
                let Aux::MaxPool { indices } = &record.aux else {
                    unreachable!("a max-pooling record holds its argmax indices")
                };
                let [n, c, h, w] = record.input.clone().map().dims();
                let [_, _, oh, ow] = indices.dims();
                let dy = match dy {
                    Activation::Map(d) => d.reshape([n, c, oh * ow]),
                    Activation::Flat(d) => d.reshape([n, c, oh * ow]),
                };
                let index = indices.clone().reshape([n, c, oh * ow]);
                let zeros = Tensor::<3>::zeros([n, c, h * w], &dy.device());
                let dx = zeros.scatter(2, index, dy, IndexingUpdateOp::Add);
                Activation::Map(dx.reshape([n, c, h, w]))
            }
            Layer::GlobalAvgPool => {
                let [n, c, h, w] = record.input.clone().map().dims();
                let dy = dy.flat().reshape([n, c, 1, 1]).div_scalar((h * w) as f64);
                Activation::Map(dy.expand([n, c, h, w]))
            }
            Layer::Flatten => {
                let dims = record.input.clone().map().dims();
                Activation::Map(dy.flat().reshape(dims))
            }
            Layer::Linear {
                weight,
                in_features,
                out_features,
                ..
            } => {
                let w = reshape(&params[weight], [out_features, in_features]);
                Activation::Flat(dy.flat().matmul(w))
            }
            Layer::Scale(s) => match dy {
                Activation::Map(d) => Activation::Map(d.mul_scalar(s)),
                Activation::Flat(d) => Activation::Flat(d.mul_scalar(s)),
            },
        }
    }
}
