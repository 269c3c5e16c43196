//! K-FAC as an optimizer of its own (Martens and Grosse 2015; KFC's factors for
//! convolutions, Grosse and Martens 2016): momentum on the gradient preconditioned by the
//! damped inverse of the Kronecker-factored Gauss-Newton matrix, the factors of
//! `optim/kronecker/` that Hessian-free's CG preconditions with.
//!
//! ```text
//! g += wd * mask * theta;  d = (F + (damping + wd) I)^-1 g;  d *= nu;
//! v = mu v + d;  theta -= lr v
//! ```
//!
//! `nu = min(1, sqrt(kl_clip / (lr^2 g^T d)))` bounds the step's predicted change of the
//! model's output distribution (KL clipping, as kfac-pytorch does): a small damping would
//! otherwise let directions of tiny curvature take huge steps. The factors are estimated on
//! the first `curvature_batch_size` images of the batch every `refresh_steps` steps and
//! blended as `factor_decay * previous + (1 - factor_decay) * new`.

use anyhow::Result;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::cg::Preconditioner;
use super::kronecker::KroneckerEstimate;
use super::{
    Capabilities, Objective, Optimizer, OptimizerSettings, OptimizerState, Step, StepInfo,
    check_lr, check_weight_decay, dot, read_scalars,
};
use crate::support::validate::{Problems, fraction, positive};

/// `kind = "kfac"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KfacConfig {
    /// Peak learning rate (the schedule scales it).
    pub lr: f64,
    pub momentum: f64,
    /// L2 weight decay, on convolution and linear weights (added to the gradient, and to
    /// the damping of the curvature it is part of).
    pub weight_decay: f64,
    /// Added to the factored curvature before it is inverted. The default is larger than
    /// kfac-pytorch's 1e-3 (tuned for networks with batch norm): on the small CNN without
    /// batch norm 1e-3 diverged within an epoch, 1e-2 and 3e-2 trained (BENCHMARKS.md).
    pub damping: f64,
    /// The largest predicted change of the output distribution a step may make (KL).
    pub kl_clip: f64,
    /// Images of each batch the factors are estimated on.
    pub curvature_batch_size: usize,
    pub refresh_steps: usize,
    pub factor_decay: f64,
}

impl Default for KfacConfig {
    fn default() -> Self {
        Self {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            damping: 3e-2,
            kl_clip: 1e-3,
            curvature_batch_size: 128,
            refresh_steps: 10,
            factor_decay: 0.95,
        }
    }
}

impl OptimizerSettings for KfacConfig {
    const KIND: &'static str = KIND;
    /// A learning rate, and the loss gradient by the route `train.gradient` chooses; the
    /// factors come from its curvature batch by hftrain's backprop. No curvature products.
    const CAPABILITIES: Capabilities = Capabilities::FIRST_ORDER;

    fn lr(&self) -> Option<f64> {
        Some(self.lr)
    }

    fn weight_decay(&self) -> f64 {
        self.weight_decay
    }

    fn curvature_batch_size(&self) -> Option<usize> {
        Some(self.curvature_batch_size)
    }

    fn build(&self, decay_mask: Tensor<1>, len: usize) -> Box<dyn Optimizer> {
        Box::new(Kfac::new(self, decay_mask, len))
    }

    fn validate(&self, problems: &mut Problems) {
        check_lr(self.lr, problems);
        check_weight_decay(self.weight_decay, problems);
        let key = "optimizer";
        problems.check(
            self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum),
            format!(
                "{key}.momentum = {}: expected a number in [0, 1)",
                self.momentum
            ),
        );
        for (name, value) in [("damping", self.damping), ("kl_clip", self.kl_clip)] {
            problems.check(
                positive(value),
                format!("{key}.{name} = {value}: expected a positive number"),
            );
        }
        for (name, value) in [
            ("curvature_batch_size", self.curvature_batch_size),
            ("refresh_steps", self.refresh_steps),
        ] {
            problems.check(value > 0, format!("{key}.{name} = 0: expected at least 1"));
        }
        problems.check(
            fraction(self.factor_decay) && self.factor_decay < 1.0,
            format!(
                "{key}.factor_decay = {}: expected a number in [0, 1)",
                self.factor_decay
            ),
        );
    }
}

pub struct Kfac {
    config: KfacConfig,
    decay_mask: Tensor<1>,
    len: usize,
    velocity: Option<Tensor<1>>,
    counters: Counters,
    estimate: Option<KroneckerEstimate>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Counters {
    steps: u64,
}

const KIND: &str = "kfac";
const VELOCITY: &str = "velocity";

impl Kfac {
    pub fn new(config: &KfacConfig, decay_mask: Tensor<1>, len: usize) -> Self {
        Self {
            config: config.clone(),
            decay_mask,
            len,
            velocity: None,
            counters: Counters::default(),
            estimate: None,
        }
    }

    /// The preconditioned, KL-clipped direction for the regularised gradient `g` (the
    /// plain gradient where there are no factors yet).
    fn direction(&self, g: Tensor<1>, lr: f64) -> Tensor<1> {
        let c = &self.config;
        let Some(estimate) = &self.estimate else {
            return g;
        };
        let d = estimate
            .eigen
            .preconditioner(c.damping + c.weight_decay)
            .apply(&g);
        let [predicted] = read_scalars([dot(&g, &d)]);
        let nu = match predicted > 0.0 && predicted.is_finite() {
            true => (c.kl_clip / (lr * lr * predicted)).sqrt().min(1.0),
            false => 1.0,
        };
        d.mul_scalar(nu)
    }
}

impl Optimizer for Kfac {
    fn step(&mut self, objective: &dyn Objective, params: &Tensor<1>, lr: f64) -> Result<Step> {
        let c = self.config.clone();
        self.estimate = KroneckerEstimate::refreshed(
            self.estimate.take(),
            objective,
            params,
            self.counters.steps,
            c.refresh_steps,
            c.factor_decay,
        );
        self.counters.steps += 1;
        let gradient = objective.loss_gradient(params)
            + params
                .clone()
                .mul(self.decay_mask.clone())
                .mul_scalar(c.weight_decay);
        let d = self.direction(gradient, lr);
        let v = match self.velocity.take() {
            Some(v) => v.mul_scalar(c.momentum) + d,
            None => d,
        };
        self.velocity = Some(v.clone());
        Ok(Step {
            params: params.clone() - v.mul_scalar(lr),
            info: StepInfo::plain(lr),
        })
    }

    fn state(&self) -> OptimizerState {
        let mut state = OptimizerState::new(KIND, &self.counters);
        state.put_vector(VELOCITY, &self.velocity);
        KroneckerEstimate::save(self.estimate.as_ref(), &mut state);
        state
    }

    fn load_state(&mut self, state: &OptimizerState, device: &Device) -> Result<()> {
        self.counters = state.scalars(KIND)?;
        self.velocity = state.take_vector(VELOCITY, self.len, device)?;
        self.estimate = KroneckerEstimate::load(state, self.len, device)?;
        Ok(())
    }
}
