//! `"relu"`: `max(x, 0)`.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::FloatDType;

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
        // The derivative (0 or 1) as floats, made once: every vjp and jvp on this record (a
        // CG solve makes one of each per iteration) is then one multiplication, where a
        // comparison and a masked fill each time cost 12 to 19 times the forward pass on
        // flex (BENCHMARKS.md). It is a constant of the parameters, as the derivative of
        // ReLU is almost everywhere.
        let derivative = x
            .clone()
            .greater_elem(0.0)
            .cast(FloatDType::from(x.dtype()));
        let y = burn::tensor::activation::relu(x);
        (y, Box::new(ReluRecord { derivative }))
    }
}

struct ReluRecord {
    derivative: Tensor<4>,
}

impl ReluRecord {
    /// Zero where the input was not positive: the derivative is 0 or 1.
    fn mask(&self, d: Tensor<4>) -> Tensor<4> {
        d * self.derivative.clone()
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
