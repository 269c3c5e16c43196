//! Iterate averaging, for any optimizer: a running average of the parameters after each step,
//! evaluated beside the live parameters (the averaged weights often generalise better than
//! the last iterate: Polyak and Juditsky 1992, Izmailov et al. 2018's SWA, the EMA of most
//! modern recipes). The training itself is untouched: the average only watches it.
//!
//! `[train] average = { kind = "ema", decay = 0.99 }`: an exponential moving average,
//! `a_t = decay a_{t-1} + (1 - decay) x_t`, started at the first step's parameters
//! (PyTorch's `AveragedModel` starts the same way); it spans about `1 / (1 - decay)` steps.
//! `[train] average = { kind = "tail", start_epoch = 6 }`: the plain mean of the parameters
//! after every step from that epoch on (Polyak averaging, SWA with a constant schedule).

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::params::{from_host, to_host};
use crate::support::validate::Problems;

/// `train.average`: which running average of the parameters to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AverageConfig {
    /// Exponential moving average with this decay per step, in (0, 1).
    Ema { decay: f64 },
    /// Equal-weight mean of the parameters after every step from `start_epoch` (counted
    /// from 1, as the progress lines count epochs) to the end of the run.
    Tail { start_epoch: usize },
}

impl std::fmt::Display for AverageConfig {
    /// How the log and the report name it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AverageConfig::Ema { decay } => write!(f, "exponential moving average (decay {decay})"),
            AverageConfig::Tail { start_epoch } => {
                write!(f, "mean of the iterates from epoch {start_epoch}")
            }
        }
    }
}

impl AverageConfig {
    /// Every problem of the values, each naming its key; `epochs` is `train.epochs`.
    pub fn validate(&self, epochs: usize, problems: &mut Problems) {
        match *self {
            AverageConfig::Ema { decay } => problems.check(
                decay.is_finite() && decay > 0.0 && decay < 1.0,
                format!(
                    "train.average.decay = {decay}: expected a number in (0, 1) (the average \
                     spans about 1 / (1 - decay) steps: 0.99 about 100)"
                ),
            ),
            AverageConfig::Tail { start_epoch } => problems.check(
                start_epoch >= 1 && start_epoch <= epochs,
                format!(
                    "train.average.start_epoch = {start_epoch}: expected an epoch of the run, \
                     1 to train.epochs = {epochs}"
                ),
            ),
        }
    }
}

/// What a checkpoint keeps of the average: how many iterates it holds (the manifest) and
/// its values (`average.bin`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AverageState {
    /// Iterates averaged so far.
    pub steps: u64,
    #[serde(skip)]
    pub values: Vec<f32>,
}

/// The running average of the parameters (None until its first iterate).
#[derive(Debug, Clone)]
pub struct IterateAverage {
    config: AverageConfig,
    average: Option<Tensor<1>>,
    steps: u64,
}

impl IterateAverage {
    pub fn new(config: &AverageConfig) -> Self {
        Self {
            config: config.clone(),
            average: None,
            steps: 0,
        }
    }

    /// Takes in the parameters after a step of epoch `epoch` (0-based); one fused operation
    /// on the parameter vector, no read from the device.
    pub fn update(&mut self, params: &Tensor<1>, epoch: usize) {
        let next = match (&self.config, self.average.take()) {
            (AverageConfig::Tail { start_epoch }, _) if epoch + 1 < *start_epoch => return,
            (_, None) => params.clone(),
            (AverageConfig::Ema { decay }, Some(average)) => {
                average.mul_scalar(*decay) + params.clone().mul_scalar(1.0 - decay)
            }
            (AverageConfig::Tail { .. }, Some(average)) => {
                // a + (x - a) / (n + 1): the mean of n + 1 iterates (PyTorch's SWA update).
                let weight = 1.0 / (self.steps + 1) as f64;
                average.clone() + (params.clone() - average).mul_scalar(weight)
            }
        };
        self.average = Some(next);
        self.steps += 1;
    }

    /// The averaged parameters, once there is an iterate in them.
    pub fn value(&self) -> Option<&Tensor<1>> {
        self.average.as_ref()
    }

    /// Iterates averaged so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The checkpoint's part (None before the first iterate).
    pub fn state(&self) -> Option<AverageState> {
        self.average.as_ref().map(|average| AverageState {
            steps: self.steps,
            values: to_host(average),
        })
    }

    /// Restores a checkpoint's average of a model with `len` parameters (None: the
    /// checkpoint was taken before the first iterate).
    pub fn load(
        &mut self,
        state: Option<&AverageState>,
        len: usize,
        device: &Device,
    ) -> Result<()> {
        let Some(state) = state else {
            self.average = None;
            self.steps = 0;
            return Ok(());
        };
        if state.values.len() != len || state.steps == 0 {
            bail!(
                "the checkpoint's parameter average holds {} values over {} steps; the model \
                 has {len} parameters (and an average at least one step)",
                state.values.len(),
                state.steps
            );
        }
        self.average = Some(from_host(state.values.clone(), device));
        self.steps = state.steps;
        Ok(())
    }
}
