//! The learning-rate schedule: linear warm-up, then cosine, linear (one-cycle) or constant,
//! as a pure function of the global step so that a resumed run lands at the same place.

use crate::config::{ScheduleConfig, ScheduleKind};

#[derive(Debug, Clone)]
pub struct Schedule {
    peak: f64,
    config: ScheduleConfig,
    warmup_steps: usize,
    total_steps: usize,
}

impl Schedule {
    pub fn new(peak: f64, config: &ScheduleConfig, steps_per_epoch: usize, epochs: usize) -> Self {
        let total_steps = (steps_per_epoch * epochs).max(1);
        let warmup_steps =
            ((config.warmup_epochs * steps_per_epoch as f64).round() as usize).min(total_steps);
        Self {
            peak,
            config: config.clone(),
            warmup_steps,
            total_steps,
        }
    }

    /// Learning rate of the step with this global index (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        let c = &self.config;
        if step < self.warmup_steps {
            let t = (step + 1) as f64 / self.warmup_steps as f64;
            return self.peak * (c.initial_lr_fraction + (1.0 - c.initial_lr_fraction) * t);
        }
        let decay_steps = self.total_steps - self.warmup_steps;
        if decay_steps == 0 {
            return self.peak;
        }
        let t = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let fraction = match c.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::OneCycle => 1.0 - t,
            ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
        };
        self.peak * (c.final_lr_fraction + (1.0 - c.final_lr_fraction) * fraction)
    }
}
