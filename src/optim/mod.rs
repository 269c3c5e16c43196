//! Optimizers over flat parameter vectors, each a small state plus an update rule (as in
//! optax), testable without a network; and the learning-rate schedule.

pub mod adam;
pub mod schedule;
pub mod sgd;

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{OptimizerConfig, OptimizerKind};
use crate::params::{from_host, to_host};

/// An optimizer's state as plain data, for checkpoints: named flat vectors and scalars.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OptimizerState {
    pub kind: String,
    pub scalars: BTreeMap<String, f64>,
    #[serde(skip)]
    pub vectors: BTreeMap<String, Vec<f32>>,
}

impl OptimizerState {
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.into(),
            ..Self::default()
        }
    }

    pub fn put_vector(&mut self, name: &str, tensor: &Option<Tensor<1>>) {
        if let Some(t) = tensor {
            self.vectors.insert(name.into(), to_host(t));
        }
    }

    /// The vector `name`, uploaded, if the state has it; its length must be `len`.
    pub fn take_vector(&self, name: &str, len: usize, device: &Device) -> Result<Option<Tensor<1>>> {
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

/// A first-order optimizer: parameters and gradient in, new parameters out.
pub trait Optimizer {
    fn step(&mut self, params: Tensor<1>, gradient: Tensor<1>, lr: f64) -> Tensor<1>;
    fn state(&self) -> OptimizerState;
    fn load_state(&mut self, state: &OptimizerState, device: &Device) -> Result<()>;
}

/// Builds the configured optimizer for a parameter vector of `len` values; `decay_mask` is 1
/// where weight decay applies.
pub fn build(config: &OptimizerConfig, decay_mask: Tensor<1>, len: usize) -> Box<dyn Optimizer> {
    match config.kind {
        OptimizerKind::Sgd => Box::new(sgd::Sgd::new(config, decay_mask, len)),
        OptimizerKind::Adam => Box::new(adam::Adam::new(config, decay_mask, len, false)),
        OptimizerKind::Adamw => Box::new(adam::Adam::new(config, decay_mask, len, true)),
    }
}

fn check_kind(state: &OptimizerState, expected: &str) -> Result<()> {
    if state.kind != expected {
        bail!(
            "the checkpoint holds the state of optimizer `{}`, this run uses `{expected}`",
            state.kind
        );
    }
    Ok(())
}
