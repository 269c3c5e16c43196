//! The curvature of a network a researcher can read: the top eigenvalues of the Hessian or
//! the Gauss-Newton matrix (Lanczos with full reorthogonalisation, each with its residual
//! norm), the trace (Hutchinson) and the spectral density (stochastic Lanczos quadrature),
//! for the whole model or one parameter block at a time (`hftrain spectrum`).
//!
//! Everything here is written against `LinearOperator`, so the same code runs on a dense
//! matrix (the tests) and on a network's curvature products. The curvature over several
//! batches is the average of the per-batch products, as PyHessian computes it.

pub mod hutchinson;
pub mod lanczos;
pub mod slq;
pub mod tridiagonal;

use std::ops::Range;

use anyhow::{Result, bail};
use burn::prelude::*;

use crate::curvature::{Batch, CurvatureKind, NetworkObjective};
use crate::data::batcher::{HostBatch, Transform};
use crate::optim::cg::LinearOperator;
use crate::params::{Layout, from_host};
use crate::support::rng::Rng;

pub use hutchinson::{TraceEstimate, hutchinson};
pub use lanczos::{Eigenpair, LanczosStop, TopEigen, TopSettings, top_eigenpairs};
pub use slq::{Density, SlqSettings, slq};

/// A dense symmetric matrix as an operator (for tests and small problems).
pub struct DenseOperator {
    matrix: Tensor<2>,
}

impl DenseOperator {
    /// `values` row-major, `n x n`.
    pub fn new(values: Vec<f64>, n: usize, device: &Device) -> Self {
        assert_eq!(values.len(), n * n, "a {n} x {n} matrix");
        Self {
            matrix: Tensor::from_data(burn::tensor::TensorData::new(values, [n, n]), device),
        }
    }
}

impl LinearOperator for DenseOperator {
    fn apply(&self, v: &Tensor<1>) -> Tensor<1> {
        let n = v.dims()[0];
        self.matrix
            .clone()
            .matmul(v.clone().reshape([n, 1]))
            .reshape([n])
    }
}

/// The mean of several operators: the curvature over several batches, each product the
/// average of the per-batch products.
pub struct Average<'a> {
    pub parts: Vec<Box<dyn LinearOperator + 'a>>,
}

impl LinearOperator for Average<'_> {
    fn apply(&self, v: &Tensor<1>) -> Tensor<1> {
        let sum = self
            .parts
            .iter()
            .map(|p| p.apply(v))
            .reduce(|a, b| a + b)
            .expect("an average of at least one operator");
        sum.div_scalar(self.parts.len() as f64)
    }
}

/// `P C P` for the mask `P` of one parameter block: on vectors inside the block, the block's
/// diagonal block of `C`.
pub struct Restricted<'a> {
    pub inner: &'a dyn LinearOperator,
    pub mask: Tensor<1>,
}

impl LinearOperator for Restricted<'_> {
    fn apply(&self, v: &Tensor<1>) -> Tensor<1> {
        self.inner.apply(&(v.clone() * self.mask.clone())) * self.mask.clone()
    }
}

/// Calls `tick(cost)` after each product of `inner` (for a progress bar), where one product
/// of `inner` costs `cost` per-batch products.
pub struct Counted<'a> {
    pub inner: &'a dyn LinearOperator,
    pub cost: usize,
    pub tick: &'a dyn Fn(usize),
}

impl LinearOperator for Counted<'_> {
    fn apply(&self, v: &Tensor<1>) -> Tensor<1> {
        let out = self.inner.apply(v);
        (self.tick)(self.cost);
        out
    }
}

/// A vector of independent +1/-1 entries drawn on the host from `(seed, labels)`.
pub fn rademacher(len: usize, seed: u64, labels: &[u64], device: &Device) -> Tensor<1> {
    let mut rng = Rng::derive(seed, labels);
    let mut values = Vec::with_capacity(len);
    while values.len() < len {
        let bits = rng.next_u64();
        for b in 0..64.min(len - values.len()) {
            values.push(if (bits >> b) & 1 == 1 { 1.0 } else { -1.0 });
        }
    }
    from_host(values, device)
}

/// A parameter block: the tensors of one layer (a convolution's weight and bias, a batch
/// norm's scale and shift), named by their common prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub name: String,
    pub ranges: Vec<Range<usize>>,
}

impl Block {
    pub fn len(&self) -> usize {
        self.ranges.iter().map(|r| r.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// 1 inside the block, 0 elsewhere, over a vector of `total` entries.
    pub fn mask(&self, total: usize, device: &Device) -> Tensor<1> {
        let mut mask = vec![0f32; total];
        for r in &self.ranges {
            mask[r.clone()].fill(1.0);
        }
        from_host(mask, device)
    }
}

/// The layout's tensors grouped by layer: entries whose names differ only in the last part
/// (`stages.0.layers.0.weight`, `...bias`) form one block, in layout order.
pub fn layer_blocks(layout: &Layout) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for e in layout.entries() {
        let name = e
            .name
            .rsplit_once('.')
            .map_or(e.name.as_str(), |(prefix, _)| prefix);
        let range = e.offset..e.offset + e.len();
        match blocks.iter_mut().find(|b| b.name == name) {
            Some(block) => block.ranges.push(range),
            None => blocks.push(Block {
                name: name.to_string(),
                ranges: vec![range],
            }),
        }
    }
    blocks
}

/// One curvature operator per batch at `params`. Gauss-Newton operators record their
/// forward pass once and keep it (memory for every batch at once); Hessian products redo it.
pub fn batch_operators<'a>(
    objective: &'a NetworkObjective<'a>,
    kind: CurvatureKind,
    params: &Tensor<1>,
    batches: &'a [Batch],
) -> Vec<Box<dyn LinearOperator + 'a>> {
    batches
        .iter()
        .map(|b| objective.curvature(kind, params, b))
        .collect()
}

/// What the training loop asks for every `train.spectrum_every` epochs.
#[derive(Debug, Clone, PartialEq)]
pub struct SharpnessSettings {
    /// Lanczos steps at most for the top eigenvalue.
    pub max_steps: usize,
    /// Relative residual at which the top eigenvalue counts as found.
    pub tolerance: f64,
    /// Rademacher vectors for the trace (0: no trace).
    pub trace_samples: usize,
    pub seed: u64,
}

impl Default for SharpnessSettings {
    fn default() -> Self {
        Self {
            max_steps: 50,
            tolerance: 1e-3,
            trace_samples: 10,
            seed: 0,
        }
    }
}

/// The top eigenvalue and the trace of the curvature averaged over some batches.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sharpness {
    pub top_eigenvalue: f64,
    /// `||C v - lambda v||` of its unit eigenvector (Lanczos' estimate).
    pub residual: f64,
    pub lanczos_steps: usize,
    pub trace: Option<TraceEstimate>,
    /// Per-batch products made.
    pub products: usize,
}

/// The sharpness at `params`: the top eigenvalue (by Lanczos) and the trace (Hutchinson)
/// of `kind`'s matrix of `objective`, averaged over `batches` (at least one). Batch norm
/// is in training mode (each batch's statistics, as `NetworkObjective` computes), so the running
/// statistics in the buffers do not enter.
pub fn sharpness(
    objective: &NetworkObjective,
    kind: CurvatureKind,
    params: &Tensor<1>,
    batches: &[Batch],
    settings: &SharpnessSettings,
) -> Sharpness {
    assert!(!batches.is_empty(), "sharpness needs at least one batch");
    let device = params.device();
    let n = params.dims()[0];
    let average = Average {
        parts: batch_operators(objective, kind, params, batches),
    };
    let top = top_eigenpairs(
        &average,
        &rademacher(n, settings.seed, &[STREAM_LANCZOS, 0], &device),
        n,
        &TopSettings {
            count: 1,
            max_steps: settings.max_steps,
            tolerance: settings.tolerance,
            explicit_residuals: false,
        },
    );
    let trace = (settings.trace_samples > 0).then(|| {
        hutchinson(&average, settings.trace_samples, |i| {
            rademacher(n, settings.seed, &[STREAM_TRACE, 0, i as u64], &device)
        })
    });
    let pair = top.pairs.first();
    Sharpness {
        top_eigenvalue: pair.map_or(f64::NAN, |p| p.value),
        residual: pair.map_or(f64::NAN, |p| p.residual),
        lanczos_steps: top.steps,
        trace,
        products: (top.products + settings.trace_samples) * batches.len(),
    }
}

/// Labels of the random streams (`Rng::derive(seed, [stream, ...])`).
pub(crate) const STREAM_BATCHES: u64 = 0x5EC0;
pub(crate) const STREAM_LANCZOS: u64 = 0x5EC1;
pub(crate) const STREAM_TRACE: u64 = 0x5EC2;
pub(crate) const STREAM_DENSITY: u64 = 0x5EC3;

/// The fixed batches: the training split in the order of a shuffle seeded by `seed`, cut
/// into `count` batches of `size`, without augmentation (the same for the same data and
/// seed, on every machine).
pub fn fixed_batches(
    data: &crate::data::Dataset,
    transform: &Transform,
    count: usize,
    size: usize,
    seed: u64,
    device: &Device,
) -> Result<Vec<Batch>> {
    let images = count.saturating_mul(size);
    if images > data.len() {
        bail!(
            "{count} batches of {size} images = {images} images, but the training split has {}",
            data.len()
        );
    }
    let mut order: Vec<usize> = (0..data.len()).collect();
    Rng::derive(seed, &[STREAM_BATCHES]).shuffle(&mut order);
    Ok(order
        .chunks_exact(size)
        .take(count)
        .map(|indices| {
            let (images, labels) =
                HostBatch::assemble(data, indices, transform, None).to_device(device);
            Batch { images, labels }
        })
        .collect())
}
