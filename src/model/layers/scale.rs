//! `"scale S"`: multiplies by a constant (the logit scale of the fast CIFAR-10 recipes).

use std::sync::Arc;

use burn::prelude::*;

use crate::model::builder::Builder;
use crate::model::layer::{BatchStats, Gradients, Layer, Pass, Recorded, Shape};
use crate::model::spec::LayerSpec;

pub const USAGE: &str = "scale S";

#[derive(Debug, Clone, Copy)]
pub struct Scale(pub f32);

pub fn build(
    spec: &mut LayerSpec,
    input: Shape,
    _: &mut Builder,
) -> Result<(Arc<dyn Layer>, Shape), String> {
    let factor: f32 = spec.required("factor")?;
    spec.finish(USAGE)?;
    if !factor.is_finite() || factor <= 0.0 {
        return Err(format!("{factor}: expected a positive factor"));
    }
    Ok((Arc::new(Scale(factor)), input))
}

impl Layer for Scale {
    fn describe(&self) -> String {
        format!("scale x{}", self.0)
    }

    fn forward(&self, x: Tensor<4>, _: &mut Pass) -> Tensor<4> {
        x.mul_scalar(self.0)
    }

    fn record(&self, x: Tensor<4>, _: &[Tensor<1>]) -> (Tensor<4>, Box<dyn Recorded>) {
        (x.mul_scalar(self.0), Box::new(*self))
    }
}

/// A linear map without parameters: its record is itself.
impl Recorded for Scale {
    fn vjp(
        &self,
        _: &[Tensor<1>],
        dy: Tensor<4>,
        _: &mut Gradients,
        need_input: bool,
    ) -> Option<Tensor<4>> {
        need_input.then(|| dy.mul_scalar(self.0))
    }

    fn jvp(&self, _: &[Tensor<1>], _: &[Tensor<1>], dx: Option<Tensor<4>>) -> Option<Tensor<4>> {
        dx.map(|dx| dx.mul_scalar(self.0))
    }

    fn batch_stats(&self, _: &mut Vec<BatchStats>) {}
}
