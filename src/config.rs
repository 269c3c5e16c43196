//! The typed run configuration: every hyper-parameter of a run, read from one TOML file.
//!
//! Unknown keys are rejected (a typo must not silently fall back to a default), and
//! `validate` checks every value that serde's types cannot, naming the key and the
//! expected range.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub use crate::model::{ModelConfig, StageConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Run name; the run directory defaults to `runs/<name>`. Defaults to the file's stem.
    #[serde(default)]
    pub name: String,
    /// Seed of everything random: initial weights, data order, augmentation.
    #[serde(default)]
    pub seed: u64,
    /// `auto`, `wgpu`, `wgpu-cpu` or `flex` (see `device.rs`).
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
}

fn default_device() -> String {
    "auto".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Directory of the data set: CIFAR-10 binary batches or an image folder.
    pub dir: PathBuf,
    /// Use at most this many training images, balanced over classes (0: all).
    pub train_limit: usize,
    /// Use at most this many test images, balanced over classes (0: all).
    pub test_limit: usize,
    /// Per-channel mean and standard deviation of the pixels in [0, 1].
    #[serde(deserialize_with = "three_channels")]
    pub mean: [f32; 3],
    #[serde(deserialize_with = "three_channels")]
    pub std: [f32; 3],
    /// Random crop after zero padding by this many pixels (0: no crop).
    pub crop_padding: usize,
    /// Random horizontal flip of training images.
    pub flip: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data/cifar10"),
            train_limit: 0,
            test_limit: 0,
            mean: [0.4914, 0.4822, 0.4465],
            std: [0.2470, 0.2435, 0.2616],
            crop_padding: 4,
            flip: true,
        }
    }
}

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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
    /// Truncated Newton: CG on curvature products, step chosen by the quadratic model.
    HessianFree,
}

impl OptimizerKind {
    /// The name a config writes.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Adamw => "adamw",
            OptimizerKind::HessianFree => "hessian-free",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    /// Peak learning rate (the schedule scales it).
    pub lr: f64,
    /// SGD momentum (0: plain SGD).
    pub momentum: f64,
    pub nesterov: bool,
    /// L2 weight decay (SGD, Adam: added to the gradient; AdamW: decoupled). Applies to
    /// convolution and linear weights, not to biases or batch-norm parameters.
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Settings of `kind = "hessian-free"` (ignored by the other optimizers).
    pub hessian_free: HessianFreeConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CurvatureChoice {
    /// The exact Hessian by double backprop; CG stops on negative curvature.
    Hessian,
    /// The generalised Gauss-Newton matrix (positive semi-definite; Martens' choice).
    GaussNewton,
}

/// The Hessian-free optimizer (Martens 2010). Every step: the gradient on the training
/// batch; CG on `(C + damping I) p = -g` with curvature products on the first
/// `curvature_batch_size` images of that batch; backtracking over CG iterates; Levenberg-
/// Marquardt damping from the reduction ratio; an Armijo line search. The learning rate and
/// its schedule do not apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HessianFreeConfig {
    pub curvature: CurvatureChoice,
    /// Images of each training batch the curvature products use.
    pub curvature_batch_size: usize,
    /// Images of each training batch the backtracking over CG's iterates compares them on
    /// (0: the whole batch). Only the chosen iterate's objective is then taken on the whole
    /// batch, for rho and the line search (Martens 2010 backtracks on a subset).
    pub backtracking_batch_size: usize,
    /// Starting damping lambda.
    pub initial_damping: f64,
    /// Lambda stays within these bounds.
    pub min_damping: f64,
    pub max_damping: f64,
    /// rho below `damping_raise_below` multiplies lambda by `damping_raise`; rho above
    /// `damping_lower_above` multiplies it by `damping_lower`.
    pub damping_raise_below: f64,
    pub damping_lower_above: f64,
    pub damping_raise: f64,
    pub damping_lower: f64,
    pub cg_max_iterations: usize,
    /// Martens' relative-progress tolerance.
    pub cg_tolerance: f64,
    /// CG starts from this multiple of the previous step's solution.
    pub warm_start_decay: f64,
    /// Diagonal preconditioner `(diag(sum of squared gradients) + lambda)^exponent`.
    pub preconditioner: bool,
    pub preconditioner_exponent: f64,
    /// Armijo sufficient-decrease constant and the line search's shrink factor.
    pub armijo_c: f64,
    pub line_search_shrink: f64,
    pub line_search_max_tries: usize,
    /// Stop the run after this many consecutive rejected steps.
    pub max_rejected_steps: usize,
}

impl Default for HessianFreeConfig {
    fn default() -> Self {
        Self {
            curvature: CurvatureChoice::GaussNewton,
            curvature_batch_size: 128,
            backtracking_batch_size: 0,
            initial_damping: 1.0,
            min_damping: 1e-6,
            max_damping: 1e6,
            damping_raise_below: 0.25,
            damping_lower_above: 0.75,
            damping_raise: 1.5,
            damping_lower: 2.0 / 3.0,
            cg_max_iterations: 50,
            cg_tolerance: 5e-4,
            warm_start_decay: 0.95,
            preconditioner: false,
            preconditioner_exponent: 0.75,
            armijo_c: 1e-2,
            line_search_shrink: 0.8,
            line_search_max_tries: 10,
            max_rejected_steps: 20,
        }
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            hessian_free: HessianFreeConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// Linear warm-up, then cosine decay to `final_lr_fraction`.
    Cosine,
    /// Linear warm-up, then linear decay to `final_lr_fraction` (the one-cycle shape).
    OneCycle,
    /// Linear warm-up, then constant.
    Constant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    /// Length of the linear warm-up, in epochs (fractions allowed).
    pub warmup_epochs: f64,
    /// The warm-up starts at this fraction of the peak learning rate.
    pub initial_lr_fraction: f64,
    /// The decay ends at this fraction of the peak learning rate.
    pub final_lr_fraction: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::OneCycle,
            warmup_epochs: 2.0,
            initial_lr_fraction: 0.1,
            final_lr_fraction: 0.0,
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

/// The smallest `data.std` accepted.
const MIN_PIXEL_STD: f32 = 1e-3;

/// A run name that is one path component (it becomes `runs/<name>`): not empty, not `.` or
/// `..`, no separator, no control character.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// One value per colour channel: serde's arrays take the first three of a longer list and
/// drop the rest, which would hide a mistake.
fn three_channels<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<[f32; 3], D::Error> {
    let values = Vec::<f32>::deserialize(deserializer)?;
    <[f32; 3]>::try_from(values.as_slice()).map_err(|_| {
        serde::de::Error::custom(format!(
            "expected 3 values (red, green, blue), found {}: {values:?}",
            values.len()
        ))
    })
}

impl Config {
    /// Reads, parses and validates a config file. The name defaults to the file's stem.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config = Self::parse(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        if config.name.is_empty() {
            config.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into());
        }
        config
            .validate()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(config)
    }

    /// Parses TOML text (no validation, no file name).
    pub fn parse(text: &str) -> Result<Self> {
        if let Ok(table) = text.parse::<toml::Table>()
            && let Some(model) = table.get("model").and_then(toml::Value::as_table)
            && let Some(message) = crate::model::config::legacy_format_message(model)
        {
            bail!("{message}");
        }
        // toml's message already names the key and shows the offending line.
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
    }

    /// `train.bn_recompute_batches`, or its default for the optimizer.
    pub fn bn_recompute_batches(&self) -> usize {
        self.train.bn_recompute_batches.unwrap_or(
            if self.optimizer.kind == OptimizerKind::HessianFree {
                10
            } else {
                0
            },
        )
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a Config always serialises to TOML")
    }

    /// Checks every value serde's types cannot, each message naming the key.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, message: String| {
            if !ok {
                problems.push(message);
            }
        };
        let finite_positive = |x: f64| x.is_finite() && x > 0.0;
        let fraction = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);

        check(
            crate::device::DeviceChoice::parse(&self.device).is_ok(),
            format!(
                "device = {:?}: expected one of {}",
                self.device,
                crate::device::DeviceChoice::NAMES
            ),
        );
        check(
            is_plain_name(&self.name),
            format!(
                "name = {:?}: expected a plain name, not a path (no '/', not '.' or '..'): \
                 it names the run directory runs/<name>; use --out DIR to put a run elsewhere",
                self.name
            ),
        );
        let d = &self.data;
        for (i, (&m, &s)) in d.mean.iter().zip(&d.std).enumerate() {
            check(
                m.is_finite(),
                format!("data.mean[{i}] = {m}: expected a finite number"),
            );
            // Pixels are in [0, 1]: a spread below 1/1000 (CIFAR-10's is about 0.25) would
            // scale inputs by a thousand or more and blow up the first steps.
            check(
                s.is_finite() && s >= MIN_PIXEL_STD,
                format!(
                    "data.std[{i}] = {s}: expected a standard deviation of pixels in [0, 1] of \
                     at least {MIN_PIXEL_STD} (CIFAR-10's is about 0.25)"
                ),
            );
        }
        check(
            d.crop_padding <= 16,
            format!(
                "data.crop_padding = {}: expected at most 16 pixels",
                d.crop_padding
            ),
        );

        // Building the network checks every layer line and the shapes they make.
        if let Err(problem) = crate::model::Network::new(&self.model, 10) {
            check(false, problem);
        }

        let t = &self.train;
        check(t.epochs > 0, "train.epochs = 0: expected at least 1".into());
        check(
            t.batch_size > 0,
            "train.batch_size = 0: expected at least 1".into(),
        );
        check(
            t.eval_batch_size > 0,
            "train.eval_batch_size = 0: expected at least 1".into(),
        );
        check(
            t.log_every > 0,
            "train.log_every = 0: expected at least 1".into(),
        );
        check(
            fraction(t.bn_momentum as f64),
            format!(
                "train.bn_momentum = {}: expected a number in [0, 1]",
                t.bn_momentum
            ),
        );
        check(
            (0.0..1.0).contains(&t.label_smoothing),
            format!(
                "train.label_smoothing = {}: expected a number in [0, 1)",
                t.label_smoothing
            ),
        );

        let o = &self.optimizer;
        check(
            finite_positive(o.lr),
            format!("optimizer.lr = {}: expected a positive number", o.lr),
        );
        check(
            o.momentum.is_finite() && (0.0..1.0).contains(&o.momentum),
            format!(
                "optimizer.momentum = {}: expected a number in [0, 1)",
                o.momentum
            ),
        );
        check(
            o.weight_decay.is_finite() && o.weight_decay >= 0.0,
            format!(
                "optimizer.weight_decay = {}: expected zero or a positive number",
                o.weight_decay
            ),
        );
        for (key, beta) in [("beta1", o.beta1), ("beta2", o.beta2)] {
            check(
                beta.is_finite() && (0.0..1.0).contains(&beta),
                format!("optimizer.{key} = {beta}: expected a number in [0, 1)"),
            );
        }
        check(
            finite_positive(o.eps),
            format!("optimizer.eps = {}: expected a positive number", o.eps),
        );

        let h = &o.hessian_free;
        let key = "optimizer.hessian_free";
        check(
            h.curvature_batch_size > 0,
            format!("{key}.curvature_batch_size = 0: expected at least 1"),
        );
        check(
            finite_positive(h.min_damping)
                && h.min_damping <= h.max_damping
                && h.max_damping.is_finite(),
            format!(
                "{key}.min_damping = {}, max_damping = {}: expected 0 < min_damping <= max_damping",
                h.min_damping, h.max_damping
            ),
        );
        check(
            finite_positive(h.initial_damping)
                && (h.min_damping..=h.max_damping).contains(&h.initial_damping),
            format!(
                "{key}.initial_damping = {}: expected a number between min_damping and max_damping",
                h.initial_damping
            ),
        );
        check(
            fraction(h.damping_raise_below)
                && fraction(h.damping_lower_above)
                && h.damping_raise_below <= h.damping_lower_above,
            format!(
                "{key}.damping_raise_below = {}, damping_lower_above = {}: expected \
                 0 <= damping_raise_below <= damping_lower_above <= 1",
                h.damping_raise_below, h.damping_lower_above
            ),
        );
        check(
            h.damping_raise.is_finite() && h.damping_raise > 1.0,
            format!(
                "{key}.damping_raise = {}: expected a number above 1",
                h.damping_raise
            ),
        );
        check(
            h.damping_lower > 0.0 && h.damping_lower < 1.0,
            format!(
                "{key}.damping_lower = {}: expected a number in (0, 1)",
                h.damping_lower
            ),
        );
        check(
            h.cg_max_iterations > 0,
            format!("{key}.cg_max_iterations = 0: expected at least 1"),
        );
        check(
            finite_positive(h.cg_tolerance),
            format!(
                "{key}.cg_tolerance = {}: expected a positive number",
                h.cg_tolerance
            ),
        );
        check(
            fraction(h.warm_start_decay),
            format!(
                "{key}.warm_start_decay = {}: expected a number in [0, 1]",
                h.warm_start_decay
            ),
        );
        check(
            h.preconditioner_exponent.is_finite()
                && (0.0..=1.0).contains(&h.preconditioner_exponent),
            format!(
                "{key}.preconditioner_exponent = {}: expected a number in [0, 1]",
                h.preconditioner_exponent
            ),
        );
        check(
            h.armijo_c > 0.0 && h.armijo_c < 1.0,
            format!(
                "{key}.armijo_c = {}: expected a number in (0, 1)",
                h.armijo_c
            ),
        );
        check(
            h.line_search_shrink > 0.0 && h.line_search_shrink < 1.0,
            format!(
                "{key}.line_search_shrink = {}: expected a number in (0, 1)",
                h.line_search_shrink
            ),
        );
        check(
            h.max_rejected_steps > 0,
            format!("{key}.max_rejected_steps = 0: expected at least 1"),
        );

        let s = &self.schedule;
        check(
            s.warmup_epochs.is_finite() && s.warmup_epochs >= 0.0,
            format!(
                "schedule.warmup_epochs = {}: expected zero or a positive number",
                s.warmup_epochs
            ),
        );
        check(
            fraction(s.initial_lr_fraction),
            format!(
                "schedule.initial_lr_fraction = {}: expected a number in [0, 1]",
                s.initial_lr_fraction
            ),
        );
        check(
            fraction(s.final_lr_fraction),
            format!(
                "schedule.final_lr_fraction = {}: expected a number in [0, 1]",
                s.final_lr_fraction
            ),
        );

        let c = &self.checkpoint;
        check(
            c.every_epochs > 0,
            "checkpoint.every_epochs = 0: expected at least 1".into(),
        );
        check(
            c.keep > 0,
            "checkpoint.keep = 0: expected at least 1".into(),
        );

        if problems.is_empty() {
            return Ok(());
        }
        let mut message = String::new();
        for p in &problems {
            let _ = writeln!(message, "  - {p}");
        }
        bail!("{}", message.trim_end())
    }

    /// The differences, key by key, between two configs in everything that changes the
    /// trajectory of a run. Settings that only say where things are or how often to report
    /// (data directory, device, checkpoint cadence, logging) are not compared.
    pub fn run_differences(&self, other: &Config) -> Vec<String> {
        let strip = |c: &Config| {
            let mut c = c.clone();
            c.name = String::new();
            c.device = String::new();
            c.data.dir = PathBuf::new();
            c.checkpoint = CheckpointConfig::default();
            c.train.log_every = 1;
            c.train.eval_batch_size = 1;
            serde_json::to_value(c).expect("a Config always serialises")
        };
        let mut out = Vec::new();
        diff_values("", &strip(self), &strip(other), &mut out);
        out
    }
}

fn diff_values(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (key, va) in x {
                let sub = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match y.get(key) {
                    Some(vb) => diff_values(&sub, va, vb, out),
                    None => out.push(format!("{sub}: {va} vs (absent)")),
                }
            }
        }
        _ if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}
