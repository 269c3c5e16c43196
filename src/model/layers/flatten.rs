//! `"flatten"`: a `c x h x w` feature map becomes a vector of `c*h*w` features (in PyTorch's
//! order: channel, then row, then column).

use std::sync::Arc;

use burn::prelude::*;

use crate::model::builder::Builder;
use crate::model::layer::{BatchStats, Gradients, Layer, Pass, Recorded, Shape};
use crate::model::spec::LayerSpec;

pub const USAGE: &str = "flatten";

#[derive(Debug, Clone, Copy)]
pub struct Flatten;

pub fn build(
    spec: &mut LayerSpec,
    input: Shape,
    _: &mut Builder,
) -> Result<(Arc<dyn Layer>, Shape), String> {
    spec.finish(USAGE)?;
    let output = Shape {
        channels: input.elements(),
        height: 1,
        width: 1,
    };
    Ok((Arc::new(Flatten), output))
}

fn flat(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c * h * w, 1, 1])
}

impl Layer for Flatten {
    fn describe(&self) -> String {
        "flatten".into()
    }

    fn forward(&self, x: Tensor<4>, _: &mut Pass) -> Tensor<4> {
        flat(x)
    }

    fn record(&self, x: Tensor<4>, _: &[Tensor<1>]) -> (Tensor<4>, Box<dyn Recorded>) {
        let dims = x.dims();
        (flat(x), Box::new(FlattenRecord { dims }))
    }
}

struct FlattenRecord {
    dims: [usize; 4],
}

impl Recorded for FlattenRecord {
    fn vjp(
        &self,
        _: &[Tensor<1>],
        dy: Tensor<4>,
        _: &mut Gradients,
        need_input: bool,
    ) -> Option<Tensor<4>> {
        need_input.then(|| dy.reshape(self.dims))
    }

    fn jvp(&self, _: &[Tensor<1>], _: &[Tensor<1>], dx: Option<Tensor<4>>) -> Option<Tensor<4>> {
        dx.map(flat)
    }

    fn batch_stats(&self, _: &mut Vec<BatchStats>) {}
}
