//! Kronecker factors of the curvature, one pair per weight layer, and a diagonal for the
//! parameters no pair covers (batch norm's, for instance): what the network's backward
//! passes collect (`NetworkObjective::kronecker_factors`), blended over refreshes and kept in
//! checkpoints.

use std::ops::Range;

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// One weight layer's block of the curvature, approximated by `inputs ⊗ outputs`: on the
/// layer's parameters as a `[out, in (+1)]` matrix `V` (the weight as `[out, in]`, the bias
/// as a last column) the block acts as `outputs V inputs`.
#[derive(Debug, Clone)]
pub struct Block {
    /// Where the weight (`[out, in...]`, row-major) and the bias lie in the flat vector.
    pub weight: Range<usize>,
    pub bias: Option<Range<usize>>,
    /// `[in (+1), in (+1)]`.
    pub inputs: Tensor<2>,
    /// `[out, out]`.
    pub outputs: Tensor<2>,
}

impl Block {
    /// `out` and `in` (without the bias column) of the weight as a matrix.
    pub fn weight_dims(&self) -> [usize; 2] {
        let out = self.outputs.dims()[0];
        [out, self.weight.len() / out]
    }
}

/// The factors of every weight layer, and the curvature's diagonal (used where no block
/// covers a parameter).
#[derive(Debug, Clone)]
pub struct KroneckerFactors {
    pub blocks: Vec<Block>,
    pub diagonal: Tensor<1>,
}

/// The factors' shapes, as a checkpoint's optimizer scalars keep them (the values go in its
/// vectors, in `flatten`'s order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactorShapes {
    /// Per block: the weight's and the bias's ranges, and the sides of `inputs` and `outputs`.
    blocks: Vec<BlockShape>,
    diagonal: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BlockShape {
    weight: [usize; 2],
    bias: Option<[usize; 2]>,
    inputs: usize,
    outputs: usize,
}

impl FactorShapes {
    /// Values `flatten` gives for factors of these shapes.
    fn values(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| b.inputs * b.inputs + b.outputs * b.outputs)
            .sum::<usize>()
            + self.diagonal
    }
}

impl KroneckerFactors {
    /// `decay * previous + (1 - decay) * self`, block by block: K-FAC's running estimate
    /// (Martens and Grosse 2015, section 5), over the curvature batches of several refreshes.
    pub fn blended(self, previous: Option<&KroneckerFactors>, decay: f64) -> KroneckerFactors {
        let Some(previous) = previous.filter(|_| decay > 0.0) else {
            return self;
        };
        let mix2 = |old: &Tensor<2>, new: Tensor<2>| {
            old.clone().mul_scalar(decay) + new.mul_scalar(1.0 - decay)
        };
        let blocks = self
            .blocks
            .into_iter()
            .zip(&previous.blocks)
            .map(|(new, old)| Block {
                inputs: mix2(&old.inputs, new.inputs),
                outputs: mix2(&old.outputs, new.outputs),
                ..new
            })
            .collect();
        let diagonal =
            previous.diagonal.clone().mul_scalar(decay) + self.diagonal.mul_scalar(1.0 - decay);
        KroneckerFactors { blocks, diagonal }
    }

    /// The shapes and every value in one vector (each block's inputs, then its outputs, then
    /// the diagonal), for a checkpoint.
    pub fn flatten(&self) -> (FactorShapes, Tensor<1>) {
        let shapes = FactorShapes {
            blocks: self
                .blocks
                .iter()
                .map(|b| BlockShape {
                    weight: [b.weight.start, b.weight.end],
                    bias: b.bias.as_ref().map(|r| [r.start, r.end]),
                    inputs: b.inputs.dims()[0],
                    outputs: b.outputs.dims()[0],
                })
                .collect(),
            diagonal: self.diagonal.dims()[0],
        };
        let mut parts: Vec<Tensor<1>> = Vec::new();
        for b in &self.blocks {
            parts.push(flat(&b.inputs));
            parts.push(flat(&b.outputs));
        }
        parts.push(self.diagonal.clone());
        (shapes, Tensor::cat(parts, 0))
    }

    /// The factors `flatten` gave `shapes` and `values` for, checked against the model's
    /// `parameters`.
    pub fn unflatten(
        shapes: &FactorShapes,
        values: Tensor<1>,
        parameters: usize,
    ) -> Result<KroneckerFactors> {
        if values.dims()[0] != shapes.values() || shapes.diagonal != parameters {
            bail!(
                "the checkpoint's Kronecker factors hold {} values for {} parameters; this \
                 model has {parameters} parameters, and such factors {} values",
                values.dims()[0],
                shapes.diagonal,
                shapes.values()
            );
        }
        let within = |r: [usize; 2]| r[0] < r[1] && r[1] <= parameters;
        let mut blocks = Vec::new();
        let mut at = 0;
        let mut take = |side: usize| {
            let part = values
                .clone()
                .slice(at..at + side * side)
                .reshape([side, side]);
            at += side * side;
            part
        };
        for b in &shapes.blocks {
            let weight_ok = within(b.weight) && (b.weight[1] - b.weight[0]) % b.outputs.max(1) == 0;
            if !weight_ok || !b.bias.is_none_or(within) {
                bail!("the checkpoint's Kronecker factors name parameters this model lacks");
            }
            blocks.push(Block {
                weight: b.weight[0]..b.weight[1],
                bias: b.bias.map(|r| r[0]..r[1]),
                inputs: take(b.inputs),
                outputs: take(b.outputs),
            });
        }
        let diagonal = values.slice(at..at + shapes.diagonal);
        Ok(KroneckerFactors { blocks, diagonal })
    }
}

fn flat(t: &Tensor<2>) -> Tensor<1> {
    let n = t.shape().num_elements();
    t.clone().reshape([n])
}
