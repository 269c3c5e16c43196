//! Adam (L2 weight decay added to the gradient) and AdamW (decoupled weight decay), with
//! bias correction.

use anyhow::Result;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{
    Capabilities, Objective, Optimizer, OptimizerSettings, OptimizerState, Step, check_lr,
    check_weight_decay, first_order_step,
};
use crate::support::validate::{Problems, positive};

/// `kind = "adam"` and `kind = "adamw"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamConfig {
    /// Peak learning rate (the schedule scales it).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Adam: L2 weight decay added to the gradient; AdamW: decoupled. On convolution and
    /// linear weights, not on biases or batch-norm parameters.
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            // PyTorch's and Keras's default: Adam's step is about `lr` per coordinate, so
            // an SGD-sized rate (0.1, the default here before) throws the weights about.
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 5e-4,
        }
    }
}

/// `kind = "adamw"`: Adam's settings, with the weight decay decoupled from the gradient.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AdamwConfig(pub AdamConfig);

impl OptimizerSettings for AdamConfig {
    const KIND: &'static str = "adam";
    const CAPABILITIES: Capabilities = Capabilities::FIRST_ORDER;

    fn lr(&self) -> Option<f64> {
        Some(self.lr)
    }

    fn weight_decay(&self) -> f64 {
        self.weight_decay
    }

    fn build(&self, decay_mask: Tensor<1>, len: usize) -> Box<dyn Optimizer> {
        Box::new(Adam::new(self, decay_mask, len, false))
    }

    fn validate(&self, problems: &mut Problems) {
        self.check(problems)
    }
}

impl OptimizerSettings for AdamwConfig {
    const KIND: &'static str = "adamw";
    const CAPABILITIES: Capabilities = Capabilities::FIRST_ORDER;

    fn lr(&self) -> Option<f64> {
        Some(self.0.lr)
    }

    fn weight_decay(&self) -> f64 {
        self.0.weight_decay
    }

    fn build(&self, decay_mask: Tensor<1>, len: usize) -> Box<dyn Optimizer> {
        Box::new(Adam::new(&self.0, decay_mask, len, true))
    }

    fn validate(&self, problems: &mut Problems) {
        self.0.check(problems)
    }
}

impl AdamConfig {
    fn check(&self, problems: &mut Problems) {
        check_lr(self.lr, problems);
        for (key, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            problems.check(
                beta.is_finite() && (0.0..1.0).contains(&beta),
                format!("optimizer.{key} = {beta}: expected a number in [0, 1)"),
            );
        }
        problems.check(
            positive(self.eps),
            format!("optimizer.eps = {}: expected a positive number", self.eps),
        );
        check_weight_decay(self.weight_decay, problems);
    }
}

pub struct Adam {
    config: AdamConfig,
    decoupled: bool,
    decay_mask: Tensor<1>,
    len: usize,
    first: Option<Tensor<1>>,
    second: Option<Tensor<1>>,
    counters: Counters,
}

/// Adam's scalar state, as checkpoints keep it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Counters {
    /// Steps taken (the bias correction's exponent).
    steps: u64,
}

const FIRST_MOMENT: &str = "first_moment";
const SECOND_MOMENT: &str = "second_moment";

impl Adam {
    pub fn new(config: &AdamConfig, decay_mask: Tensor<1>, len: usize, decoupled: bool) -> Self {
        Self {
            config: config.clone(),
            decoupled,
            decay_mask,
            len,
            first: None,
            second: None,
            counters: Counters::default(),
        }
    }

    fn kind(&self) -> &'static str {
        if self.decoupled {
            AdamwConfig::KIND
        } else {
            AdamConfig::KIND
        }
    }

    /// The update rule: new parameters from the parameters and the loss gradient.
    pub fn update(&mut self, params: Tensor<1>, gradient: Tensor<1>, lr: f64) -> Tensor<1> {
        let c = &self.config;
        let mut params = params;
        let mut g = gradient;
        if c.weight_decay > 0.0 {
            let decay = params
                .clone()
                .mul(self.decay_mask.clone())
                .mul_scalar(c.weight_decay);
            if self.decoupled {
                params = params - decay.mul_scalar(lr);
            } else {
                g = g + decay;
            }
        }
        self.counters.steps += 1;
        let m = match self.first.take() {
            Some(m) => m.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1),
            None => g.clone().mul_scalar(1.0 - c.beta1),
        };
        let v = match self.second.take() {
            Some(v) => v.mul_scalar(c.beta2) + g.clone().square().mul_scalar(1.0 - c.beta2),
            None => g.square().mul_scalar(1.0 - c.beta2),
        };
        let t = self.counters.steps as i32;
        let correction1 = 1.0 - c.beta1.powi(t);
        let correction2 = 1.0 - c.beta2.powi(t);
        let update = m
            .clone()
            .div_scalar(correction1)
            .div(v.clone().div_scalar(correction2).sqrt().add_scalar(c.eps));
        self.first = Some(m);
        self.second = Some(v);
        params - update.mul_scalar(lr)
    }
}

impl Optimizer for Adam {
    fn step(&mut self, objective: &dyn Objective, params: &Tensor<1>, lr: f64) -> Result<Step> {
        Ok(first_order_step(objective, params, lr, |p, g, lr| {
            self.update(p, g, lr)
        }))
    }

    fn state(&self) -> OptimizerState {
        let mut state = OptimizerState::new(self.kind(), &self.counters);
        state.put_vector(FIRST_MOMENT, &self.first);
        state.put_vector(SECOND_MOMENT, &self.second);
        state
    }

    fn load_state(&mut self, state: &OptimizerState, device: &Device) -> Result<()> {
        self.counters = state.scalars(self.kind())?;
        self.first = state.take_vector(FIRST_MOMENT, self.len, device)?;
        self.second = state.take_vector(SECOND_MOMENT, self.len, device)?;
        Ok(())
    }
}
