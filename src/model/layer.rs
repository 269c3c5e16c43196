//! The one layer abstraction. A layer is built once from its line in the config (see
//! `layers/mod.rs`), knows where its parameters live in the flat layout, and provides:
//!
//! - `forward`: the plain pass (training or evaluation mode);
//! - `record`: the training-mode pass that keeps what its backward and tangent need, as a
//!   record type of its own that implements [`Recorded`];
//! - on that record, `vjp` (gradients of the input and the parameters, written with ordinary
//!   differentiable Burn ops, so that Burn's autodiff can differentiate it once more: the
//!   double backprop of the Hessian-vector product) and `jvp` (the forward-mode tangent, for
//!   the Gauss-Newton product).
//!
//! A record carries what it needs (indices, shapes, tensors) by value, so no record is ever
//! matched against a layer of another kind, and a layer without `vjp` or `jvp` does not
//! compile. Every activation is a 4-D tensor `[n, c, h, w]`; a vector of features is a
//! `[n, f, 1, 1]` map, so elementwise layers serve both and composites need no case for it.

use burn::prelude::*;

/// Whether batch norm normalises with the batch's statistics (training) or the running ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// What one forward pass reads (the split parameter and buffer vectors, the mode) and what
/// it collects (batch norm's batch statistics, in training mode).
pub struct Pass<'a> {
    pub params: &'a [Tensor<1>],
    pub buffers: &'a [Tensor<1>],
    pub mode: Mode,
    pub stats: Vec<BatchStats>,
}

/// The batch statistics a training forward pass saw, for the running-statistics update.
#[derive(Debug, Clone)]
pub struct BatchStats {
    /// Indices of the layer's running mean and variance in the buffer layout.
    pub running_mean: usize,
    pub running_var: usize,
    pub mean: Tensor<1>,
    /// Biased (population) variance of the batch.
    pub variance: Tensor<1>,
    /// Values per channel the statistics were taken over (for the unbiased correction).
    pub count: usize,
}

/// The shape of one image's activation: `channels x height x width`; a vector of features
/// is `features x 1 x 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Shape {
    pub fn elements(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_vector(&self) -> bool {
        self.height == 1 && self.width == 1
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_vector() {
            write!(f, "a vector of {} features", self.channels)
        } else {
            write!(
                f,
                "a {}x{}x{} feature map",
                self.channels, self.height, self.width
            )
        }
    }
}

pub trait Layer: std::fmt::Debug + Send + Sync {
    /// One line for the model summary, e.g. `conv 3x3 64 -> 128`.
    fn describe(&self) -> String;

    /// The forward pass.
    fn forward(&self, x: Tensor<4>, pass: &mut Pass) -> Tensor<4>;

    /// The training-mode forward pass (batch statistics, never the running ones: curvature
    /// products are taken on the function the optimizer minimises), keeping what `vjp` and
    /// `jvp` need.
    fn record(&self, x: Tensor<4>, params: &[Tensor<1>]) -> (Tensor<4>, Box<dyn Recorded>);
}

/// One layer's recorded forward pass.
pub trait Recorded {
    /// The backward pass: puts the parameters' gradients into `grads` and returns the input's
    /// gradient, unless `need_input` is false (the images have no parameters behind them).
    fn vjp(
        &self,
        params: &[Tensor<1>],
        dy: Tensor<4>,
        grads: &mut Gradients,
        need_input: bool,
    ) -> Option<Tensor<4>>;

    /// The output's tangent for parameter tangents `tangents` and input tangent `dx`, or None
    /// when it is zero (no input tangent and no parameters).
    fn jvp(
        &self,
        params: &[Tensor<1>],
        tangents: &[Tensor<1>],
        dx: Option<Tensor<4>>,
    ) -> Option<Tensor<4>>;

    /// Batch norm's batch statistics of this pass, in the order of the layers.
    fn batch_stats(&self, stats: &mut Vec<BatchStats>);
}

/// The parameter gradients one backward pass collects, in layout order; with `squares`,
/// also the sums of squared per-position gradients (see `wants_squares`); with `factors`,
/// each weight layer's Kronecker factors (see `wants_factors`).
pub struct Gradients {
    values: Vec<Option<Tensor<1>>>,
    squares: Option<Vec<Option<Tensor<1>>>>,
    factors: Option<FactorRequest>,
    batch: f64,
}

/// What a backward pass collects for K-FAC (Martens and Grosse 2015) and KFC (Grosse and
/// Martens 2016): per linear or convolution layer, the second moment of its inputs (the
/// patches for a convolution, a trailing 1 where it has a bias) and of the gradients of its
/// outputs.
struct FactorRequest {
    /// Whether the layers also give their inputs' moment: it does not depend on the
    /// backward pass, so one of several passes on a record is enough.
    inputs: bool,
    found: Vec<LayerFactors>,
}

/// One weight layer's Kronecker factors from one backward pass: its block of the curvature
/// is approximated by `inputs ⊗ outputs`, acting on the gradient as a `[out, in (+1)]`
/// matrix `V` (the weight, and the bias as a last column) as `outputs V inputs`.
pub struct LayerFactors {
    /// Indices of the weight and bias in the parameter layout.
    pub weight: usize,
    pub bias: Option<usize>,
    /// `E_n[sum_t a_t a_t^T]` over examples n and output positions t, `[in (+1), in (+1)]`
    /// (None when the request did not ask for inputs).
    pub inputs: Option<Tensor<2>>,
    /// `sum_n sum_t ds_t ds_t^T / (n |T|)` for the output gradients `ds` of this pass,
    /// `[out, out]`.
    pub outputs: Tensor<2>,
}

/// The Kronecker factors of a layer from its inputs as rows `[n |T|, in]` (one row per
/// example and output position), the output gradients as rows `[n |T|, out]`, `n`
/// examples, and whether it has a bias (a trailing 1 on every input row).
pub fn kronecker_factors(
    rows: Option<Tensor<2>>,
    output_rows: Tensor<2>,
    examples: usize,
    bias: bool,
) -> (Option<Tensor<2>>, Tensor<2>) {
    let positions = output_rows.dims()[0] as f64;
    let outputs = output_rows
        .clone()
        .transpose()
        .matmul(output_rows)
        .div_scalar(positions);
    let inputs = rows.map(|rows| {
        let rows = match bias {
            true => {
                let ones = Tensor::ones([rows.dims()[0], 1], &rows.device());
                Tensor::cat(vec![rows, ones], 1)
            }
            false => rows,
        };
        rows.clone()
            .transpose()
            .matmul(rows)
            .div_scalar(examples as f64)
    });
    (inputs, outputs)
}

impl Gradients {
    /// Room for `count` parameter tensors of a backward pass over `batch` examples.
    pub fn new(count: usize, squares: bool, batch: usize) -> Self {
        Self {
            values: vec![None; count],
            squares: squares.then(|| vec![None; count]),
            factors: None,
            batch: batch as f64,
        }
    }

    /// Also collects each weight layer's Kronecker factors, with the inputs' where `inputs`.
    pub fn with_factors(mut self, inputs: bool) -> Self {
        self.factors = Some(FactorRequest {
            inputs,
            found: Vec::new(),
        });
        self
    }

    /// Whether the backward pass collects Kronecker factors, and if so whether with the
    /// inputs' moments (`Some(true)`).
    pub fn wants_factors(&self) -> Option<bool> {
        self.factors.as_ref().map(|f| f.inputs)
    }

    pub fn put_factors(&mut self, factors: LayerFactors) {
        if let Some(request) = &mut self.factors {
            request.found.push(factors);
        }
    }

    /// The Kronecker factors collected, in the order the layers gave them.
    pub fn take_factors(&mut self) -> Vec<LayerFactors> {
        self.factors
            .as_mut()
            .map(|f| std::mem::take(&mut f.found))
            .unwrap_or_default()
    }

    pub fn put<const D: usize>(&mut self, index: usize, gradient: Tensor<D>) {
        self.values[index] = Some(flatten(gradient));
    }

    /// Whether the backward pass also wants, per parameter, the sum over examples and
    /// positions of the squared per-position gradients: the diagonal the Hessian-free
    /// preconditioner needs (exact for linear layers; for convolutions and batch norm it
    /// counts each position as its own example, the usual cheap approximation). Layers get it
    /// by taking their parameter-gradient products of squared inputs and output gradients.
    pub fn wants_squares(&self) -> bool {
        self.squares.is_some()
    }

    pub fn put_square<const D: usize>(&mut self, index: usize, square: Tensor<D>) {
        if let Some(squares) = &mut self.squares {
            // The mean loss scales each example's gradient by 1/n; its square by 1/n^2.
            squares[index] = Some(flatten(square).mul_scalar(self.batch));
        }
    }

    /// The gradients (zero for a parameter no layer reached) and the squares if asked for.
    pub fn finish(self, params: &[Tensor<1>]) -> (Vec<Tensor<1>>, Option<Vec<Tensor<1>>>) {
        let fill = |parts: Vec<Option<Tensor<1>>>| -> Vec<Tensor<1>> {
            parts
                .into_iter()
                .zip(params)
                .map(|(g, p)| g.unwrap_or_else(|| p.zeros_like()))
                .collect()
        };
        (fill(self.values), self.squares.map(fill))
    }
}

/// A tensor as one flat vector.
pub fn flatten<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n = t.shape().num_elements();
    t.reshape([n])
}

/// A parameter tensor of the flat layout in its own shape.
pub fn reshape<const D: usize>(flat: &Tensor<1>, shape: [usize; D]) -> Tensor<D> {
    flat.clone().reshape(shape)
}

/// Per-channel mean of a feature map, kept as `[1, c, 1, 1]` for broadcasting.
pub fn channel_mean(x: Tensor<4>) -> Tensor<4> {
    x.mean_dims(&[0, 2, 3])
}

/// Per-channel sum of a feature map, as `[c]`.
pub fn channel_sum(x: Tensor<4>) -> Tensor<1> {
    let c = x.dims()[1];
    x.sum_dims(&[0, 2, 3]).reshape([c])
}

/// A `[c]` vector as `[1, c, 1, 1]`.
pub fn per_channel(v: Tensor<1>) -> Tensor<4> {
    let c = v.dims()[0];
    v.reshape([1, c, 1, 1])
}

/// The sum of two tangents, either of which may be zero (None).
pub fn add_tangents(a: Option<Tensor<4>>, b: Option<Tensor<4>>) -> Option<Tensor<4>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}
