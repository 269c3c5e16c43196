//! The damped inverse of Kronecker-factored curvature, as CG's preconditioner.
//!
//! With `inputs = Q_A diag(s_A) Q_A^T` and `outputs = Q_G diag(s_G) Q_G^T`, the block
//! `inputs ⊗ outputs + lambda I` has the eigenvectors `Q_A ⊗ Q_G` and the eigenvalues
//! `s_G s_A^T + lambda`, so its inverse on a `[out, in]` matrix `V` is exact and cheap:
//! `Q_G ((Q_G^T V Q_A) / (s_G s_A^T + lambda)) Q_A^T`. The eigendecompositions are made once
//! per refresh of the factors, on the host in f64 (faer); any damping is then one division,
//! so the Levenberg-Marquardt lambda may change every step without refactoring (Martens and
//! Grosse 2015 instead damp each factor, "factored Tikhonov", which is an approximation).

use burn::prelude::*;
use burn::tensor::TensorData;
use faer::{Mat, Side};

use super::factors::{Block, KroneckerFactors};
use crate::optim::cg::Preconditioner;

/// One block's eigendecompositions, on the device.
struct BlockEigen {
    block: Block,
    input_vectors: Tensor<2>,
    /// `[1, in (+1)]`, clamped at zero (rounding makes tiny negative ones).
    input_values: Tensor<2>,
    output_vectors: Tensor<2>,
    /// `[out, 1]`.
    output_values: Tensor<2>,
}

/// The eigendecompositions of every block's factors, and the diagonal for the rest.
pub struct KroneckerEigen {
    blocks: Vec<BlockEigen>,
    diagonal: Tensor<1>,
}

impl KroneckerEigen {
    /// Eigendecomposes every factor of `factors` (on the host, in f64).
    pub fn of(factors: &KroneckerFactors) -> Self {
        let blocks = factors
            .blocks
            .iter()
            .map(|block| {
                let (input_vectors, input_values) = symmetric_eigen(&block.inputs);
                let (output_vectors, output_values) = symmetric_eigen(&block.outputs);
                let (a, g) = (input_values.dims()[0], output_values.dims()[0]);
                BlockEigen {
                    block: block.clone(),
                    input_vectors,
                    input_values: input_values.reshape([1, a]),
                    output_vectors,
                    output_values: output_values.reshape([g, 1]),
                }
            })
            .collect();
        Self {
            blocks,
            diagonal: factors.diagonal.clone().clamp_min(0.0),
        }
    }

    /// `(C + damping I)^-1` for the Kronecker-factored `C`.
    pub fn preconditioner(&self, damping: f64) -> KroneckerPreconditioner<'_> {
        KroneckerPreconditioner {
            eigen: self,
            damping,
        }
    }
}

/// The eigenvectors (as columns) and eigenvalues (clamped at zero) of a symmetric matrix,
/// in its dtype on its device.
fn symmetric_eigen(matrix: &Tensor<2>) -> (Tensor<2>, Tensor<1>) {
    let [n, _] = matrix.dims();
    let values: Vec<f64> = matrix.to_data().iter::<f64>().collect();
    let host = Mat::<f64>::from_fn(n, n, |i, j| 0.5 * (values[i * n + j] + values[j * n + i]));
    let (vectors, eigenvalues) = match host.self_adjoint_eigen(Side::Lower) {
        Ok(eigen) => {
            let u = eigen.U();
            let vectors: Vec<f64> = (0..n * n).map(|k| u[(k / n, k % n)]).collect();
            let s = eigen.S().column_vector();
            let eigenvalues: Vec<f64> = (0..n).map(|i| s[i].max(0.0)).collect();
            (vectors, eigenvalues)
        }
        // No convergence (NaN in the factors): the identity, with no curvature, so the
        // preconditioner falls back to 1 / damping there.
        Err(_) => (
            (0..n * n)
                .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
                .collect(),
            vec![0.0; n],
        ),
    };
    let device = matrix.device();
    let dtype = matrix.dtype();
    (
        Tensor::<2>::from_data(TensorData::new(vectors, [n, n]), &device).cast(dtype),
        Tensor::<1>::from_data(TensorData::new(eigenvalues, [n]), &device).cast(dtype),
    )
}

/// `(C + damping I)^-1 r` for Kronecker-factored `C`: exact on each block, the diagonal
/// elsewhere.
pub struct KroneckerPreconditioner<'a> {
    eigen: &'a KroneckerEigen,
    damping: f64,
}

impl Preconditioner for KroneckerPreconditioner<'_> {
    fn apply(&self, r: &Tensor<1>) -> Tensor<1> {
        let rest = r.clone() / self.eigen.diagonal.clone().add_scalar(self.damping);
        let mut pieces: Vec<(usize, Tensor<1>)> = Vec::new();
        for b in &self.eigen.blocks {
            let block = &b.block;
            let [out, inputs] = block.weight_dims();
            let weight = r.clone().slice(block.weight.clone()).reshape([out, inputs]);
            let v = match &block.bias {
                Some(bias) => Tensor::cat(
                    vec![weight, r.clone().slice(bias.clone()).reshape([out, 1])],
                    1,
                ),
                None => weight,
            };
            let rotated = b
                .output_vectors
                .clone()
                .transpose()
                .matmul(v)
                .matmul(b.input_vectors.clone());
            let scales =
                (b.output_values.clone() * b.input_values.clone()).add_scalar(self.damping);
            let solved = b
                .output_vectors
                .clone()
                .matmul(rotated / scales)
                .matmul(b.input_vectors.clone().transpose());
            let weight_part = solved.clone().slice([0..out, 0..inputs]);
            pieces.push((block.weight.start, weight_part.reshape([out * inputs])));
            if let Some(bias) = &block.bias {
                let bias_part = solved.slice([0..out, inputs..inputs + 1]);
                pieces.push((bias.start, bias_part.reshape([out])));
            }
        }
        assemble(rest, pieces)
    }
}

/// `base` with the `pieces` (each at its offset) in place of its values there.
fn assemble(base: Tensor<1>, mut pieces: Vec<(usize, Tensor<1>)>) -> Tensor<1> {
    if pieces.is_empty() {
        return base;
    }
    pieces.sort_by_key(|(start, _)| *start);
    let total = base.dims()[0];
    let mut parts = Vec::new();
    let mut at = 0;
    for (start, piece) in pieces {
        if start > at {
            parts.push(base.clone().slice(at..start));
        }
        at = start + piece.dims()[0];
        parts.push(piece);
    }
    if at < total {
        parts.push(base.slice(at..total));
    }
    Tensor::cat(parts, 0)
}
