//! `"gelu"`: `x * Phi(x)`, Phi the standard normal distribution function (the exact GELU, as
//! PyTorch's default). Smooth: unlike ReLU its second derivative is not zero, so the exact
//! Hessian has a term from it that the Gauss-Newton matrix leaves out.

use std::sync::Arc;

use burn::prelude::*;

use crate::model::builder::Builder;
use crate::model::layer::{BatchStats, Gradients, Layer, Pass, Recorded, Shape};
use crate::model::spec::LayerSpec;

pub const USAGE: &str = "gelu";

#[derive(Debug, Clone, Copy)]
pub struct Gelu;

pub fn build(
    spec: &mut LayerSpec,
    input: Shape,
    _: &mut Builder,
) -> Result<(Arc<dyn Layer>, Shape), String> {
    spec.finish(USAGE)?;
    Ok((Arc::new(Gelu), input))
}

/// The standard normal density `phi(x)`.
fn density(x: Tensor<4>) -> Tensor<4> {
    x.powi_scalar(2)
        .mul_scalar(-0.5)
        .exp()
        .mul_scalar(1.0 / (2.0 * std::f64::consts::PI).sqrt())
}

/// `Phi(x) = (1 + erf(x / sqrt 2)) / 2`, whose derivative for Burn's autodiff is `phi(x)` as
/// computed here: Burn 0.22 takes erf's derivative with 2/sqrt(pi) rounded to f32 (relative
/// error 1.7e-8, measured in f64), which would make the f64 Hessian measurably asymmetric.
/// The value is erf's; `(x - x)` with the second x detached adds zero but carries the slope.
fn normal_cdf(x: Tensor<4>) -> Tensor<4> {
    let value = x
        .clone()
        .div_scalar(std::f64::consts::SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5);
    let slope = density(x.clone()).detach();
    value.detach() + (x.clone() - x.detach()) * slope
}

/// `d/dx x Phi(x) = Phi(x) + x phi(x)`. In differentiable ops, so the double backprop of the
/// Hessian-vector product sees GELU's second derivative.
fn derivative(x: Tensor<4>) -> Tensor<4> {
    normal_cdf(x.clone()) + x.clone() * density(x)
}

impl Layer for Gelu {
    fn describe(&self) -> String {
        "gelu".into()
    }

    fn forward(&self, x: Tensor<4>, _: &mut Pass) -> Tensor<4> {
        burn::tensor::activation::gelu(x)
    }

    fn record(&self, x: Tensor<4>, _: &[Tensor<1>]) -> (Tensor<4>, Box<dyn Recorded>) {
        let y = x.clone() * normal_cdf(x.clone());
        (y, Box::new(GeluRecord { input: x }))
    }
}

struct GeluRecord {
    input: Tensor<4>,
}

impl Recorded for GeluRecord {
    fn vjp(
        &self,
        _: &[Tensor<1>],
        dy: Tensor<4>,
        _: &mut Gradients,
        need_input: bool,
    ) -> Option<Tensor<4>> {
        need_input.then(|| dy * derivative(self.input.clone()))
    }

    fn jvp(&self, _: &[Tensor<1>], _: &[Tensor<1>], dx: Option<Tensor<4>>) -> Option<Tensor<4>> {
        dx.map(|dx| dx * derivative(self.input.clone()))
    }

    fn batch_stats(&self, _: &mut Vec<BatchStats>) {}
}
