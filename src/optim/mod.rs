//! Optimizers over flat parameter vectors. Each is a small typed state and a step (as in
//! burn-optim and optax), testable without a network: it sees the batch only through the
//! `Objective` trait (value, gradient, curvature products), so the training loop runs every
//! optimizer the same way. `OptimizerConfig` is `[optimizer]`, one variant per optimizer,
//! each with its own settings beside it.

pub mod adam;
pub mod cg;
pub mod hessian_free;
pub mod objective;
pub mod schedule;
pub mod sgd;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use hessian_free::{CurvatureKind, HessianFreeConfig, StepReport};
pub use objective::{Gradient, Objective, Problem};

use crate::params::{from_host, to_host};
use crate::validate::{Problems, positive};

/// An optimizer: one step on the batch's objective from `params`.
pub trait Optimizer {
    /// `lr` is the schedule's learning rate at this step (rules that have none ignore it).
    fn step(&mut self, objective: &dyn Objective, params: &Tensor<1>, lr: f64) -> Result<Step>;
    fn state(&self) -> OptimizerState;
    fn load_state(&mut self, state: &OptimizerState, device: &Device) -> Result<()>;
}

/// What a step returns: the new parameters and what to report of it.
pub struct Step {
    pub params: Tensor<1>,
    pub info: StepInfo,
}

#[derive(Debug, Clone)]
pub struct StepInfo {
    /// The step's length as `metrics.csv` reports it: the learning rate, or Hessian-free's
    /// line-search step (0 when rejected).
    pub step_length: f64,
    /// Hessian-free's account of the step (its `steps.csv` row).
    pub report: Option<StepReport>,
}

impl StepInfo {
    /// The optimizer's part of the progress line.
    pub fn summary(&self) -> String {
        match &self.report {
            Some(report) => report.summary(),
            None => format!("lr {:.2e}", self.step_length),
        }
    }
}

/// An optimizer's state as checkpoints keep it: its scalars (serialised from its own typed
/// struct) and named flat vectors (stored in `optimizer.bin`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OptimizerState {
    pub kind: String,
    pub scalars: serde_json::Value,
    #[serde(skip)]
    pub vectors: BTreeMap<String, Vec<f32>>,
}

impl OptimizerState {
    pub fn new(kind: &str, scalars: &impl Serialize) -> Self {
        Self {
            kind: kind.into(),
            scalars: serde_json::to_value(scalars).expect("optimizer scalars always serialise"),
            vectors: BTreeMap::new(),
        }
    }

    /// The scalars as the optimizer `kind`'s typed struct; refuses another optimizer's state.
    pub fn scalars<S: DeserializeOwned>(&self, kind: &str) -> Result<S> {
        if self.kind != kind {
            bail!(
                "the checkpoint holds the state of optimizer `{}`, this run uses `{kind}`",
                self.kind
            );
        }
        serde_json::from_value(self.scalars.clone())
            .with_context(|| format!("the checkpoint's `{kind}` optimizer state is not valid"))
    }

    pub fn put_vector(&mut self, name: &str, tensor: &Option<Tensor<1>>) {
        if let Some(t) = tensor {
            self.vectors.insert(name.into(), to_host(t));
        }
    }

    /// The vector `name`, uploaded, if the state has it; its length must be `len`.
    pub fn take_vector(
        &self,
        name: &str,
        len: usize,
        device: &Device,
    ) -> Result<Option<Tensor<1>>> {
        match self.vectors.get(name) {
            None => Ok(None),
            Some(v) if v.len() == len => Ok(Some(from_host(v.clone(), device))),
            Some(v) => bail!(
                "optimizer state `{name}` has {} values, the model has {len} parameters",
                v.len()
            ),
        }
    }
}

/// The step of a first-order rule: the loss gradient at `params`, then `update`.
pub(crate) fn first_order_step(
    objective: &dyn Objective,
    params: &Tensor<1>,
    lr: f64,
    update: impl FnOnce(Tensor<1>, Tensor<1>, f64) -> Tensor<1>,
) -> Step {
    let gradient = objective.loss_gradient(params);
    Step {
        params: update(params.clone(), gradient, lr),
        info: StepInfo {
            step_length: lr,
            report: None,
        },
    }
}

/// `<a, b>`, one element, on the device.
pub(crate) fn dot(a: &Tensor<1>, b: &Tensor<1>) -> Tensor<1> {
    (a.clone() * b.clone()).sum()
}

/// Reads one-element tensors back to the host in one transfer (each read waits for the
/// device, so the scalars a decision needs are read together).
pub fn read_scalars<const N: usize>(scalars: [Tensor<1>; N]) -> [f64; N] {
    let values: Vec<f64> = Tensor::cat(scalars.to_vec(), 0)
        .to_data()
        .iter::<f64>()
        .collect();
    values.try_into().expect("one value per one-element tensor")
}

/// `[optimizer]`: which optimizer, with its settings. `kind` selects the variant; a key of
/// another optimizer is refused with its name (an SGD run given `beta1` would silently
/// ignore it otherwise).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OptimizerConfig {
    Sgd(sgd::SgdConfig),
    Adam(adam::AdamConfig),
    /// Adam with decoupled weight decay.
    Adamw(adam::AdamConfig),
    /// Truncated Newton: CG on curvature products, the step chosen by the quadratic model.
    HessianFree(HessianFreeSettings),
}

/// `kind = "hessian-free"`: the weight decay is part of the objective it minimises (exact in
/// the gradient and every curvature product); its own settings are `[optimizer.hessian_free]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HessianFreeSettings {
    pub weight_decay: f64,
    pub hessian_free: HessianFreeConfig,
}

impl Default for HessianFreeSettings {
    fn default() -> Self {
        Self {
            weight_decay: 5e-4,
            hessian_free: HessianFreeConfig::default(),
        }
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Sgd(sgd::SgdConfig::default())
    }
}

/// The keys each optimizer takes under `[optimizer]` besides `kind` (a test holds them to
/// what the settings serialise to).
pub const KEYS: [(&str, &[&str]); 4] = [
    ("sgd", &["lr", "momentum", "nesterov", "weight_decay"]),
    ("adam", &["lr", "beta1", "beta2", "eps", "weight_decay"]),
    ("adamw", &["lr", "beta1", "beta2", "eps", "weight_decay"]),
    ("hessian-free", &["weight_decay", "hessian_free"]),
];

/// The settings `kind` takes under `[optimizer]` (None: no such optimizer).
pub fn keys_of(kind: &str) -> Option<&'static [&'static str]> {
    KEYS.iter()
        .find(|(name, _)| *name == kind)
        .map(|(_, keys)| *keys)
}

/// The optimizer names, as a config writes them.
pub fn names() -> String {
    KEYS.map(|(name, _)| name).join(", ")
}

/// Every optimizer's keys together: what an older hftrain wrote into a run's `config.toml`
/// (and checkpoints) whatever the optimizer.
const OLD_DUMP: [&str; 8] = [
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "beta1",
    "beta2",
    "eps",
    "hessian_free",
];

impl<'de> Deserialize<'de> for OptimizerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // Buffered as TOML values, which keep NaN and infinities for `validate` to name.
        let mut table = toml::Table::deserialize(deserializer)?;
        // `kind` defaults to SGD, as before the settings were split by optimizer.
        let kind = match table.remove("kind") {
            None => "sgd".to_string(),
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "optimizer.kind = {other}: expected one of {}",
                    names()
                )));
            }
        };
        let Some(keys) = keys_of(&kind) else {
            return Err(D::Error::custom(format!(
                "optimizer.kind = {kind:?}: expected one of {}",
                names()
            )));
        };
        if OLD_DUMP.iter().all(|key| table.contains_key(*key)) {
            log::warn!(
                "[optimizer] holds every optimizer's settings, as an older hftrain wrote a \
                 run's config.toml: only those of kind = {kind:?} ({}) are used",
                keys.join(", ")
            );
            table.retain(|key, _| keys.contains(&key));
        }
        if let Some(key) = table.keys().find(|key| !keys.contains(&key.as_str())) {
            return Err(D::Error::custom(foreign_key_message(key, &kind, keys)));
        }
        let parsed = match kind.as_str() {
            "sgd" => settings(&table).map(OptimizerConfig::Sgd),
            "adam" => settings(&table).map(OptimizerConfig::Adam),
            "adamw" => settings(&table).map(OptimizerConfig::Adamw),
            "hessian-free" => settings(&table).map(OptimizerConfig::HessianFree),
            other => Err(format!(
                "optimizer.kind = {other:?} is listed in KEYS but has no settings"
            )),
        };
        parsed.map_err(D::Error::custom)
    }
}

/// The message for `optimizer.<key>` under `kind`, which does not take it.
fn foreign_key_message(key: &str, kind: &str, keys: &[&str]) -> String {
    let users: Vec<&str> = KEYS
        .iter()
        .filter(|(_, keys)| keys.contains(&key))
        .map(|(name, _)| *name)
        .collect();
    if users.is_empty() {
        format!(
            "optimizer.{key}: unknown setting; kind = {kind:?} takes {}",
            keys.join(", ")
        )
    } else {
        format!(
            "optimizer.{key} is a setting of {}, not of kind = {kind:?} (which takes {}): \
             remove it, or choose that optimizer",
            users.join(" and "),
            keys.join(", ")
        )
    }
}

/// One optimizer's settings from its keys. A value of the wrong type is named by its key:
/// every setting has a default, so the key that fails alone is the culprit.
fn settings<T: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<T, String> {
    T::deserialize(toml::Value::Table(table.clone())).map_err(|whole| {
        for (key, value) in table {
            let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
            if let Err(e) = T::deserialize(toml::Value::Table(alone)) {
                return format!("optimizer.{key} = {value}: {}", e.to_string().trim_end());
            }
        }
        format!("[optimizer]: {}", whole.to_string().trim_end())
    })
}

impl std::fmt::Display for OptimizerConfig {
    /// The name a config writes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl OptimizerConfig {
    /// The name a config writes (`kind`).
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd(_) => "sgd",
            OptimizerConfig::Adam(_) => "adam",
            OptimizerConfig::Adamw(_) => "adamw",
            OptimizerConfig::HessianFree(_) => hessian_free::KIND,
        }
    }

    /// The peak learning rate the schedule scales (None: the optimizer has none).
    pub fn lr(&self) -> Option<f64> {
        match self {
            OptimizerConfig::Sgd(c) => Some(c.lr),
            OptimizerConfig::Adam(c) | OptimizerConfig::Adamw(c) => Some(c.lr),
            OptimizerConfig::HessianFree(_) => None,
        }
    }

    pub fn weight_decay(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd(c) => c.weight_decay,
            OptimizerConfig::Adam(c) | OptimizerConfig::Adamw(c) => c.weight_decay,
            OptimizerConfig::HessianFree(c) => c.weight_decay,
        }
    }

    /// Whether its steps report what `steps.csv` records (`StepInfo::report`).
    pub fn reports_steps(&self) -> bool {
        matches!(self, OptimizerConfig::HessianFree(_))
    }

    /// Hessian-free's settings, where that is the optimizer.
    pub fn hessian_free(&self) -> Option<&HessianFreeConfig> {
        match self {
            OptimizerConfig::HessianFree(c) => Some(&c.hessian_free),
            _ => None,
        }
    }

    pub fn hessian_free_mut(&mut self) -> Option<&mut HessianFreeConfig> {
        match self {
            OptimizerConfig::HessianFree(c) => Some(&mut c.hessian_free),
            _ => None,
        }
    }

    pub fn validate(&self, problems: &mut Problems) {
        match self {
            OptimizerConfig::Sgd(c) => c.validate(problems),
            OptimizerConfig::Adam(c) | OptimizerConfig::Adamw(c) => c.validate(problems),
            OptimizerConfig::HessianFree(c) => {
                check_weight_decay(c.weight_decay, problems);
                c.hessian_free.validate(problems);
            }
        }
    }

    /// The optimizer for a parameter vector of `len` values; `decay_mask` is 1 where weight
    /// decay applies.
    pub fn build(&self, decay_mask: Tensor<1>, len: usize) -> Box<dyn Optimizer> {
        match self {
            OptimizerConfig::Sgd(c) => Box::new(sgd::Sgd::new(c, decay_mask, len)),
            OptimizerConfig::Adam(c) => Box::new(adam::Adam::new(c, decay_mask, len, false)),
            OptimizerConfig::Adamw(c) => Box::new(adam::Adam::new(c, decay_mask, len, true)),
            // Weight decay is part of the objective Hessian-free minimises (curvature.rs).
            OptimizerConfig::HessianFree(c) => {
                Box::new(hessian_free::HessianFree::new(&c.hessian_free, len))
            }
        }
    }
}

pub(crate) fn check_lr(lr: f64, problems: &mut Problems) {
    problems.check(
        positive(lr),
        format!("optimizer.lr = {lr}: expected a positive number"),
    );
}

pub(crate) fn check_weight_decay(weight_decay: f64, problems: &mut Problems) {
    problems.check(
        weight_decay.is_finite() && weight_decay >= 0.0,
        format!("optimizer.weight_decay = {weight_decay}: expected zero or a positive number"),
    );
}
