//! SGD with (Nesterov) momentum and L2 weight decay, in PyTorch's formulation:
//! `g += wd * mask * theta; v = mu v + g; theta -= lr * (nesterov ? g + mu v : v)`.

use anyhow::Result;
use burn::prelude::*;

use super::{Optimizer, OptimizerState, check_kind};
use crate::config::OptimizerConfig;

pub struct Sgd {
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    decay_mask: Tensor<1>,
    len: usize,
    velocity: Option<Tensor<1>>,
}

impl Sgd {
    pub fn new(config: &OptimizerConfig, decay_mask: Tensor<1>, len: usize) -> Self {
        Self {
            momentum: config.momentum,
            nesterov: config.nesterov,
            weight_decay: config.weight_decay,
            decay_mask,
            len,
            velocity: None,
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: Tensor<1>, gradient: Tensor<1>, lr: f64) -> Tensor<1> {
        let mut g = gradient;
        if self.weight_decay > 0.0 {
            g = g + params
                .clone()
                .mul(self.decay_mask.clone())
                .mul_scalar(self.weight_decay);
        }
        let direction = if self.momentum > 0.0 {
            let v = match self.velocity.take() {
                Some(v) => v.mul_scalar(self.momentum) + g.clone(),
                // PyTorch starts the buffer at the first gradient.
                None => g.clone(),
            };
            self.velocity = Some(v.clone());
            if self.nesterov {
                g + v.mul_scalar(self.momentum)
            } else {
                v
            }
        } else {
            g
        };
        params - direction.mul_scalar(lr)
    }

    fn state(&self) -> OptimizerState {
        let mut state = OptimizerState::new("sgd");
        state.put_vector("velocity", &self.velocity);
        state
    }

    fn load_state(&mut self, state: &OptimizerState, device: &Device) -> Result<()> {
        check_kind(state, "sgd")?;
        self.velocity = state.take_vector("velocity", self.len, device)?;
        Ok(())
    }
}
