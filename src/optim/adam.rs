//! Adam (L2 weight decay added to the gradient) and AdamW (decoupled weight decay), with
//! bias correction.

use anyhow::{Context, Result};
use burn::prelude::*;

use super::{Optimizer, OptimizerState, check_kind};
use crate::config::OptimizerConfig;

pub struct Adam {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    decay_mask: Tensor<1>,
    len: usize,
    first: Option<Tensor<1>>,
    second: Option<Tensor<1>>,
    steps: u64,
}

impl Adam {
    pub fn new(
        config: &OptimizerConfig,
        decay_mask: Tensor<1>,
        len: usize,
        decoupled: bool,
    ) -> Self {
        Self {
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.eps,
            weight_decay: config.weight_decay,
            decoupled,
            decay_mask,
            len,
            first: None,
            second: None,
            steps: 0,
        }
    }

    fn kind(&self) -> &'static str {
        if self.decoupled { "adamw" } else { "adam" }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: Tensor<1>, gradient: Tensor<1>, lr: f64) -> Tensor<1> {
        let mut params = params;
        let mut g = gradient;
        if self.weight_decay > 0.0 {
            let decay = params
                .clone()
                .mul(self.decay_mask.clone())
                .mul_scalar(self.weight_decay);
            if self.decoupled {
                params = params - decay.mul_scalar(lr);
            } else {
                g = g + decay;
            }
        }
        self.steps += 1;
        let m = match self.first.take() {
            Some(m) => m.mul_scalar(self.beta1) + g.clone().mul_scalar(1.0 - self.beta1),
            None => g.clone().mul_scalar(1.0 - self.beta1),
        };
        let v = match self.second.take() {
            Some(v) => v.mul_scalar(self.beta2) + g.clone().square().mul_scalar(1.0 - self.beta2),
            None => g.square().mul_scalar(1.0 - self.beta2),
        };
        let t = self.steps as i32;
        let correction1 = 1.0 - self.beta1.powi(t);
        let correction2 = 1.0 - self.beta2.powi(t);
        let update = m.clone().div_scalar(correction1).div(
            v.clone()
                .div_scalar(correction2)
                .sqrt()
                .add_scalar(self.eps),
        );
        self.first = Some(m);
        self.second = Some(v);
        params - update.mul_scalar(lr)
    }

    fn state(&self) -> OptimizerState {
        let mut state = OptimizerState::new(self.kind());
        state.put_vector("first_moment", &self.first);
        state.put_vector("second_moment", &self.second);
        state.scalars.insert("steps".into(), self.steps as f64);
        state
    }

    fn load_state(&mut self, state: &OptimizerState, device: &Device) -> Result<()> {
        check_kind(state, self.kind())?;
        self.first = state.take_vector("first_moment", self.len, device)?;
        self.second = state.take_vector("second_moment", self.len, device)?;
        self.steps = *state
            .scalars
            .get("steps")
            .context("the checkpoint's Adam state has no step count")? as u64;
        Ok(())
    }
}
