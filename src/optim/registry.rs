//! Every optimizer a config can name, registered the way `model/layers` registers layers: an
//! optimizer is its file (settings implementing `OptimizerSettings`, and the rule
//! implementing `Optimizer`), one line in `OPTIMIZERS` and a row in README. Its kind, keys,
//! defaults, parsing, validation, construction, capabilities and step-log columns all come
//! from its settings type, so nothing else in hftrain names an optimizer.
//!
//! `register` adds one at run time (the tests define plain gradient descent that way).

use std::any::Any;
use std::fmt::Debug;
use std::sync::RwLock;

use burn::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::step_log::Column;
use super::{Optimizer, adam, hessian_free, kfac, sgd};
use crate::support::validate::Problems;

/// What the rest of hftrain may rely on about an optimizer, stated rather than inferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Its step scales a learning rate, which `[schedule]` sets (without one, the step length
    /// is the optimizer's own and a schedule is refused).
    pub learning_rate: bool,
    /// It asks for the loss gradient only, so `train.gradient` (the route) and
    /// `train.precision` (half precision) choose how that gradient is taken.
    pub first_order: bool,
    /// It asks for curvature products on a sub-batch (its settings say which and how many
    /// images); such steps are few and large, so batch-norm statistics are recomputed before
    /// each evaluation by default.
    pub curvature_products: bool,
}

impl Capabilities {
    /// SGD's and Adam's: a learning rate, the loss gradient only.
    pub const FIRST_ORDER: Self = Self {
        learning_rate: true,
        first_order: true,
        curvature_products: false,
    };
}

/// An optimizer's settings: the `[optimizer]` keys besides `kind` are its serde fields (each
/// with a default), and the type says everything else the program needs of the optimizer.
/// The keys are read from the default settings' serialisation, so every top-level field must
/// serialise there (no `Option` left `None`, no `skip_serializing_if` at the top level; a
/// nested table may skip its own fields).
pub trait OptimizerSettings:
    Debug + Clone + PartialEq + Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// `kind` in the config.
    const KIND: &'static str;
    const CAPABILITIES: Capabilities;
    /// Its step log's columns after `step,epoch,loss` (none: no `steps.csv`).
    const STEP_COLUMNS: &'static [Column] = &[];

    /// The peak learning rate the schedule scales (None: the optimizer has none).
    fn lr(&self) -> Option<f64>;
    /// Whether `[schedule]` applies to its steps: it scales the learning rate where there is
    /// one; an optimizer without one may opt in (Hessian-free's `step_schedule`).
    fn scheduled(&self) -> bool {
        Self::CAPABILITIES.learning_rate
    }
    fn weight_decay(&self) -> f64;
    /// Images of each batch its curvature (products or Kronecker factors) is taken on, where
    /// it asks for any.
    fn curvature_batch_size(&self) -> Option<usize> {
        None
    }
    /// Every problem of the values serde's types cannot catch, each naming its key.
    fn validate(&self, problems: &mut Problems);
    /// The optimizer for a parameter vector of `len` values; `decay_mask` is 1 where weight
    /// decay applies.
    fn build(&self, decay_mask: Tensor<1>, len: usize) -> Box<dyn Optimizer>;
}

/// `OptimizerSettings` behind a pointer: what `OptimizerConfig` holds.
pub(crate) trait AnySettings: Debug + Send + Sync {
    fn kind(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    fn step_columns(&self) -> &'static [Column];
    fn lr(&self) -> Option<f64>;
    fn scheduled(&self) -> bool;
    fn weight_decay(&self) -> f64;
    fn curvature_batch_size(&self) -> Option<usize>;
    fn validate(&self, problems: &mut Problems);
    fn build(&self, decay_mask: Tensor<1>, len: usize) -> Box<dyn Optimizer>;
    fn to_table(&self) -> toml::Table;
    fn boxed_clone(&self) -> Box<dyn AnySettings>;
    fn equals(&self, other: &dyn AnySettings) -> bool;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: OptimizerSettings> AnySettings for T {
    fn kind(&self) -> &'static str {
        T::KIND
    }
    fn capabilities(&self) -> Capabilities {
        T::CAPABILITIES
    }
    fn step_columns(&self) -> &'static [Column] {
        T::STEP_COLUMNS
    }
    fn lr(&self) -> Option<f64> {
        OptimizerSettings::lr(self)
    }
    fn scheduled(&self) -> bool {
        OptimizerSettings::scheduled(self)
    }
    fn weight_decay(&self) -> f64 {
        OptimizerSettings::weight_decay(self)
    }
    fn curvature_batch_size(&self) -> Option<usize> {
        OptimizerSettings::curvature_batch_size(self)
    }
    fn validate(&self, problems: &mut Problems) {
        OptimizerSettings::validate(self, problems)
    }
    fn build(&self, decay_mask: Tensor<1>, len: usize) -> Box<dyn Optimizer> {
        OptimizerSettings::build(self, decay_mask, len)
    }
    fn to_table(&self) -> toml::Table {
        match toml::Value::try_from(self) {
            Ok(toml::Value::Table(table)) => table,
            other => panic!("optimizer settings serialise to a table, not {other:?}"),
        }
    }
    fn boxed_clone(&self) -> Box<dyn AnySettings> {
        Box::new(self.clone())
    }
    fn equals(&self, other: &dyn AnySettings) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// One optimizer a config can name.
#[derive(Clone, Copy)]
pub struct Entry {
    pub kind: &'static str,
    /// Its `[optimizer]` keys besides `kind`: the fields its settings serialise.
    keys: fn() -> Vec<String>,
    default: fn() -> Box<dyn AnySettings>,
    parse: fn(toml::Table) -> Result<Box<dyn AnySettings>, toml::de::Error>,
}

impl Entry {
    /// The entry of the optimizer whose settings are `T`.
    pub const fn of<T: OptimizerSettings>() -> Self {
        Self {
            kind: T::KIND,
            keys: keys_of::<T>,
            default: default_of::<T>,
            parse: parse_as::<T>,
        }
    }

    pub fn keys(&self) -> Vec<String> {
        (self.keys)()
    }

    pub(crate) fn default_settings(&self) -> Box<dyn AnySettings> {
        (self.default)()
    }

    pub(crate) fn parse(
        &self,
        table: toml::Table,
    ) -> Result<Box<dyn AnySettings>, toml::de::Error> {
        (self.parse)(table)
    }
}

impl Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("kind", &self.kind).finish()
    }
}

fn keys_of<T: OptimizerSettings>() -> Vec<String> {
    T::default().to_table().keys().cloned().collect()
}

fn default_of<T: OptimizerSettings>() -> Box<dyn AnySettings> {
    Box::new(T::default())
}

fn parse_as<T: OptimizerSettings>(
    table: toml::Table,
) -> Result<Box<dyn AnySettings>, toml::de::Error> {
    T::deserialize(toml::Value::Table(table)).map(|t| Box::new(t) as Box<dyn AnySettings>)
}

/// The optimizers hftrain ships.
pub const OPTIMIZERS: &[Entry] = &[
    Entry::of::<sgd::SgdConfig>(),
    Entry::of::<adam::AdamConfig>(),
    Entry::of::<adam::AdamwConfig>(),
    Entry::of::<hessian_free::HessianFreeSettings>(),
    Entry::of::<kfac::KfacConfig>(),
];

/// Optimizers added at run time by `register`.
static REGISTERED: RwLock<Vec<Entry>> = RwLock::new(Vec::new());

/// Makes the optimizer whose settings are `T` available to configs (`kind = T::KIND`); a
/// kind already known is refused.
pub fn register<T: OptimizerSettings>() -> Result<(), String> {
    let mut registered = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    if OPTIMIZERS
        .iter()
        .chain(registered.iter())
        .any(|e| e.kind == T::KIND)
    {
        return Err(format!(
            "optimizer kind {:?} is already registered",
            T::KIND
        ));
    }
    registered.push(Entry::of::<T>());
    Ok(())
}

/// Every optimizer: those shipped, then those registered.
pub fn entries() -> Vec<Entry> {
    let registered = REGISTERED.read().unwrap_or_else(|e| e.into_inner());
    OPTIMIZERS
        .iter()
        .chain(registered.iter())
        .copied()
        .collect()
}

/// The optimizer of `kind`, if there is one.
pub fn find(kind: &str) -> Option<Entry> {
    entries().into_iter().find(|e| e.kind == kind)
}

/// The optimizer names, as a config writes them.
pub fn names() -> String {
    let names: Vec<&str> = entries().iter().map(|e| e.kind).collect();
    names.join(", ")
}
