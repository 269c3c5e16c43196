//! What an optimizer may ask of the model on a batch: the loss, the gradient and curvature
//! products. Optimizers see the network only through this module, so SGD, Adam and
//! Hessian-free share one training loop.
//!
//! Two gradients live here. `loss_and_gradient` is Burn's own autodiff (the first-order
//! path, and the reference the tests hold our backprop to). `NetworkObjective::gradient` is our
//! own backprop through the layers' `vjp`, which is what makes the exact Hessian-vector
//! product possible: built on autodiff leaves, that gradient is itself a tracked expression,
//! and Burn's autodiff of `<g(theta), v>` is `H v` (Burn has first-order autodiff only: the first backprop is ours).

use std::cell::{OnceCell, RefCell};

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use crate::model::loss::{cross_entropy_gradient, cross_entropy_hessian_product};
use crate::model::{BatchStats, LayerFactors, Mode, Network, Tape, correct_count, cross_entropy};
pub use crate::optim::CurvatureKind;
use crate::optim::cg::LinearOperator;
use crate::optim::kronecker::{Block, KroneckerFactors};
use crate::optim::{self, Gradient, OptimizerConfig, Problem};
use crate::precision::{Arithmetic, LossAndGradientOf, MixedPrecision, first_order_gradient};

/// One batch's loss and gradient, with what the training loop reports and updates.
pub struct LossAndGradient {
    /// Mean loss of the batch (one element, no autodiff).
    pub loss: Tensor<1>,
    /// Flat gradient of the loss with respect to the flat parameters (no autodiff).
    pub gradient: Tensor<1>,
    /// Correct top-1 predictions in the batch (one element).
    pub correct: Tensor<1, Int>,
    /// Batch-norm statistics, for the running-statistics update.
    pub stats: Vec<BatchStats>,
}

impl LossAndGradientOf for LossAndGradient {
    fn loss(&self) -> &Tensor<1> {
        &self.loss
    }

    fn gradient(&self) -> &Tensor<1> {
        &self.gradient
    }
}

/// Loss and gradient by Burn's autodiff (the first-order path), in `arithmetic` (see
/// `precision.rs`: the network on low-precision copies of the parameters and images, the loss
/// in the parameters' dtype).
///
/// Each parameter tensor is sliced from the flat vector *before* it is marked as a leaf, so
/// the backward pass writes each gradient into its own tensor instead of scattering every
/// slice's gradient into a zero vector of the full length.
pub fn loss_and_gradient(
    network: &Network,
    params: &Tensor<1>,
    buffers: &Tensor<1>,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    label_smoothing: f32,
    arithmetic: Arithmetic,
) -> LossAndGradient {
    let leaves = autodiff_leaves(network, params);
    let lowered: Vec<Tensor<1>> = leaves.iter().map(|l| arithmetic.lower(l.clone())).collect();
    // Training mode reads no buffer: they stay as they are.
    let buffer_parts = network.buffers.split(buffers);
    let out = network.forward(
        arithmetic.lower(images),
        &lowered,
        &buffer_parts,
        Mode::Train,
    );
    let logits = arithmetic.raise(out.logits, params.dtype());
    let correct = correct_count(logits.clone().detach().inner(), labels.clone());
    let loss = cross_entropy(logits, labels, label_smoothing);
    let grads = scaled(loss.clone(), arithmetic.loss_scale).backward();
    let gradient = leaf_gradients(network, &leaves, &grads);
    LossAndGradient {
        loss: loss.detach().inner(),
        gradient: unscaled(gradient, arithmetic.loss_scale),
        correct,
        stats: out.stats,
    }
}

/// `t * scale`; `t` itself at scale 1 (the f32 path's arithmetic unchanged).
fn scaled<const D: usize>(t: Tensor<D>, scale: f32) -> Tensor<D> {
    if scale == 1.0 { t } else { t.mul_scalar(scale) }
}

/// `t / scale`; `t` itself at scale 1.
fn unscaled<const D: usize>(t: Tensor<D>, scale: f32) -> Tensor<D> {
    if scale == 1.0 { t } else { t.div_scalar(scale) }
}

fn autodiff_leaves(network: &Network, params: &Tensor<1>) -> Vec<Tensor<1>> {
    network
        .params
        .split(params)
        .into_iter()
        .map(|p| p.autodiff().require_grad())
        .collect()
}

fn leaf_gradients(
    network: &Network,
    leaves: &[Tensor<1>],
    grads: &burn::tensor::Gradients,
) -> Tensor<1> {
    let parts = leaves
        .iter()
        .map(|leaf| {
            leaf.grad(grads)
                .unwrap_or_else(|| leaf.clone().inner().zeros_like())
        })
        .collect();
    network.params.join(parts)
}

/// A batch of images and labels on the device.
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Tensor<4>,
    pub labels: Tensor<1, Int>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` examples (all of them if `n` is at least the batch size). The training
    /// loop's batches are shuffled, so this is a random subset.
    pub fn head(&self, n: usize) -> Batch {
        if n >= self.len() {
            return self.clone();
        }
        Batch {
            images: self.images.clone().slice(0..n),
            labels: self.labels.clone().slice(0..n),
        }
    }
}

/// What one gradient evaluation of a `NetworkObjective` gives.
pub struct ObjectiveGradient {
    /// Mean data loss (cross-entropy, without the weight-decay term), one element.
    pub loss: Tensor<1>,
    /// Data loss plus the weight-decay term: the value the optimizer minimises.
    pub value: Tensor<1>,
    /// Gradient of `value`.
    pub gradient: Tensor<1>,
    /// Mean-loss-scaled sums of squared per-position gradients (for the diagonal
    /// preconditioner), when asked for.
    pub squared_gradients: Option<Tensor<1>>,
    pub correct: Tensor<1, Int>,
    pub stats: Vec<BatchStats>,
}

/// The function the Hessian-free optimizer minimises on a batch: mean (label-smoothed)
/// softmax cross-entropy of the network in training mode (batch statistics), plus
/// `weight_decay / 2 * |mask * theta|^2` over the decayed weights. Weight decay enters every
/// product as its exact term, `weight_decay * mask * v`.
pub struct NetworkObjective<'a> {
    pub network: &'a Network,
    pub label_smoothing: f32,
    pub weight_decay: f64,
    /// 1 where weight decay applies (see `Layout::decay_mask`).
    pub decay_mask: Tensor<1>,
}

impl<'a> NetworkObjective<'a> {
    pub fn new(
        network: &'a Network,
        label_smoothing: f32,
        weight_decay: f64,
        device: &Device,
    ) -> Self {
        Self {
            network,
            label_smoothing,
            weight_decay,
            decay_mask: network.params.decay_mask(device),
        }
    }

    /// `weight_decay * mask * v`: the weight-decay term of a gradient or a curvature product.
    fn decay_product(&self, v: &Tensor<1>) -> Tensor<1> {
        v.clone()
            .mul(self.decay_mask.clone())
            .mul_scalar(self.weight_decay)
    }

    /// `weight_decay / 2 * |mask * theta|^2`, one element.
    fn decay_value(&self, params: &Tensor<1>) -> Tensor<1> {
        (params.clone() * self.decay_mask.clone())
            .powi_scalar(2)
            .sum()
            .mul_scalar(0.5 * self.weight_decay)
    }

    /// The objective's value at `params` (one element), e.g. at a trial step.
    pub fn value(&self, params: &Tensor<1>, batch: &Batch) -> Tensor<1> {
        let parts = self.network.params.split(params);
        let out = self
            .network
            .forward(batch.images.clone(), &parts, &[], Mode::Train);
        cross_entropy(out.logits, batch.labels.clone(), self.label_smoothing)
            + self.decay_value(params)
    }

    /// Value and gradient by our own backprop (the layers' `vjp`).
    pub fn gradient(&self, params: &Tensor<1>, batch: &Batch, squared: bool) -> ObjectiveGradient {
        let (out, squares) = self.backprop(params, batch, squared, Arithmetic::FULL);
        ObjectiveGradient {
            value: out.loss.clone() + self.decay_value(params),
            loss: out.loss,
            gradient: out.gradient + self.decay_product(params),
            squared_gradients: squares.map(|s| self.network.params.join(s)),
            correct: out.correct,
            stats: out.stats,
        }
    }

    /// The loss and its gradient by our own backprop, without weight decay, in `arithmetic`:
    /// what [`loss_and_gradient`] gives by Burn's autodiff (first-order optimizers add their
    /// own decay).
    pub fn loss_and_gradient_by_backprop(
        &self,
        params: &Tensor<1>,
        batch: &Batch,
        arithmetic: Arithmetic,
    ) -> LossAndGradient {
        self.backprop(params, batch, false, arithmetic).0
    }

    /// The loss's gradient by the layers' `vjp` in `arithmetic` (see `precision.rs`), and
    /// with `squared` the per-position sums of squared gradients (one tensor per parameter).
    fn backprop(
        &self,
        params: &Tensor<1>,
        batch: &Batch,
        squared: bool,
        arithmetic: Arithmetic,
    ) -> (LossAndGradient, Option<Vec<Tensor<1>>>) {
        debug_assert!(
            !squared || arithmetic == Arithmetic::FULL,
            "squared gradients (Hessian-free's preconditioner) are taken in full precision"
        );
        let network = self.network;
        let parts: Vec<Tensor<1>> = network
            .params
            .split(params)
            .into_iter()
            .map(|p| arithmetic.lower(p))
            .collect();
        let tape = network.forward_recorded(arithmetic.lower(batch.images.clone()), &parts);
        let logits = arithmetic.raise(tape.logits.clone(), params.dtype());
        let d_logits =
            cross_entropy_gradient(logits.clone(), batch.labels.clone(), self.label_smoothing);
        let d_logits = arithmetic.lower(scaled(d_logits, arithmetic.loss_scale));
        let (grads, squares) = network.backprop(&tape, &parts, d_logits, squared);
        // Each part back in the parameters' dtype before they are joined: batch norm's come
        // in f32 already, the others in the low dtype.
        let grads = grads
            .into_iter()
            .map(|g| arithmetic.raise(g, params.dtype()))
            .collect();
        let gradient = network.params.join(grads);
        let out = LossAndGradient {
            loss: cross_entropy(logits.clone(), batch.labels.clone(), self.label_smoothing),
            gradient: unscaled(gradient, arithmetic.loss_scale),
            correct: correct_count(logits, batch.labels.clone()),
            stats: network.recorded_stats(&tape),
        };
        (out, squares)
    }

    /// The exact Hessian-vector product by double backprop: our backprop builds `g(theta)` on
    /// autodiff leaves, and Burn's autodiff of `<g(theta), v>` gives `H v`.
    pub fn hessian_vector(&self, params: &Tensor<1>, batch: &Batch, v: &Tensor<1>) -> Tensor<1> {
        let network = self.network;
        let leaves = autodiff_leaves(network, params);
        let tape = network.forward_recorded(batch.images.clone(), &leaves);
        let d_logits = cross_entropy_gradient(
            tape.logits.clone(),
            batch.labels.clone(),
            self.label_smoothing,
        );
        let (grads, _) = network.backprop(&tape, &leaves, d_logits, false);
        let directional = grads
            .into_iter()
            .zip(network.params.split(v))
            .map(|(g, v)| (g * v).sum())
            .reduce(|a, b| a + b)
            .expect("a network has parameters");
        let second = directional.backward();
        leaf_gradients(network, &leaves, &second) + self.decay_product(v)
    }

    /// The Gauss-Newton operator at `params` on `batch`: records the forward pass once, then
    /// each product is a jvp and a vjp on that record.
    pub fn gauss_newton(&self, params: &Tensor<1>, batch: &Batch) -> GaussNewton<'_> {
        self.gauss_newton_in(params, batch, None)
    }

    /// The same with the network's passes in `low` (bf16 or f16; None: the parameters' own
    /// dtype): the recorded forward pass, each jvp and vjp run on low copies of the weights
    /// and images; the loss's Hessian, the products' sums and the vectors CG sees stay in
    /// the parameters' dtype (as autocast keeps reductions and the optimizer in f32).
    pub fn gauss_newton_in(
        &self,
        params: &Tensor<1>,
        batch: &Batch,
        low: Option<FloatDType>,
    ) -> GaussNewton<'_> {
        let arithmetic = Arithmetic {
            low,
            loss_scale: 1.0,
        };
        let parts: Vec<Tensor<1>> = self
            .network
            .params
            .split(params)
            .into_iter()
            .map(|p| arithmetic.lower(p))
            .collect();
        let tape = self
            .network
            .forward_recorded(arithmetic.lower(batch.images.clone()), &parts);
        let logits = arithmetic.raise(tape.logits.clone(), params.dtype());
        let probabilities = burn::tensor::activation::softmax(logits, 1);
        GaussNewton {
            objective: self,
            params: parts,
            tape,
            probabilities,
            arithmetic,
            dtype: params.dtype(),
        }
    }

    /// The Kronecker factors of the Gauss-Newton matrix on `batch` (without weight decay):
    /// K-FAC's for linear layers, KFC's for convolutions, and the diagonal (per-position
    /// squared gradients) for every parameter. The loss's Hessian per example,
    /// `diag(p) - p p^T`, is the sum over classes k of `r_k r_k^T` with
    /// `r_k = sqrt(p_k) (e_k - p)`: one backward pass per class gives the expectation over
    /// the model's predictive distribution exactly, where K-FAC usually samples one label
    /// (CIFAR-10's 10 classes make it affordable, and a test can compare it with the dense
    /// matrix). With one example and one output position per layer the factors' product is
    /// that layer's block of the Gauss-Newton matrix exactly.
    pub fn kronecker_factors(&self, params: &Tensor<1>, batch: &Batch) -> KroneckerFactors {
        let network = self.network;
        let layout = &network.params;
        let parts = layout.split(params);
        let tape = network.forward_recorded(batch.images.clone(), &parts);
        let probabilities = burn::tensor::activation::softmax(tape.logits.clone(), 1);
        let [n, classes] = probabilities.dims();
        let device = params.device();
        let mut layers: Vec<LayerFactors> = Vec::new();
        let mut squares: Option<Tensor<1>> = None;
        for k in 0..classes {
            let chosen: Tensor<2> = Tensor::<1, Int>::full([n], k as i64, &device)
                .one_hot::<2>(classes)
                .float()
                .cast(probabilities.dtype());
            let p_k = probabilities.clone().slice([0..n, k..k + 1]);
            let root = (chosen - probabilities.clone()) * p_k.sqrt();
            let (found, squared) = network.backprop_factors(&tape, &parts, root, k == 0);
            let squared = layout.join(squared);
            squares = Some(match squares {
                Some(sum) => sum + squared,
                None => squared,
            });
            layers = match layers.is_empty() {
                true => found,
                false => layers
                    .into_iter()
                    .zip(found)
                    .map(|(sum, more)| LayerFactors {
                        outputs: sum.outputs + more.outputs,
                        ..sum
                    })
                    .collect(),
            };
        }
        let range = |index: usize| {
            let entry = layout.entry(index);
            entry.offset..entry.offset + entry.len()
        };
        let blocks = layers
            .into_iter()
            .map(|f| Block {
                weight: range(f.weight),
                bias: f.bias.map(range),
                inputs: f
                    .inputs
                    .expect("the first pass asked for the inputs' moments"),
                outputs: f.outputs,
            })
            .collect();
        // put_square's scale is the mean loss's for a gradient carrying 1/n; these passes
        // carry none, and the Gauss-Newton matrix of the mean loss has 1/n.
        let diagonal = squares
            .expect("a network has classes")
            .div_scalar((n * n) as f64);
        KroneckerFactors { blocks, diagonal }
    }

    /// The curvature operator CG solves with.
    pub fn curvature<'b>(
        &'b self,
        kind: CurvatureKind,
        params: &Tensor<1>,
        batch: &'b Batch,
    ) -> Box<dyn LinearOperator + 'b> {
        match kind {
            CurvatureKind::GaussNewton => Box::new(self.gauss_newton(params, batch)),
            CurvatureKind::Hessian => Box::new(HessianOperator {
                objective: self,
                params: params.clone(),
                batch,
            }),
        }
    }
}

/// `G v = J^T H_L J v + weight_decay * mask * v` on a recorded forward pass.
pub struct GaussNewton<'a> {
    objective: &'a NetworkObjective<'a>,
    /// The parameters, in the dtype the passes run in.
    params: Vec<Tensor<1>>,
    tape: Tape,
    /// The softmax of the logits, in the parameters' dtype.
    probabilities: Tensor<2>,
    arithmetic: Arithmetic,
    /// The parameters' own dtype, which `v` and the product have.
    dtype: DType,
}

impl GaussNewton<'_> {
    pub fn product(&self, v: &Tensor<1>) -> Tensor<1> {
        let network = self.objective.network;
        let a = self.arithmetic;
        if a.low.is_none() {
            let tangents = network.params.split(v);
            let jv = network.tangent(&self.tape, &self.params, &tangents);
            let hjv = cross_entropy_hessian_product(&self.probabilities, jv);
            let (parts, _) = network.backprop(&self.tape, &self.params, hjv, false);
            return network.params.join(parts) + self.objective.decay_product(v);
        }
        // The product is linear in v: v is taken at unit largest entry, so that f16's range
        // (6e-8 to 65504) holds it whatever CG's scale, and the result scaled back. The
        // loss's Hessian carries 1/n: its product is multiplied by a power of two near n
        // before it enters the low dtype (exact, as a loss scale is), and divided after.
        let largest = v.clone().abs().max().clamp_min(f32::MIN_POSITIVE);
        let unit = v.clone() / largest.clone();
        let tangents: Vec<Tensor<1>> = network
            .params
            .split(&unit)
            .into_iter()
            .map(|t| a.lower(t))
            .collect();
        let jv = a.raise(
            network.tangent(&self.tape, &self.params, &tangents),
            self.dtype,
        );
        let n = jv.dims()[0];
        let scale = (n.max(1) as f32).log2().ceil().exp2();
        let hjv = cross_entropy_hessian_product(&self.probabilities, jv).mul_scalar(scale);
        let (parts, _) = network.backprop(&self.tape, &self.params, a.lower(hjv), false);
        let parts = parts.into_iter().map(|p| a.raise(p, self.dtype)).collect();
        let product = network.params.join(parts).div_scalar(scale) * largest;
        product + self.objective.decay_product(v)
    }
}

impl LinearOperator for GaussNewton<'_> {
    fn apply(&self, v: &Tensor<1>) -> Tensor<1> {
        self.product(v)
    }
}

/// `H v` at fixed parameters and batch. Each product redoes the forward pass: Burn's
/// backward consumes its graph, so nothing of one product can serve the next.
struct HessianOperator<'a> {
    objective: &'a NetworkObjective<'a>,
    params: Tensor<1>,
    batch: &'a Batch,
}

impl LinearOperator for HessianOperator<'_> {
    fn apply(&self, v: &Tensor<1>) -> Tensor<1> {
        self.objective.hessian_vector(&self.params, self.batch, v)
    }
}

/// How a batch's curvature products and backtracking values are taken: on the first
/// `curvature_batch_size` (and `backtracking_batch_size`, 0: all) images of the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvatureSampling {
    pub kind: CurvatureKind,
    pub curvature_batch_size: usize,
    pub backtracking_batch_size: usize,
}

impl CurvatureSampling {
    /// The optimizer's settings; for one that asks for no curvature products, Gauss-Newton
    /// (the Kronecker factors' matrix) on its curvature batch, or on the whole batch where
    /// it asks for no curvature at all.
    pub fn of(optimizer: &OptimizerConfig) -> Self {
        match optimizer.hessian_free() {
            Some(h) => Self {
                kind: h.curvature,
                curvature_batch_size: h.curvature_batch_size,
                backtracking_batch_size: h.backtracking_batch_size,
            },
            None => Self {
                kind: CurvatureKind::GaussNewton,
                curvature_batch_size: optimizer.curvature_batch_size().unwrap_or(usize::MAX),
                backtracking_batch_size: 0,
            },
        }
    }
}

/// What the training loop reports of a batch after a step: from the first forward pass at
/// the step's starting parameters, whichever gradient the optimizer asked for.
pub struct BatchOutcome {
    /// Mean data loss of the batch (one element).
    pub loss: Tensor<1>,
    pub correct: Tensor<1, Int>,
    /// Batch-norm statistics, for the running-statistics update.
    pub stats: Vec<BatchStats>,
}

/// The objective on one training batch, as every optimizer sees it (`optim::Objective`):
/// Burn's autodiff gradient of the loss for first-order rules, our backprop's gradient and
/// curvature products on sub-batches for Hessian-free.
pub struct BatchObjective<'a> {
    objective: &'a NetworkObjective<'a>,
    buffers: &'a Tensor<1>,
    batch: Batch,
    sampling: CurvatureSampling,
    /// The sub-batches, sliced on first use.
    curvature_batch: OnceCell<Batch>,
    backtracking_batch: OnceCell<Batch>,
    outcome: RefCell<Option<BatchOutcome>>,
    /// First-order gradients by our backprop instead of Burn's autodiff (`train.gradient`).
    first_order_by_backprop: bool,
    /// First-order gradients in bf16 or f16 (`train.precision`; None: f32).
    mixed_precision: Option<&'a MixedPrecision>,
    /// Called after each curvature product (the training loop's sign of life in a long
    /// Hessian-free step).
    on_product: Option<&'a dyn Fn()>,
}

impl<'a> BatchObjective<'a> {
    pub fn new(
        objective: &'a NetworkObjective<'a>,
        buffers: &'a Tensor<1>,
        batch: Batch,
        sampling: CurvatureSampling,
    ) -> Self {
        Self {
            objective,
            buffers,
            batch,
            sampling,
            curvature_batch: OnceCell::new(),
            backtracking_batch: OnceCell::new(),
            outcome: RefCell::new(None),
            first_order_by_backprop: false,
            mixed_precision: None,
            on_product: None,
        }
    }

    /// Takes first-order gradients (SGD's, Adam's) by our backprop where `by_backprop`, by
    /// Burn's autodiff otherwise (see `GradientRoute`).
    pub fn first_order_by_backprop(self, by_backprop: bool) -> Self {
        Self {
            first_order_by_backprop: by_backprop,
            ..self
        }
    }

    /// Takes first-order gradients, and Gauss-Newton products, in `mixed_precision` (None:
    /// in f32).
    pub fn in_precision(self, mixed_precision: Option<&'a MixedPrecision>) -> Self {
        Self {
            mixed_precision,
            ..self
        }
    }

    /// The first-order loss and gradient in `arithmetic`, by the route `train.gradient` chose.
    fn first_order(&self, params: &Tensor<1>, arithmetic: Arithmetic) -> LossAndGradient {
        if self.first_order_by_backprop {
            self.objective
                .loss_and_gradient_by_backprop(params, &self.batch, arithmetic)
        } else {
            loss_and_gradient(
                self.objective.network,
                params,
                self.buffers,
                self.batch.images.clone(),
                self.batch.labels.clone(),
                self.objective.label_smoothing,
                arithmetic,
            )
        }
    }

    /// Calls `on_product` after every curvature product.
    pub fn watched(self, on_product: &'a dyn Fn()) -> Self {
        Self {
            on_product: Some(on_product),
            ..self
        }
    }

    /// The batch's loss, accuracy and statistics at the step's starting point (None when
    /// the optimizer asked for no gradient).
    pub fn into_outcome(self) -> Option<BatchOutcome> {
        self.outcome.into_inner()
    }

    /// Keeps the first evaluation's outcome: later ones are at trial points.
    fn keep(&self, outcome: impl FnOnce() -> BatchOutcome) {
        let mut kept = self.outcome.borrow_mut();
        if kept.is_none() {
            *kept = Some(outcome());
        }
    }
}

impl Problem for BatchObjective<'_> {
    fn value(&self, params: &Tensor<1>) -> f64 {
        self.objective
            .value(params, &self.batch)
            .into_scalar::<f64>()
    }

    fn backtracking_value(&self, params: &Tensor<1>) -> Option<f64> {
        let size = self.sampling.backtracking_batch_size;
        if size == 0 {
            return None;
        }
        let batch = self
            .backtracking_batch
            .get_or_init(|| self.batch.head(size));
        Some(self.objective.value(params, batch).into_scalar::<f64>())
    }

    fn kronecker_factors(&self, params: &Tensor<1>) -> Option<KroneckerFactors> {
        let size = self.sampling.curvature_batch_size;
        let batch = self.curvature_batch.get_or_init(|| self.batch.head(size));
        Some(self.objective.kronecker_factors(params, batch))
    }

    fn curvature(&self, params: &Tensor<1>) -> Box<dyn LinearOperator + '_> {
        let size = self.sampling.curvature_batch_size;
        let batch = self.curvature_batch.get_or_init(|| self.batch.head(size));
        // `train.precision` below f32 with Gauss-Newton curvature: its products in the low
        // dtype (the config refuses it for the exact Hessian).
        let inner: Box<dyn LinearOperator + '_> = match (self.sampling.kind, self.mixed_precision) {
            (CurvatureKind::GaussNewton, Some(mixed)) => Box::new(self.objective.gauss_newton_in(
                params,
                batch,
                Some(mixed.low()),
            )),
            _ => self.objective.curvature(self.sampling.kind, params, batch),
        };
        match self.on_product {
            Some(on_product) => Box::new(Watched { inner, on_product }),
            None => inner,
        }
    }
}

/// A curvature operator that reports each product.
struct Watched<'a> {
    inner: Box<dyn LinearOperator + 'a>,
    on_product: &'a dyn Fn(),
}

impl LinearOperator for Watched<'_> {
    fn apply(&self, v: &Tensor<1>) -> Tensor<1> {
        let out = self.inner.apply(v);
        (self.on_product)();
        out
    }
}

impl optim::Objective for BatchObjective<'_> {
    fn loss_gradient(&self, params: &Tensor<1>) -> Tensor<1> {
        let out = first_order_gradient(self.mixed_precision, |arithmetic| {
            self.first_order(params, arithmetic)
        });
        self.keep(|| BatchOutcome {
            loss: out.loss,
            correct: out.correct,
            stats: out.stats,
        });
        out.gradient
    }

    fn gradient(&self, params: &Tensor<1>, squared: bool) -> Gradient {
        let out = self.objective.gradient(params, &self.batch, squared);
        let value = out.value.into_scalar::<f64>();
        self.keep(|| BatchOutcome {
            loss: out.loss,
            correct: out.correct,
            stats: out.stats,
        });
        Gradient {
            value,
            gradient: out.gradient,
            squared: out.squared_gradients,
        }
    }
}
