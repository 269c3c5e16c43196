//! `[train]` and `[checkpoint]`: the settings of the training loop itself.

use serde::{Deserialize, Serialize};

use crate::validate::{Problems, fraction};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    /// Batch norm running-statistics momentum (PyTorch's convention: new = (1-m) old + m batch).
    pub bn_momentum: f32,
    /// Label smoothing of the cross-entropy loss (0: none).
    pub label_smoothing: f32,
    /// Read the loss back from the device (and refresh the progress bar) every this many steps.
    pub log_every: usize,
    /// Before each end-of-epoch evaluation and checkpoint, recompute batch norm's running
    /// statistics with the current weights over this many training batches (0: keep the
    /// running averages; see `bn_statistics.rs`). Unset: 10 for Hessian-free, whose few large
    /// steps leave the running averages behind, 0 for SGD and Adam.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bn_recompute_batches: Option<usize>,
    /// Every this many epochs (0: never), the top eigenvalue (sharpness) and the trace of the
    /// training loss's Hessian at the epoch's end, on `spectrum_batches` fixed training
    /// batches of `batch_size` images, into `metrics.csv` and TensorBoard (`curvature/`).
    pub spectrum_every: usize,
    pub spectrum_batches: usize,
    /// How SGD and Adam take their gradient (Hessian-free always uses our backprop).
    pub gradient: GradientRoute,
    /// The arithmetic of SGD's and Adam's gradient (see `Precision`).
    pub precision: Precision,
}

/// `train.gradient`: Burn's autodiff, or hftrain's own backprop through the layers' `vjp`
/// (the one Hessian-free uses and the tests hold to Burn's autodiff). The two compute the
/// same gradient; they differ in speed by device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GradientRoute {
    /// Our backprop on Burn's CPU backends, where an SGD step measured 8-10% faster on the
    /// classic small CNN and the smoke network (max-pooling and the first convolution are our
    /// own kernels there); Burn's autodiff on wgpu, until the GPU campaign measures both
    /// (BENCHMARKS.md).
    #[default]
    Auto,
    Autodiff,
    Backprop,
}

impl std::fmt::Display for GradientRoute {
    /// The name a config writes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GradientRoute::Auto => "auto",
            GradientRoute::Autodiff => "autodiff",
            GradientRoute::Backprop => "backprop",
        })
    }
}

impl GradientRoute {
    /// Whether first-order steps on `device` take the gradient by our backprop.
    pub fn uses_backprop(self, device: &burn::prelude::Device) -> bool {
        match self {
            GradientRoute::Auto => crate::device::keeps_tensors_in_host_memory(device),
            GradientRoute::Autodiff => false,
            GradientRoute::Backprop => true,
        }
    }
}

/// `train.precision`: the dtype SGD's and Adam's forward and backward passes compute in.
/// Master weights, the optimizer's state, the loss and evaluation stay in f32 either way
/// (mixed precision as PyTorch's autocast does it; see `precision.rs`). Hessian-free stays
/// f32: nobody has measured that CG converges and rho stays meaningful in half precision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Everything in the parameters' own dtype (f32; f64 in the tests).
    #[default]
    F32,
    /// bfloat16: f32's range with 8 bits of mantissa; no loss scaling needed.
    Bf16,
    /// IEEE half: 11 bits of mantissa but a range up to 65504, so the loss is scaled
    /// (dynamically) to keep small gradients from flushing to zero.
    F16,
}

impl Precision {
    /// The lower dtype the network computes in (None: the parameters' own).
    pub fn low_dtype(self) -> Option<burn::tensor::FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(burn::tensor::FloatDType::BF16),
            Precision::F16 => Some(burn::tensor::FloatDType::F16),
        }
    }
}

impl std::fmt::Display for Precision {
    /// The name a config writes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 16,
            batch_size: 512,
            eval_batch_size: 1000,
            bn_momentum: 0.1,
            label_smoothing: 0.0,
            log_every: 10,
            bn_recompute_batches: None,
            spectrum_every: 0,
            spectrum_batches: 1,
            gradient: GradientRoute::Auto,
            precision: Precision::F32,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self, problems: &mut Problems) {
        for (key, value) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("eval_batch_size", self.eval_batch_size),
            ("log_every", self.log_every),
            ("spectrum_batches", self.spectrum_batches),
        ] {
            problems.check(value > 0, format!("train.{key} = 0: expected at least 1"));
        }
        problems.check(
            fraction(self.bn_momentum as f64),
            format!(
                "train.bn_momentum = {}: expected a number in [0, 1]",
                self.bn_momentum
            ),
        );
        problems.check(
            (0.0..1.0).contains(&self.label_smoothing),
            format!(
                "train.label_smoothing = {}: expected a number in [0, 1)",
                self.label_smoothing
            ),
        );
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many epochs (the last epoch is always written).
    pub every_epochs: usize,
    /// Keep this many most recent checkpoints.
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every_epochs: 1,
            keep: 3,
        }
    }
}

impl CheckpointConfig {
    pub fn validate(&self, problems: &mut Problems) {
        problems.check(
            self.every_epochs > 0,
            "checkpoint.every_epochs = 0: expected at least 1".into(),
        );
        problems.check(
            self.keep > 0,
            "checkpoint.keep = 0: expected at least 1".into(),
        );
    }
}
