//! SGD with (Nesterov) momentum and L2 weight decay, in PyTorch's formulation:
//! `g += wd * mask * theta; v = mu v + g; theta -= lr * (nesterov ? g + mu v : v)`.

use anyhow::Result;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{
    Capabilities, Objective, Optimizer, OptimizerSettings, OptimizerState, Step, check_lr,
    check_weight_decay, first_order_step,
};
use crate::support::validate::Problems;

/// `kind = "sgd"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SgdConfig {
    /// Peak learning rate (the schedule scales it).
    pub lr: f64,
    /// Momentum (0: plain SGD).
    pub momentum: f64,
    pub nesterov: bool,
    /// L2 weight decay added to the gradient, on convolution and linear weights (not on
    /// biases or batch-norm parameters).
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
        }
    }
}

impl OptimizerSettings for SgdConfig {
    const KIND: &'static str = KIND;
    const CAPABILITIES: Capabilities = Capabilities::FIRST_ORDER;

    fn lr(&self) -> Option<f64> {
        Some(self.lr)
    }

    fn weight_decay(&self) -> f64 {
        self.weight_decay
    }

    fn build(&self, decay_mask: Tensor<1>, len: usize) -> Box<dyn Optimizer> {
        Box::new(Sgd::new(self, decay_mask, len))
    }

    fn validate(&self, problems: &mut Problems) {
        check_lr(self.lr, problems);
        problems.check(
            self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum),
            format!(
                "optimizer.momentum = {}: expected a number in [0, 1)",
                self.momentum
            ),
        );
        check_weight_decay(self.weight_decay, problems);
    }
}

pub struct Sgd {
    config: SgdConfig,
    decay_mask: Tensor<1>,
    len: usize,
    velocity: Option<Tensor<1>>,
}

/// SGD keeps no scalars.
#[derive(Serialize, Deserialize)]
struct NoScalars {}

const KIND: &str = "sgd";
const VELOCITY: &str = "velocity";

impl Sgd {
    pub fn new(config: &SgdConfig, decay_mask: Tensor<1>, len: usize) -> Self {
        Self {
            config: config.clone(),
            decay_mask,
            len,
            velocity: None,
        }
    }

    /// The update rule: new parameters from the parameters and the loss gradient.
    pub fn update(&mut self, params: Tensor<1>, gradient: Tensor<1>, lr: f64) -> Tensor<1> {
        let c = &self.config;
        let mut g = gradient;
        if c.weight_decay > 0.0 {
            g = g + params
                .clone()
                .mul(self.decay_mask.clone())
                .mul_scalar(c.weight_decay);
        }
        let direction = if c.momentum > 0.0 {
            let v = match self.velocity.take() {
                Some(v) => v.mul_scalar(c.momentum) + g.clone(),
                // PyTorch starts the buffer at the first gradient.
                None => g.clone(),
            };
            self.velocity = Some(v.clone());
            if c.nesterov {
                g + v.mul_scalar(c.momentum)
            } else {
                v
            }
        } else {
            g
        };
        params - direction.mul_scalar(lr)
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, objective: &dyn Objective, params: &Tensor<1>, lr: f64) -> Result<Step> {
        Ok(first_order_step(objective, params, lr, |p, g, lr| {
            self.update(p, g, lr)
        }))
    }

    fn state(&self) -> OptimizerState {
        let mut state = OptimizerState::new(KIND, &NoScalars {});
        state.put_vector(VELOCITY, &self.velocity);
        state
    }

    fn load_state(&mut self, state: &OptimizerState, device: &Device) -> Result<()> {
        let NoScalars {} = state.scalars(KIND)?;
        self.velocity = state.take_vector(VELOCITY, self.len, device)?;
        Ok(())
    }
}
