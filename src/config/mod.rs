//! The typed run configuration: every hyper-parameter of a run, read from one TOML file.
//!
//! Each section is owned by the part of hftrain it configures and validates itself:
//! `[data]` (data/config.rs), `[model]` (model/config.rs), `[optimizer]` (optim: one variant
//! per optimizer, its settings beside it), `[schedule]` (optim/schedule.rs), `[train]` and
//! `[checkpoint]` (config/run.rs). Unknown keys are rejected (a typo must not silently fall
//! back to a default), and `validate` collects every value that serde's types cannot check,
//! naming the key and the expected range.

mod run;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub use crate::data::DataConfig;
pub use crate::device::DeviceChoice;
pub use crate::model::{ModelConfig, StageConfig};
pub use crate::optim::adam::AdamConfig;
pub use crate::optim::schedule::{ScheduleConfig, ScheduleKind};
pub use crate::optim::sgd::SgdConfig;
pub use crate::optim::{
    CurvatureKind, HessianFreeConfig, HessianFreeSettings, OptimizerConfig, Preconditioning,
};
pub use run::{BatchGrowthConfig, CheckpointConfig, GradientRoute, Precision, TrainConfig};

use crate::support::validate::Problems;

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
    #[serde(default)]
    pub device: DeviceChoice,
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
            if self.optimizer.capabilities().curvature_products {
                10
            } else {
                0
            },
        )
    }

    /// Whether the optimizer's curvature products are Gauss-Newton products, which
    /// `train.precision` may lower (the gradient, CG's vectors and the step stay f32).
    fn half_precision_curvature_products(&self) -> bool {
        self.optimizer.capabilities().curvature_products
            && self
                .optimizer
                .hessian_free()
                .is_some_and(|h| h.curvature == crate::optim::CurvatureKind::GaussNewton)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a Config always serialises to TOML")
    }

    /// Checks every value serde's types cannot, each message naming the key.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Problems::default();
        problems.check(
            is_plain_name(&self.name),
            format!(
                "name = {:?}: expected a plain name, not a path (no '/', not '.' or '..'): \
                 it names the run directory runs/<name>; use --out DIR to put a run elsewhere",
                self.name
            ),
        );
        self.data.validate(&mut problems);
        // Building the network checks every layer line and the shapes they make.
        if let Err(problem) = crate::model::Network::new(&self.model, 10) {
            problems.push(problem);
        }
        self.train.validate(&mut problems);
        self.optimizer.validate(&mut problems);
        self.schedule.validate(&mut problems);
        // A schedule scales a learning rate (or a step an optimizer lets it scale): one set
        // for an optimizer without either would be silently ignored.
        problems.check(
            self.optimizer.scheduled() || self.schedule == ScheduleConfig::default(),
            format!(
                "[schedule]: optimizer {} has no learning rate to schedule (its step length \
                 comes from its line search); remove the section{}",
                self.optimizer,
                match self.optimizer.hessian_free() {
                    Some(_) =>
                        ", or set optimizer.hessian_free.step_schedule = true to multiply \
                               each accepted step by the schedule (peak 1)",
                    None => "",
                }
            ),
        );
        // Hessian-free always takes its gradient by our backprop: a route set for it would be
        // silently ignored.
        let first_order = self.optimizer.capabilities().first_order;
        problems.check(
            first_order || self.train.gradient == GradientRoute::Auto,
            format!(
                "train.gradient = \"{}\": chooses how SGD and Adam take their gradient; \
                 optimizer {} always uses hftrain's own backprop; remove the setting",
                self.train.gradient, self.optimizer
            ),
        );
        problems.check(
            first_order
                || self.train.precision == Precision::F32
                || self.half_precision_curvature_products(),
            format!(
                "train.precision = \"{}\": half precision is for SGD's and Adam's gradient and \
                 Hessian-free's Gauss-Newton products; optimizer {} here computes in f32 (with \
                 curvature = \"hessian\", its double backprop is not measured in half \
                 precision): remove the setting, or set optimizer.hessian_free.curvature = \
                 \"gauss-newton\"",
                self.train.precision, self.optimizer
            ),
        );
        self.checkpoint.validate(&mut problems);
        problems.into_result().map_err(anyhow::Error::msg)
    }

    /// The differences, key by key, between two configs in everything that changes the
    /// trajectory of a run. Settings that only say where things are or how often to report
    /// (data directory, device, checkpoint cadence, logging) are not compared.
    pub fn run_differences(&self, other: &Config) -> Vec<String> {
        let strip = |c: &Config| {
            let mut c = c.clone();
            c.name = String::new();
            c.device = DeviceChoice::Auto;
            // Like the device: either route computes the same gradient, up to rounding.
            c.train.gradient = GradientRoute::Auto;
            // Weights, optimizer state and checkpoints are f32 in every precision: a run
            // may go on in another (a half-precision run resumed on a device without that
            // arithmetic, say), its gradients then rounded differently.
            c.train.precision = Precision::F32;
            c.data.dir = PathBuf::new();
            c.checkpoint = CheckpointConfig::default();
            c.train.log_every = 1;
            c.train.eval_batch_size = 1;
            // Measuring the curvature changes nothing of the trajectory.
            c.train.spectrum_every = 0;
            c.train.spectrum_batches = 1;
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
