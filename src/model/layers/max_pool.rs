//! Max-pooling over `K x K` windows at stride K: `"max-pool [K]"` (K = 2 by default; rows
//! and columns left over at the edge are dropped, as in PyTorch), and `"global-max-pool"`,
//! the same over the whole map (`c x h x w` becomes a vector of c features).

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::module::{max_pool2d, max_pool2d_with_indices};
use burn::tensor::ops::MaxPoolOptions;

use super::host::{self, WindowChoices};
use crate::model::builder::Builder;
use crate::model::layer::{BatchStats, Gradients, Layer, Pass, Recorded, Shape};
use crate::model::spec::LayerSpec;

pub const USAGE: &str = "max-pool [K]";
pub const GLOBAL_USAGE: &str = "global-max-pool";

#[derive(Debug, Clone, Copy)]
pub struct MaxPool {
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
    let layer = MaxPool {
        kernel: [k, k],
        global: false,
    };
    let output = pooled_shape(input, layer.kernel)?;
    Ok((Arc::new(layer), output))
}

pub fn build_global(
    spec: &mut LayerSpec,
    input: Shape,
    _: &mut Builder,
) -> Result<(Arc<dyn Layer>, Shape), String> {
    spec.finish(GLOBAL_USAGE)?;
    let layer = MaxPool {
        kernel: [input.height, input.width],
        global: true,
    };
    Ok((Arc::new(layer), pooled_shape(input, layer.kernel)?))
}

/// The shape after pooling `input` over `kernel` windows at stride `kernel` (also used by
/// average pooling).
pub fn pooled_shape(input: Shape, kernel: [usize; 2]) -> Result<Shape, String> {
    if kernel[0] == 0 || kernel[1] == 0 {
        return Err("a pooling window of 0: expected at least 1 (2 by default)".into());
    }
    if input.height < kernel[0] || input.width < kernel[1] {
        return Err(format!(
            "{}x{} windows do not fit {input}: remove a pooling layer or pool less",
            kernel[0], kernel[1]
        ));
    }
    Ok(Shape {
        channels: input.channels,
        height: input.height / kernel[0],
        width: input.width / kernel[1],
    })
}

impl MaxPool {
    fn options(&self) -> MaxPoolOptions<2> {
        MaxPoolOptions::new(self.kernel).with_stride(self.kernel)
    }
}

impl Layer for MaxPool {
    fn describe(&self) -> String {
        if self.global {
            "global max-pool".into()
        } else {
            format!("max-pool {}x{}", self.kernel[0], self.kernel[1])
        }
    }

    fn forward(&self, x: Tensor<4>, _: &mut Pass) -> Tensor<4> {
        if host::applies(&x) {
            return host::pool(x, self.kernel);
        }
        max_pool2d(x, self.options())
    }

    fn record(&self, x: Tensor<4>, _: &[Tensor<1>]) -> (Tensor<4>, Box<dyn Recorded>) {
        let input_dims = x.dims();
        let (y, choices) = if host::applies(&x) {
            let (y, choices) = host::pool_keeping_choices(x, self.kernel);
            (y, Choices::Host(choices))
        } else {
            let (y, indices) = max_pool2d_with_indices(x, self.options());
            (y, Choices::Indices(indices))
        };
        let output_dims = y.dims();
        (
            y,
            Box::new(MaxPoolRecord {
                input_dims,
                output_dims,
                choices,
            }),
        )
    }
}

/// Where each window's maximum was.
enum Choices {
    /// Kept by our host-memory loops (CPU backends, untracked input).
    Host(WindowChoices),
    /// Burn's: flat argmax positions within each `h * w` plane, `[n, c, oh, ow]`.
    Indices(Tensor<4, Int>),
}

struct MaxPoolRecord {
    input_dims: [usize; 4],
    output_dims: [usize; 4],
    choices: Choices,
}

impl MaxPoolRecord {
    /// The choices as a tensor `[n, c, oh * ow]`, for Burn's differentiable scatter and gather.
    fn flat_indices(&self) -> Tensor<3, Int> {
        let indices = match &self.choices {
            Choices::Host(choices) => choices.indices(),
            Choices::Indices(indices) => indices.clone(),
        };
        let [n, c, oh, ow] = indices.dims();
        indices.reshape([n, c, oh * ow])
    }

    /// The host-memory choices where `t` can use them.
    fn host_choices_for(&self, t: &Tensor<4>) -> Option<&WindowChoices> {
        match &self.choices {
            Choices::Host(choices) if choices.applies_to(t) => Some(choices),
            _ => None,
        }
    }
}

impl Recorded for MaxPoolRecord {
    fn vjp(
        &self,
        _: &[Tensor<1>],
        dy: Tensor<4>,
        _: &mut Gradients,
        need_input: bool,
    ) -> Option<Tensor<4>> {
        need_input.then(|| {
            if let Some(choices) = self.host_choices_for(&dy) {
                return choices.spread(dy);
            }
            // Each window's gradient goes to its argmax.
            let [n, c, h, w] = self.input_dims;
            let [_, _, oh, ow] = dy.dims();
            let zeros = Tensor::<3>::zeros([n, c, h * w], (&dy.device(), dy.dtype()));
            let dy = dy.reshape([n, c, oh * ow]);
            zeros
                .scatter(2, self.flat_indices(), dy, IndexingUpdateOp::Add)
                .reshape([n, c, h, w])
        })
    }

    fn jvp(&self, _: &[Tensor<1>], _: &[Tensor<1>], dx: Option<Tensor<4>>) -> Option<Tensor<4>> {
        dx.map(|dx| {
            if let Some(choices) = self.host_choices_for(&dx) {
                return choices.pick(dx);
            }
            let [n, c, h, w] = self.input_dims;
            dx.reshape([n, c, h * w])
                .gather(2, self.flat_indices())
                .reshape(self.output_dims)
        })
    }

    fn batch_stats(&self, _: &mut Vec<BatchStats>) {}
}
