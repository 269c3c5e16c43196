//! Each layer's forward-mode tangent (Jacobian-vector product, Pearlmutter's R-operator):
//! given tangents of the layer's parameters and of its input, the tangent of its output.
//! Used by the Gauss-Newton product `G v = J^T H_L J v`, on a recorded forward pass.

use burn::prelude::*;
use burn::tensor::module::conv2d;

use super::layers::{Activation, Layer, conv_options, reshape};
use super::record::{Aux, LayerRecord, channel_mean, per_channel};

fn add(a: Option<Activation>, b: Activation) -> Activation {
    match (a, b) {
        (None, b) => b,
        (Some(Activation::Map(a)), Activation::Map(b)) => Activation::Map(a + b),
        (Some(Activation::Flat(a)), Activation::Flat(b)) => Activation::Flat(a + b),
        _ => unreachable!("tangents of one layer's output have one shape"),
    }
}

impl Layer {
    /// The output tangent, or None when it is zero (no input tangent and no parameters:
    /// the layers before the first convolution see constant images).
    pub fn jvp(
        &self,
        record: &LayerRecord,
        params: &[Tensor<1>],
        tangents: &[Tensor<1>],
        dx: Option<Activation>,
    ) -> Option<Activation> {
        match *self {
            Layer::Conv {
                weight,
                bias,
                in_channels,
                out_channels,
            } => {
                let shape = [out_channels, in_channels, 3, 3];
                // Linear in both arguments: conv(dx, W) + conv(x, dW) + db.
                let from_params = conv2d(
                    record.input.clone().map(),
                    reshape(&tangents[weight], shape),
                    bias.map(|b| tangents[b].clone()),
                    conv_options(),
                );
                let from_input = dx.map(|dx| {
                    Activation::Map(conv2d(
                        dx.map(),
                        reshape(&params[weight], shape),
                        None,
                        conv_options(),
                    ))
                });
                Some(add(from_input, Activation::Map(from_params)))
            }
            Layer::BatchNorm { gamma, beta, .. } => {
                let Aux::BatchNorm {
                    normalized,
                    inv_std,
                    ..
                } = &record.aux
                else {
                    unreachable!("a batch norm record holds its normalised input")
                };
                // d x_hat = inv_std * (dx - mean(dx) - x_hat * mean(x_hat * dx)): the batch
                // statistics move with the input.
                let mut out = normalized.clone() * per_channel(tangents[gamma].clone())
                    + per_channel(tangents[beta].clone());
                if let Some(dx) = dx {
                    let dx = dx.map();
                    let mean_dx = channel_mean(dx.clone());
                    let mean_xhat_dx = channel_mean(normalized.clone() * dx.clone());
                    let d_normalized =
                        (dx - mean_dx - normalized.clone() * mean_xhat_dx) * inv_std.clone();
                    out = out + d_normalized * per_channel(params[gamma].clone());
                }
                Some(Activation::Map(out))
            }
            Layer::Linear {
                weight,
                bias,
                in_features,
                out_features,
            } => {
                let shape = [out_features, in_features];
                let x = record.input.clone().flat();
                let from_params = x.matmul(reshape(&tangents[weight], shape).transpose())
                    + tangents[bias].clone().unsqueeze_dim::<2>(0);
                let from_input = dx.map(|dx| {
                    Activation::Flat(
                        dx.flat()
                            .matmul(reshape(&params[weight], shape).transpose()),
                    )
                });
                Some(add(from_input, Activation::Flat(from_params)))
            }
            Layer::Relu => dx.map(|dx| match (&record.input, dx) {
                (Activation::Map(x), Activation::Map(d)) => {
                    Activation::Map(d.mask_fill(x.clone().lower_equal_elem(0.0), 0.0))
                }
                (Activation::Flat(x), Activation::Flat(d)) => {
                    Activation::Flat(d.mask_fill(x.clone().lower_equal_elem(0.0), 0.0))
                }
                _ => unreachable!("relu keeps the shape of its input"),
            }),
            Layer::MaxPool | Layer::GlobalMaxPool => dx.map(|dx| {
                let Aux::MaxPool { indices } = &record.aux else {
                    unreachable!("a max-pooling record holds its argmax indices")
                };
                let [n, c, h, w] = dx.clone().map().dims();
                let [_, _, oh, ow] = indices.dims();
                let picked = dx
                    .map()
                    .reshape([n, c, h * w])
                    .gather(2, indices.clone().reshape([n, c, oh * ow]));
                if *self == Layer::GlobalMaxPool {
                    Activation::Flat(picked.reshape([n, c]))
                } else {
                    Activation::Map(picked.reshape([n, c, oh, ow]))
                }
            }),
            // The remaining layers are linear maps without parameters: the tangent goes
            // through their own forward pass.
            Layer::GlobalAvgPool | Layer::Flatten | Layer::Scale(_) => {
                dx.map(|dx| self.forward(dx, params, &[], super::Mode::Train, &mut Vec::new()))
            }
        }
    }
}
