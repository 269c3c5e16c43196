//! Optimizers over flat parameter vectors. Each is a small typed state and a step (as in
//! burn-optim and optax), testable without a network: it sees the batch only through the
//! `Objective` trait (value, gradient, curvature products), so the training loop runs every
//! optimizer the same way. `OptimizerConfig` is `[optimizer]`: the settings of one optimizer
//! of the registry (`registry.rs`), which says everything else about it.

pub mod adam;
pub mod averaging;
pub mod cg;
pub mod hessian_free;
pub mod kfac;
pub mod kronecker;
pub mod objective;
pub mod registry;
pub mod schedule;
pub mod sgd;
pub mod step_log;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use hessian_free::{
    CurvatureKind, HessianFreeConfig, HessianFreeSettings, Preconditioning, StepReport,
};
pub use objective::{Gradient, Objective, Problem};
pub use registry::{Capabilities, Entry, OptimizerSettings, register};
pub use step_log::{Cell, Column, Format, StepRecord};

use registry::AnySettings;

use crate::params::{from_host, to_host};
use crate::support::validate::{Problems, positive};

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
    /// The step's row of the optimizer's step log (None for an optimizer without one).
    pub record: Option<StepRecord>,
    /// The optimizer's part of the progress line.
    pub summary: String,
    /// The optimizer's own typed account of the step, for callers that know its type
    /// (`details::<StepReport>()` for Hessian-free).
    details: Option<Arc<dyn Any + Send + Sync>>,
}

impl StepInfo {
    /// A step with no record: its summary is the learning rate.
    pub fn plain(step_length: f64) -> Self {
        Self {
            step_length,
            record: None,
            summary: format!("lr {step_length:.2e}"),
            details: None,
        }
    }

    /// A step with a step-log row and the optimizer's own account of it.
    pub fn recorded<T: Any + Send + Sync>(
        step_length: f64,
        record: StepRecord,
        summary: String,
        details: T,
    ) -> Self {
        Self {
            step_length,
            record: Some(record),
            summary,
            details: Some(Arc::new(details)),
        }
    }

    /// The optimizer's own account of the step, if it is a `T`.
    pub fn details<T: Any>(&self) -> Option<&T> {
        self.details.as_deref()?.downcast_ref()
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

    /// The vector `name`, uploaded, whatever its length (its owner checks it); an error if
    /// the state lacks it.
    pub fn take_any_vector(&self, name: &str, device: &Device) -> Result<Tensor<1>> {
        match self.vectors.get(name) {
            Some(v) => Ok(from_host(v.clone(), device)),
            None => bail!("the checkpoint's optimizer state lacks `{name}`"),
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
        info: StepInfo::plain(lr),
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

/// `[optimizer]`: which optimizer, with its settings (`kind` names an entry of the
/// registry; the other keys are that optimizer's). A key of another optimizer is refused with
/// its name (an SGD run given `beta1` would silently ignore it otherwise).
pub struct OptimizerConfig {
    settings: Box<dyn AnySettings>,
}

impl OptimizerConfig {
    /// The config of the optimizer whose settings these are.
    pub fn new<T: OptimizerSettings>(settings: T) -> Self {
        Self {
            settings: Box::new(settings),
        }
    }

    /// The default settings of optimizer `kind` (None: no such optimizer).
    pub fn default_of(kind: &str) -> Option<Self> {
        registry::find(kind).map(|entry| Self {
            settings: entry.default_settings(),
        })
    }

    /// The name a config writes (`kind`).
    pub fn name(&self) -> &'static str {
        self.settings.kind()
    }

    pub fn capabilities(&self) -> Capabilities {
        self.settings.capabilities()
    }

    /// The columns of its step log after `step,epoch,loss` (none: it writes no `steps.csv`).
    pub fn step_columns(&self) -> &'static [Column] {
        self.settings.step_columns()
    }

    /// The peak learning rate the schedule scales (None: the optimizer has none).
    pub fn lr(&self) -> Option<f64> {
        self.settings.lr()
    }

    /// Whether `[schedule]` applies to its steps (see `OptimizerSettings::scheduled`).
    pub fn scheduled(&self) -> bool {
        self.settings.scheduled()
    }

    pub fn weight_decay(&self) -> f64 {
        self.settings.weight_decay()
    }

    /// Images of each batch its curvature is taken on (see
    /// `OptimizerSettings::curvature_batch_size`).
    pub fn curvature_batch_size(&self) -> Option<usize> {
        self.settings.curvature_batch_size()
    }

    pub fn validate(&self, problems: &mut Problems) {
        self.settings.validate(problems)
    }

    /// The optimizer for a parameter vector of `len` values; `decay_mask` is 1 where weight
    /// decay applies.
    pub fn build(&self, decay_mask: Tensor<1>, len: usize) -> Box<dyn Optimizer> {
        self.settings.build(decay_mask, len)
    }

    /// The settings, if they are of type `T`.
    pub fn settings<T: OptimizerSettings>(&self) -> Option<&T> {
        self.settings.as_any().downcast_ref()
    }

    pub fn settings_mut<T: OptimizerSettings>(&mut self) -> Option<&mut T> {
        self.settings.as_any_mut().downcast_mut()
    }

    /// Hessian-free's own settings, where that is the optimizer.
    pub fn hessian_free(&self) -> Option<&HessianFreeConfig> {
        self.settings::<HessianFreeSettings>()
            .map(|s| &s.hessian_free)
    }

    pub fn hessian_free_mut(&mut self) -> Option<&mut HessianFreeConfig> {
        self.settings_mut::<HessianFreeSettings>()
            .map(|s| &mut s.hessian_free)
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self::new(sgd::SgdConfig::default())
    }
}

impl Clone for OptimizerConfig {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.boxed_clone(),
        }
    }
}

impl PartialEq for OptimizerConfig {
    fn eq(&self, other: &Self) -> bool {
        self.settings.equals(other.settings.as_ref())
    }
}

impl std::fmt::Debug for OptimizerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.name(), self.settings)
    }
}

impl std::fmt::Display for OptimizerConfig {
    /// The name a config writes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for OptimizerConfig {
    /// `kind` first, then the optimizer's own settings.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let table = self.settings.to_table();
        let mut map = serializer.serialize_map(Some(table.len() + 1))?;
        map.serialize_entry("kind", self.name())?;
        for (key, value) in &table {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// The keys each optimizer takes under `[optimizer]` besides `kind`.
pub fn keys_of(kind: &str) -> Option<Vec<String>> {
    registry::find(kind).map(|entry| entry.keys())
}

/// The optimizer names, as a config writes them.
pub fn names() -> String {
    registry::names()
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
        let Some(entry) = registry::find(&kind) else {
            return Err(D::Error::custom(format!(
                "optimizer.kind = {kind:?}: expected one of {}",
                names()
            )));
        };
        let keys = entry.keys();
        if OLD_DUMP.iter().all(|key| table.contains_key(*key)) {
            log::warn!(
                "[optimizer] holds every optimizer's settings, as an older hftrain wrote a \
                 run's config.toml: only those of kind = {kind:?} ({}) are used",
                keys.join(", ")
            );
            table.retain(|key, _| keys.iter().any(|k| k == key));
        }
        if let Some(key) = table.keys().find(|key| !keys.contains(key)) {
            return Err(D::Error::custom(foreign_key_message(key, &kind, &keys)));
        }
        settings(&entry, &table)
            .map(|settings| OptimizerConfig { settings })
            .map_err(D::Error::custom)
    }
}

/// The message for `optimizer.<key>` under `kind`, which does not take it.
fn foreign_key_message(key: &str, kind: &str, keys: &[String]) -> String {
    let users: Vec<&str> = registry::entries()
        .into_iter()
        .filter(|entry| entry.keys().iter().any(|k| k == key))
        .map(|entry| entry.kind)
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
fn settings(entry: &Entry, table: &toml::Table) -> Result<Box<dyn AnySettings>, String> {
    entry.parse(table.clone()).map_err(|whole| {
        for (key, value) in table {
            let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
            if let Err(e) = entry.parse(alone) {
                return format!("optimizer.{key} = {value}: {}", e.to_string().trim_end());
            }
        }
        format!("[optimizer]: {}", whole.to_string().trim_end())
    })
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
