//! Optimizers over flat parameter vectors, each a small state plus an update rule (as in
//! optax), testable without a network; and the learning-rate schedule.

pub mod adam;
pub mod cg;
pub mod hessian_free;
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

/// A first-order optimizer: parameters and gradient in, new parameters out.
pub trait Optimizer {
    fn step(&mut self, params: Tensor<1>, gradient: Tensor<1>, lr: f64) -> Tensor<1>;
    fn state(&self) -> OptimizerState;
    fn load_state(&mut self, state: &OptimizerState, device: &Device) -> Result<()>;
}

/// The configured optimizer: a first-order rule fed with gradients, or Hessian-free, which
/// also asks the objective for values and curvature products. One per run: boxing the larger
/// variant would save nothing.
#[allow(clippy::large_enum_variant)]
pub enum Method {
    FirstOrder(Box<dyn Optimizer>),
    HessianFree(hessian_free::HessianFree),
}

impl Method {
    pub fn state(&self) -> OptimizerState {
        match self {
            Method::FirstOrder(o) => o.state(),
            Method::HessianFree(hf) => hf.state(),
        }
    }

    pub fn load_state(&mut self, state: &OptimizerState, device: &Device) -> Result<()> {
        match self {
            Method::FirstOrder(o) => o.load_state(state, device),
            Method::HessianFree(hf) => hf.load_state(state, device),
        }
    }
}

/// Builds the configured optimizer for a parameter vector of `len` values; `decay_mask` is 1
/// where weight decay applies.
pub fn build(config: &OptimizerConfig, decay_mask: Tensor<1>, len: usize) -> Method {
    match build_first_order(config, decay_mask, len) {
        Some(o) => Method::FirstOrder(o),
        // Weight decay is part of the objective Hessian-free minimises (curvature.rs).
        None => Method::HessianFree(hessian_free::HessianFree::new(&config.hessian_free, len)),
    }
}

/// The configured first-order optimizer; None for Hessian-free.
pub fn build_first_order(
    config: &OptimizerConfig,
    decay_mask: Tensor<1>,
    len: usize,
) -> Option<Box<dyn Optimizer>> {
    Some(match config.kind {
        OptimizerKind::Sgd => Box::new(sgd::Sgd::new(config, decay_mask, len)),
        OptimizerKind::Adam => Box::new(adam::Adam::new(config, decay_mask, len, false)),
        OptimizerKind::Adamw => Box::new(adam::Adam::new(config, decay_mask, len, true)),
        OptimizerKind::HessianFree => return None,
    })
}

pub(crate) fn check_kind(state: &OptimizerState, expected: &str) -> Result<()> {
    if state.kind != expected {
        bail!(
            "the checkpoint holds the state of optimizer `{}`, this run uses `{expected}`",
            state.kind
        );
    }
    Ok(())
}
