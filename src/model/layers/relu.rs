//! `"relu"`: `max(x, 0)`.

use std::sync::Arc;

use burn::prelude::*;

use crate::model::builder::Builder;
use crate::model::layer::{BatchStats, Gradients, Layer, Pass, Recorded, Shape};
use crate::model::spec::LayerSpec;

pub const USAGE: &str = "relu";

#[derive(Debug, Clone, Copy)]
pub struct Relu;

pub fn build(
    spec: &mut LayerSpec,
    input: Shape,
    _: &mut Builder,
) -> Result<(Arc<dyn Layer>, Shape), String> {
    spec.finish(USAGE)?;
    Ok((Arc::new(Relu), input))
}

impl Layer for Relu {
    fn describe(&self) -> String {
        "relu".into()
    }

    fn forward(&self, x: Tensor<4>, _: &mut Pass) -> Tensor<4> {
        burn::tensor::activation::relu(x)
    }

    fn record(&self, x: Tensor<4>, _: &[Tensor<1>]) -> (Tensor<4>, Box<dyn Recorded>) {
        let y = burn::tensor::activation::relu(x.clone());
        (y, Box::new(ReluRecord { input: x }))
    }
}

struct ReluRecord {
    input: Tensor<4>,
}

impl ReluRecord {
    /// Zero where the input was not positive: the derivative is 0 or 1.
    fn mask(&self, d: Tensor<4>) -> Tensor<4> {
        d.mask_fill(self.input.clone().lower_equal_elem(0.0), 0.0)
    }
}

impl Recorded for ReluRecord {
    fn vjp(
        &self,
        _: &[Tensor<1>],
        dy: Tensor<4>,
        _: &mut Gradients,
        need_input: bool,
    ) -> Option<Tensor<4>> {
        need_input.then(|| self.mask(dy))
    }

    fn jvp(&self, _: &[Tensor<1>], _: &[Tensor<1>], dx: Option<Tensor<4>>) -> Option<Tensor<4>> {
        dx.map(|dx| self.mask(dx))
    }

    fn batch_stats(&self, _: &mut Vec<BatchStats>) {}
}
