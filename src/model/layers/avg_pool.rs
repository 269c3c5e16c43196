//! Average pooling over `K x K` windows at stride K: `"avg-pool [K]"` (K = 2 by default;
//! rows and columns left over at the edge are dropped, as in PyTorch), and
//! `"global-avg-pool"`, the mean over the whole map (`c x h x w` becomes c features).

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::module::{avg_pool2d, conv_transpose2d};
use burn::tensor::ops::{AvgPoolOptions, ConvTransposeOptions};

use super::max_pool::pooled_shape;
use crate::model::builder::Builder;
use crate::model::layer::{BatchStats, Gradients, Layer, Pass, Recorded, Shape};
use crate::model::spec::LayerSpec;

pub const USAGE: &str = "avg-pool [K]";
pub const GLOBAL_USAGE: &str = "global-avg-pool";

#[derive(Debug, Clone, Copy)]
pub struct AvgPool {
    kernel: [usize; 2],
    global: bool,
}

pub fn build(
    spec: &mut LayerSpec,
    input: Shape,
    _: &mut Builder,
) -> Result<(Arc<dyn Layer>, Shape), String> {
    let k: usize = spec.value_or("window size", 2)?;
    spec.finish(USAGE)?;
    let layer = AvgPool {
        kernel: [k, k],
        global: false,
    };
    Ok((Arc::new(layer), pooled_shape(input, layer.kernel)?))
}

pub fn build_global(
    spec: &mut LayerSpec,
    input: Shape,
    _: &mut Builder,
) -> Result<(Arc<dyn Layer>, Shape), String> {
    spec.finish(GLOBAL_USAGE)?;
    let layer = AvgPool {
        kernel: [input.height, input.width],
        global: true,
    };
    Ok((Arc::new(layer), pooled_shape(input, layer.kernel)?))
}

impl AvgPool {
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        avg_pool2d(x, AvgPoolOptions::new(self.kernel).with_stride(self.kernel))
    }
}

impl Layer for AvgPool {
    fn describe(&self) -> String {
        if self.global {
            "global avg-pool".into()
        } else {
            format!("avg-pool {}x{}", self.kernel[0], self.kernel[1])
        }
    }

    fn forward(&self, x: Tensor<4>, _: &mut Pass) -> Tensor<4> {
        self.apply(x)
    }

    fn record(&self, x: Tensor<4>, _: &[Tensor<1>]) -> (Tensor<4>, Box<dyn Recorded>) {
        let input_dims = x.dims();
        let record = AvgPoolRecord {
            layer: *self,
            input_dims,
        };
        (self.apply(x), Box::new(record))
    }
}

struct AvgPoolRecord {
    layer: AvgPool,
    input_dims: [usize; 4],
}

impl Recorded for AvgPoolRecord {
    fn vjp(
        &self,
        _: &[Tensor<1>],
        dy: Tensor<4>,
        _: &mut Gradients,
        need_input: bool,
    ) -> Option<Tensor<4>> {
        need_input.then(|| {
            // Each window's gradient, divided by its size, spread over the window; zero for
            // the rows and columns the pooling dropped. A transposed convolution per channel
            // with a kernel of 1/(kh kw) does it (`padding_out` restores the dropped edge):
            // spreading by expand and padding by concatenation instead made the f64 Hessian
            // asymmetric by 1e-9 where rows were dropped (measured), under Burn's second
            // differentiation of the concatenation.
            let [_, c, h, w] = self.input_dims;
            let [kh, kw] = self.layer.kernel;
            let [_, _, oh, ow] = dy.dims();
            let weight = Tensor::<4>::ones([c, 1, kh, kw], (&dy.device(), dy.dtype()))
                .div_scalar((kh * kw) as f64);
            let options =
                ConvTransposeOptions::new([kh, kw], [0, 0], [h - oh * kh, w - ow * kw], [1, 1], c);
            conv_transpose2d(dy, weight, None, options)
        })
    }

    fn jvp(&self, _: &[Tensor<1>], _: &[Tensor<1>], dx: Option<Tensor<4>>) -> Option<Tensor<4>> {
        dx.map(|dx| self.layer.apply(dx))
    }

    fn batch_stats(&self, _: &mut Vec<BatchStats>) {}
}
