//! A residual block: `y = shortcut(x) + branch(x)`, the shortcut the identity where the
//! branch keeps the shape, else a 1x1 convolution (with the stride that matches the sides)
//! named `shortcut`. Written in a config as a stage's `residual = [...]`, after its `layers`.

use burn::prelude::*;

use super::conv::Conv;
use super::sequence::Sequence;
use crate::model::builder::Builder;
use crate::model::layer::{BatchStats, Gradients, Layer, Pass, Recorded, Shape, add_tangents};

#[derive(Debug, Clone)]
pub struct Residual {
    branch: Sequence,
    shortcut: Option<Conv>,
}

impl Residual {
    /// A block around `branch`, which maps `input` to `output`; declares the projection
    /// (under the builder's current name) where the shapes differ.
    pub fn new(
        branch: Sequence,
        input: Shape,
        output: Shape,
        b: &mut Builder,
    ) -> Result<Self, String> {
        if input == output {
            return Ok(Self {
                branch,
                shortcut: None,
            });
        }
        // A 1x1 convolution at stride s maps a side of n to (n - 1) / s + 1: the stride is
        // the one that gives the branch's sides (15 -> 8 at stride 2, as a strided 3x3 does).
        let stride = input.height.div_ceil(output.height.max(1));
        let side = |n: usize| (n - 1) / stride + 1;
        if output.is_vector() && !input.is_vector()
            || side(input.height) != output.height
            || side(input.width) != output.width
        {
            return Err(format!(
                "the residual branch turns {input} into {output}: a shortcut (a 1x1 \
                 convolution at a stride) cannot do that; end the branch with a feature map of \
                 the input's sides divided by a stride"
            ));
        }
        let conv = b.scoped("shortcut", |b| {
            Conv::declare(b, input, output.channels, 1, stride, 0, true)
        })?;
        Ok(Self {
            branch,
            shortcut: Some(conv),
        })
    }
}

impl Layer for Residual {
    fn describe(&self) -> String {
        let shortcut = match &self.shortcut {
            Some(conv) => conv.describe(),
            None => "x".into(),
        };
        format!("{shortcut} + ({})", self.branch.describe())
    }

    fn forward(&self, x: Tensor<4>, pass: &mut Pass) -> Tensor<4> {
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(x.clone(), pass),
            None => x.clone(),
        };
        skip + self.branch.forward(x, pass)
    }

    fn record(&self, x: Tensor<4>, params: &[Tensor<1>]) -> (Tensor<4>, Box<dyn Recorded>) {
        let (skip, shortcut) = match &self.shortcut {
            Some(conv) => {
                let (y, record) = conv.record(x.clone(), params);
                (y, Some(record))
            }
            None => (x.clone(), None),
        };
        let (y, branch) = self.branch.record(x, params);
        (skip + y, Box::new(ResidualRecord { branch, shortcut }))
    }
}

struct ResidualRecord {
    branch: Box<dyn Recorded>,
    /// None: the identity.
    shortcut: Option<Box<dyn Recorded>>,
}

impl Recorded for ResidualRecord {
    fn vjp(
        &self,
        params: &[Tensor<1>],
        dy: Tensor<4>,
        grads: &mut Gradients,
        need_input: bool,
    ) -> Option<Tensor<4>> {
        let through_branch = self.branch.vjp(params, dy.clone(), grads, need_input);
        let through_shortcut = match &self.shortcut {
            Some(record) => record.vjp(params, dy, grads, need_input),
            None => need_input.then_some(dy),
        };
        add_tangents(through_branch, through_shortcut)
    }

    fn jvp(
        &self,
        params: &[Tensor<1>],
        tangents: &[Tensor<1>],
        dx: Option<Tensor<4>>,
    ) -> Option<Tensor<4>> {
        let through_branch = self.branch.jvp(params, tangents, dx.clone());
        let through_shortcut = match &self.shortcut {
            Some(record) => record.jvp(params, tangents, dx),
            None => dx,
        };
        add_tangents(through_branch, through_shortcut)
    }

    fn batch_stats(&self, stats: &mut Vec<BatchStats>) {
        self.branch.batch_stats(stats);
        if let Some(record) = &self.shortcut {
            record.batch_stats(stats);
        }
    }
}
