//! Mixed precision for SGD's and Adam's gradient (`train.precision`), as PyTorch's autocast
//! and GradScaler do it: the master weights, the optimizer's state and the loss stay in f32;
//! the network's forward and backward passes run on copies of the weights and images cast to
//! bf16 or f16; the logits come back to f32 for the loss, and the logits' gradient goes down
//! in the low dtype, multiplied by a loss scale so that small gradients survive f16's range.
//! The weights' gradients come back to f32 and are divided by the same scale.
//!
//! f16's loss scale is dynamic (GradScaler's rule): it starts at 2^16, halves when a gradient
//! overflows and doubles after 2000 finite ones in a row. Where GradScaler skips the step
//! whose gradient overflowed, the gradient is taken again at the halved scale, so every step
//! is taken (an overflow costs one more gradient, a few times a run). The scale is a power of
//! two, so scaling and unscaling are exact: it changes a gradient only where f16 would have
//! flushed a value to zero or overflowed. It is not kept in checkpoints: a resumed run starts
//! again at 2^16, comes down to a lower level within a few gradients, and back up to a higher
//! one at GradScaler's pace (a doubling per 2000 finite gradients). A loss that is not finite
//! is not the scale's doing (the forward pass overflowed f16's range, or the run diverged):
//! the gradient is used as it is and the training loop's own check stops the run.
//!
//! Batch norm computes in f32 (see `batch_norm.rs`) and, by our backprop, gives its
//! parameters' gradients in f32 too, as autocast keeps batch norm's parameters; by Burn's
//! autodiff they pass through the low dtype on their way back to the f32 weights.

use std::cell::Cell;

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use crate::config::Precision;

/// What the loss scale reads of a gradient evaluation (`curvature::LossAndGradient`): its
/// loss and its gradient, whose finiteness decide whether it is taken again.
pub trait LossAndGradientOf {
    fn loss(&self) -> &Tensor<1>;
    fn gradient(&self) -> &Tensor<1>;
}

/// How one gradient is computed: in the parameters' own dtype, or in `low` with the logits'
/// gradient multiplied by `loss_scale` before it enters `low`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arithmetic {
    pub low: Option<FloatDType>,
    pub loss_scale: f32,
}

impl Arithmetic {
    /// Everything in the parameters' own dtype.
    pub const FULL: Arithmetic = Arithmetic {
        low: None,
        loss_scale: 1.0,
    };

    /// `t` in the dtype the network computes in.
    pub fn lower<const D: usize>(&self, t: Tensor<D>) -> Tensor<D> {
        match self.low {
            Some(dtype) => t.cast(dtype),
            None => t,
        }
    }

    /// `t` (computed in the low dtype) back in `dtype`, the parameters' own.
    pub fn raise<const D: usize>(&self, t: Tensor<D>, dtype: DType) -> Tensor<D> {
        match self.low {
            Some(_) => t.cast(dtype),
            None => t,
        }
    }
}

/// f16's dynamic loss scale (PyTorch's GradScaler defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScale {
    pub scale: f32,
    /// Finite gradients in a row since the scale last changed.
    finite_in_a_row: u32,
}

/// What to do after a gradient at the current scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterGradient {
    /// Use the gradient.
    Use,
    /// It overflowed: take it again at the (halved) scale.
    Retake,
}

impl LossScale {
    pub const INITIAL: f32 = 65536.0;
    /// Finite gradients in a row before the scale doubles.
    pub const GROWTH_INTERVAL: u32 = 2000;
    /// 2^24: past it, any scaled gradient above 65504 / 2^24 (about 4e-3) overflows f16.
    const MAX: f32 = 16_777_216.0;

    /// A scale of `scale`, a power of two (so that scaling is exact) from 1 to `MAX`.
    pub fn new(scale: f32) -> Self {
        assert!(
            (1.0..=Self::MAX).contains(&scale) && scale.log2().fract() == 0.0,
            "a loss scale is a power of two from 1 to 2^24, not {scale}"
        );
        Self {
            scale,
            finite_in_a_row: 0,
        }
    }

    /// The scale after a gradient that was `finite` or not, and what to do with it. A
    /// gradient that is not finite even at scale 1 is used as it is: that is the run
    /// diverging, not f16 overflowing, and the training loop's own check says so.
    pub fn after(&mut self, finite: bool) -> AfterGradient {
        if finite {
            self.finite_in_a_row += 1;
            if self.finite_in_a_row >= Self::GROWTH_INTERVAL {
                self.scale = (self.scale * 2.0).min(Self::MAX);
                self.finite_in_a_row = 0;
            }
            return AfterGradient::Use;
        }
        self.finite_in_a_row = 0;
        if self.scale <= 1.0 {
            return AfterGradient::Use;
        }
        self.scale /= 2.0;
        AfterGradient::Retake
    }
}

/// A run's `train.precision` below f32: the low dtype and, for f16, the loss scale carried
/// from step to step.
#[derive(Debug)]
pub struct MixedPrecision {
    low: FloatDType,
    /// None for bf16, whose range is f32's.
    loss_scale: Option<Cell<LossScale>>,
}

impl MixedPrecision {
    /// None for `f32` (nothing to do).
    pub fn of(precision: Precision) -> Option<Self> {
        let low = precision.low_dtype()?;
        Some(Self {
            low,
            loss_scale: (low == FloatDType::F16)
                .then(|| Cell::new(LossScale::new(LossScale::INITIAL))),
        })
    }

    /// The run's `precision` on `device` (named `description`), or why that device cannot
    /// compute in it. `setting` names where the precision was asked for.
    pub fn on_device(
        precision: Precision,
        device: &Device,
        description: &str,
        setting: &str,
    ) -> anyhow::Result<Option<Self>> {
        let Some(low) = precision.low_dtype() else {
            return Ok(None);
        };
        if !device.supports_dtype(low) {
            let elsewhere = match precision {
                // WGSL has no bf16 type at all.
                Precision::Bf16 => {
                    "bf16 needs flex (any CPU) or a `--features vulkan` build (SPIR-V) on a \
                     driver with bf16; or use \"f16\""
                }
                _ => "f16 needs flex (any CPU) or a wgpu adapter with f16 shaders",
            };
            anyhow::bail!(
                "{setting} = \"{precision}\": the device ({description}) has no {precision} \
                 arithmetic; use \"f32\" on it ({elsewhere})"
            );
        }
        Ok(Self::of(precision))
    }

    /// The same with f16's loss scale starting at `scale` (for tests of the overflow rule).
    pub fn with_loss_scale(mut self, scale: f32) -> Self {
        if self.loss_scale.is_some() {
            self.loss_scale = Some(Cell::new(LossScale::new(scale)));
        }
        self
    }

    /// The dtype the network's passes run in.
    pub fn low(&self) -> FloatDType {
        self.low
    }

    /// f16's current loss scale (None for bf16).
    pub fn loss_scale(&self) -> Option<f32> {
        self.loss_scale.as_ref().map(|s| s.get().scale)
    }

    /// The gradient `compute` gives in this precision; for f16, taken again at a halved
    /// scale while the gradient overflows and the loss does not (one host read a gradient,
    /// as GradScaler's step does).
    pub fn gradient<T: LossAndGradientOf>(&self, compute: impl Fn(Arithmetic) -> T) -> T {
        let Some(cell) = &self.loss_scale else {
            return compute(Arithmetic {
                low: Some(self.low),
                loss_scale: 1.0,
            });
        };
        loop {
            let mut scale = cell.get();
            let out = compute(Arithmetic {
                low: Some(self.low),
                loss_scale: scale.scale,
            });
            let [loss_finite, gradient_finite] = finite([out.loss(), out.gradient()]);
            if !loss_finite {
                return out;
            }
            let next = scale.after(gradient_finite);
            cell.set(scale);
            if next == AfterGradient::Use {
                return out;
            }
            log::debug!(
                "f16 gradient overflowed: loss scale halved to {}",
                scale.scale
            );
        }
    }
}

/// For each tensor, whether every value of it is finite, in one host read.
pub fn finite<const N: usize>(tensors: [&Tensor<1>; N]) -> [bool; N] {
    let flags: Vec<Tensor<1, Bool>> = tensors
        .iter()
        .map(|t| (*t).clone().is_finite().bool_not().any().bool_not())
        .collect();
    let values: Vec<bool> = Tensor::cat(flags, 0).into_data().iter::<bool>().collect();
    values.try_into().expect("one flag per tensor")
}

/// The first-order gradient `compute` gives in `mixed` precision, or in the parameters' own
/// dtype where there is none.
pub fn first_order_gradient<T: LossAndGradientOf>(
    mixed: Option<&MixedPrecision>,
    compute: impl Fn(Arithmetic) -> T,
) -> T {
    match mixed {
        Some(mixed) => mixed.gradient(compute),
        None => compute(Arithmetic::FULL),
    }
}
