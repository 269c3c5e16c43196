//! `"linear F [bias=true|false]"`: `y = x W^T + b` on a vector of features, weight `[F, in]`
//! as in PyTorch. The network's classifier is one too.

use std::sync::Arc;

use burn::prelude::*;

use crate::model::builder::{Builder, Init};
use crate::model::layer::{
    BatchStats, Gradients, Layer, LayerFactors, Pass, Recorded, Shape, add_tangents,
    kronecker_factors, reshape,
};
use crate::model::spec::LayerSpec;

pub const USAGE: &str = "linear F [bias=true|false]";

#[derive(Debug, Clone, Copy)]
pub struct Linear {
    weight: usize,
    bias: Option<usize>,
    in_features: usize,
    out_features: usize,
}

pub fn build(
    spec: &mut LayerSpec,
    input: Shape,
    b: &mut Builder,
) -> Result<(Arc<dyn Layer>, Shape), String> {
    let out_features: usize = spec.required("output features")?;
    let bias = spec.flag("bias", true)?;
    spec.finish(USAGE)?;
    if !(1..=1 << 20).contains(&out_features) {
        return Err(format!(
            "{out_features} output features: expected 1 to 1048576"
        ));
    }
    let layer = Linear::declare(b, input, out_features, bias)?;
    Ok((Arc::new(layer), layer.output_shape()))
}

impl Linear {
    /// Declares the weight (and bias) of a linear layer on `input`, which must be a vector.
    pub fn declare(
        b: &mut Builder,
        input: Shape,
        out_features: usize,
        bias: bool,
    ) -> Result<Self, String> {
        if !input.is_vector() {
            return Err(format!(
                "a linear layer needs a vector of features but gets {input}: put flatten or a \
                 global pool before it"
            ));
        }
        let fan_in = input.channels;
        let weight = b.param(
            "weight",
            &[out_features, fan_in],
            true,
            Init::Uniform { fan_in },
        );
        let bias = bias.then(|| b.param("bias", &[out_features], false, Init::Uniform { fan_in }));
        Ok(Self {
            weight,
            bias,
            in_features: fan_in,
            out_features,
        })
    }

    pub fn output_shape(&self) -> Shape {
        Shape {
            channels: self.out_features,
            height: 1,
            width: 1,
        }
    }

    fn weight(&self, params: &[Tensor<1>]) -> Tensor<2> {
        reshape(&params[self.weight], [self.out_features, self.in_features])
    }

    /// `x W^T + b` on `[n, in]`, as `[n, out, 1, 1]`.
    fn apply(&self, x: Tensor<2>, params: &[Tensor<1>]) -> Tensor<4> {
        let mut y = x.matmul(self.weight(params).transpose());
        if let Some(b) = self.bias {
            y = y + params[b].clone().unsqueeze_dim::<2>(0);
        }
        let n = y.dims()[0];
        y.reshape([n, self.out_features, 1, 1])
    }
}

/// `[n, f, 1, 1]` as `[n, f]`.
fn matrix(x: Tensor<4>) -> Tensor<2> {
    let [n, f, _, _] = x.dims();
    x.reshape([n, f])
}

impl Layer for Linear {
    fn describe(&self) -> String {
        let bias = if self.bias.is_some() {
            ""
        } else {
            " (no bias)"
        };
        format!("linear {} -> {}{bias}", self.in_features, self.out_features)
    }

    fn forward(&self, x: Tensor<4>, pass: &mut Pass) -> Tensor<4> {
        self.apply(matrix(x), pass.params)
    }

    fn record(&self, x: Tensor<4>, params: &[Tensor<1>]) -> (Tensor<4>, Box<dyn Recorded>) {
        let input = matrix(x);
        let y = self.apply(input.clone(), params);
        (
            y,
            Box::new(LinearRecord {
                layer: *self,
                input,
            }),
        )
    }
}

struct LinearRecord {
    layer: Linear,
    input: Tensor<2>,
}

impl Recorded for LinearRecord {
    fn vjp(
        &self,
        params: &[Tensor<1>],
        dy: Tensor<4>,
        grads: &mut Gradients,
        need_input: bool,
    ) -> Option<Tensor<4>> {
        let l = &self.layer;
        let dy = matrix(dy);
        let n = dy.dims()[0];
        let gradients = |x: Tensor<2>, dy: Tensor<2>| {
            let dw = dy.clone().transpose().matmul(x);
            (dw, dy.sum_dim(0))
        };
        let (dw, db) = gradients(self.input.clone(), dy.clone());
        grads.put(l.weight, dw);
        if let Some(b) = l.bias {
            grads.put(b, db);
        }
        if grads.wants_squares() {
            let (dw2, db2) =
                gradients(self.input.clone().powi_scalar(2), dy.clone().powi_scalar(2));
            grads.put_square(l.weight, dw2);
            if let Some(b) = l.bias {
                grads.put_square(b, db2);
            }
        }
        if let Some(with_inputs) = grads.wants_factors() {
            let inputs = with_inputs.then(|| self.input.clone());
            let (inputs, outputs) = kronecker_factors(inputs, dy.clone(), n, l.bias.is_some());
            grads.put_factors(LayerFactors {
                weight: l.weight,
                bias: l.bias,
                inputs,
                outputs,
            });
        }
        need_input.then(|| {
            dy.matmul(l.weight(params))
                .reshape([n, l.in_features, 1, 1])
        })
    }

    fn jvp(
        &self,
        params: &[Tensor<1>],
        tangents: &[Tensor<1>],
        dx: Option<Tensor<4>>,
    ) -> Option<Tensor<4>> {
        // Linear in both arguments: x dW^T + db + dx W^T.
        let l = &self.layer;
        let from_params = l.apply(self.input.clone(), tangents);
        let from_input = dx.map(|dx| {
            let n = dx.dims()[0];
            matrix(dx)
                .matmul(l.weight(params).transpose())
                .reshape([n, l.out_features, 1, 1])
        });
        add_tangents(Some(from_params), from_input)
    }

    fn batch_stats(&self, _: &mut Vec<BatchStats>) {}
}
