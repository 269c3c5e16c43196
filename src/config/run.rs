//! `[train]` and `[checkpoint]`: the settings of the training loop itself.

use serde::{Deserialize, Serialize};

use crate::optim::averaging::AverageConfig;
use crate::support::validate::{Problems, fraction};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// The training batch grows over the run: `[[3, 2000], [5, 4000]]` takes `batch_size`
    /// images a step in epochs 1-2, 2000 from epoch 3 and 4000 from epoch 5 on (epochs
    /// counted from 1, as the progress lines count them). A larger batch late in a run lowers
    /// the gradient's noise where smaller steps are wanted: Smith et al. 2018 ("Don't decay
    /// the learning rate, increase the batch size") for SGD, Byrd et al. 2012 (dynamic sample
    /// sizes) for Newton-CG; and with Hessian-free it makes an epoch cheaper, since CG's cost
    /// per step does not grow with the batch. Empty: `batch_size` throughout.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "epoch_and_size_pairs"
    )]
    pub batch_size_milestones: Vec<[usize; 2]>,
    pub eval_batch_size: usize,
    /// Batch norm running-statistics momentum (PyTorch's convention: new = (1-m) old + m batch).
    pub bn_momentum: f32,
    /// Label smoothing of the cross-entropy loss (0: none).
    pub label_smoothing: f32,
    /// Read the loss back from the device (and refresh the progress bar) every this many steps.
    pub log_every: usize,
    /// Before each end-of-epoch evaluation and checkpoint, recompute batch norm's running
    /// statistics with the current weights over this many training batches of `batch_size`
    /// images, the first batch size where milestones grow it (0: keep the
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
    /// A running average of the parameters, evaluated beside them at each epoch's end
    /// (`optim/averaging.rs`). None: no average.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average: Option<AverageConfig>,
    /// The batch grows where a variance test says its gradient is too noisy, instead of at
    /// fixed milestones (`batch_growth.rs`). None: the batch follows `batch_size` and the
    /// milestones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_growth: Option<BatchGrowthConfig>,
}

/// `train.batch_growth = { theta = 0.9, max_batch_size = 8000, chunks = 8 }`: Byrd, Chin,
/// Nocedal and Wu's norm test (2012), taken at the end of every epoch on the next epoch's
/// first batch, split into `chunks` parts whose gradients estimate the variance. A failed
/// test sets the batch of the epochs after to the size that would pass it, at most
/// `max_batch_size`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchGrowthConfig {
    /// The test holds while the gradient's estimated variance over the batch is at most
    /// `theta^2` times its squared norm: a smaller theta asks for larger batches.
    pub theta: f64,
    pub max_batch_size: usize,
    #[serde(default = "default_chunks")]
    pub chunks: usize,
}

fn default_chunks() -> usize {
    8
}

impl BatchGrowthConfig {
    fn validate(&self, train: &TrainConfig, problems: &mut Problems) {
        let key = "train.batch_growth";
        problems.check(
            self.theta.is_finite() && self.theta > 0.0,
            format!("{key}.theta = {}: expected a positive number", self.theta),
        );
        problems.check(
            self.max_batch_size >= train.batch_size,
            format!(
                "{key}.max_batch_size = {}: expected at least train.batch_size ({})",
                self.max_batch_size, train.batch_size
            ),
        );
        problems.check(
            self.chunks >= 2 && self.chunks <= train.batch_size,
            format!(
                "{key}.chunks = {}: expected 2 to train.batch_size ({}) parts of a batch",
                self.chunks, train.batch_size
            ),
        );
        problems.check(
            train.batch_size_milestones.is_empty(),
            format!(
                "{key} with train.batch_size_milestones: the batch grows by the test or at the \
                 milestones, not both; remove one"
            ),
        );
    }
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

/// `[[3, 2000], [5, 4000]]`: each milestone exactly two numbers (an extra value would be
/// dropped without a word by the array's own reading).
fn epoch_and_size_pairs<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<[usize; 2]>, D::Error> {
    let pairs = Vec::<Vec<usize>>::deserialize(deserializer)?;
    pairs
        .into_iter()
        .map(|pair| {
            <[usize; 2]>::try_from(pair.as_slice()).map_err(|_| {
                serde::de::Error::custom(format!(
                    "milestone {pair:?} has {} values; expected 2: [epoch, batch size]",
                    pair.len()
                ))
            })
        })
        .collect()
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 16,
            batch_size: 512,
            batch_size_milestones: Vec::new(),
            eval_batch_size: 1000,
            bn_momentum: 0.1,
            label_smoothing: 0.0,
            log_every: 10,
            bn_recompute_batches: None,
            spectrum_every: 0,
            spectrum_batches: 1,
            gradient: GradientRoute::Auto,
            precision: Precision::F32,
            average: None,
            batch_growth: None,
        }
    }
}

impl TrainConfig {
    /// The training batch of the epoch with this 0-based index (`batch_size_milestones`).
    pub fn batch_size_of_epoch(&self, epoch: usize) -> usize {
        self.batch_size_after_growth(epoch, &[])
    }

    /// The same where `batch_growth`'s test has added its own milestones, `grown`.
    pub fn batch_size_after_growth(&self, epoch: usize, grown: &[[usize; 2]]) -> usize {
        self.batch_size_milestones
            .iter()
            .chain(grown)
            .filter(|[from, _]| epoch + 1 >= *from)
            .map(|[_, size]| *size)
            .next_back()
            .unwrap_or(self.batch_size)
    }

    /// The training batch in words: `1000`, or `1000 (2000 from epoch 3, 4000 from epoch 5)`.
    pub fn batch_size_in_words(&self) -> String {
        let later: Vec<String> = self
            .batch_size_milestones
            .iter()
            .map(|[epoch, size]| format!("{size} from epoch {epoch}"))
            .collect();
        match (later.is_empty(), &self.batch_growth) {
            (_, Some(growth)) => format!(
                "{} (grown by a variance test, theta {}, up to {})",
                self.batch_size, growth.theta, growth.max_batch_size
            ),
            (true, None) => self.batch_size.to_string(),
            (false, None) => format!("{} ({})", self.batch_size, later.join(", ")),
        }
    }

    /// The largest training batch of the run (what memory must hold).
    pub fn largest_batch_size(&self) -> usize {
        self.batch_size_milestones
            .iter()
            .map(|[_, size]| *size)
            .chain(self.batch_growth.map(|g| g.max_batch_size))
            .fold(self.batch_size, usize::max)
    }

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
        self.validate_milestones(problems);
        if let Some(average) = &self.average {
            average.validate(self.epochs, problems);
        }
        if let Some(growth) = &self.batch_growth {
            growth.validate(self, problems);
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

    /// Milestones from epoch 2 on (epoch 1 trains with `batch_size`), in increasing order,
    /// each with a batch of at least one image.
    fn validate_milestones(&self, problems: &mut Problems) {
        let key = "train.batch_size_milestones";
        let mut after = 1;
        for &[epoch, size] in &self.batch_size_milestones {
            problems.check(
                epoch > after,
                if after == 1 {
                    format!(
                        "{key}: [{epoch}, {size}] starts at epoch {epoch}; milestones start at \
                         epoch 2 or later (epoch 1 trains with train.batch_size = {}: set that \
                         instead)",
                        self.batch_size
                    )
                } else {
                    format!(
                        "{key}: [{epoch}, {size}] comes after a milestone at epoch {after}; \
                         list the milestones as [epoch, batch size] in increasing epoch order"
                    )
                },
            );
            problems.check(
                size > 0,
                format!("{key}: [{epoch}, 0]: a batch needs at least one image"),
            );
            after = after.max(epoch);
        }
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
