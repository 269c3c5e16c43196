//! The learning-rate schedule: linear warm-up, then cosine, linear (one-cycle) or constant,
//! as a pure function of the global step so that a resumed run lands at the same place.

use serde::{Deserialize, Serialize};

use crate::support::validate::{Problems, fraction};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// Linear warm-up, then cosine decay to `final_lr_fraction`.
    Cosine,
    /// Linear warm-up, then linear decay to `final_lr_fraction` (the one-cycle shape).
    OneCycle,
    /// Linear warm-up, then constant.
    Constant,
}

impl std::fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::OneCycle => "one-cycle",
            ScheduleKind::Constant => "constant",
        })
    }
}

/// `[schedule]`: the shape of the learning rate over the run (first-order optimizers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    /// Length of the linear warm-up, in epochs (fractions allowed).
    pub warmup_epochs: f64,
    /// The warm-up starts at this fraction of the peak learning rate.
    pub initial_lr_fraction: f64,
    /// The decay ends at this fraction of the peak learning rate.
    pub final_lr_fraction: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::OneCycle,
            warmup_epochs: 2.0,
            initial_lr_fraction: 0.1,
            final_lr_fraction: 0.0,
        }
    }
}

impl ScheduleConfig {
    pub fn validate(&self, problems: &mut Problems) {
        problems.check(
            self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0,
            format!(
                "schedule.warmup_epochs = {}: expected zero or a positive number",
                self.warmup_epochs
            ),
        );
        for (key, value) in [
            ("initial_lr_fraction", self.initial_lr_fraction),
            ("final_lr_fraction", self.final_lr_fraction),
        ] {
            problems.check(
                fraction(value),
                format!("schedule.{key} = {value}: expected a number in [0, 1]"),
            );
        }
    }
}

#[derive(Debug, Clone)]
pub struct Schedule {
    peak: f64,
    config: ScheduleConfig,
    warmup_steps: usize,
    total_steps: usize,
}

impl Schedule {
    /// The schedule over a run whose epochs take `epoch_steps` steps each (one entry per
    /// epoch: the count changes where `train.batch_size_milestones` changes the batch). The
    /// warm-up lasts `warmup_epochs` of those epochs; the decay spreads over the steps after
    /// it, so an epoch of larger batches, with fewer steps, moves the learning rate less.
    pub fn new(peak: f64, config: &ScheduleConfig, epoch_steps: &[usize]) -> Self {
        let total_steps = epoch_steps.iter().sum::<usize>().max(1);
        let warmup_steps = steps_in(epoch_steps, config.warmup_epochs).min(total_steps);
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

/// Steps in the first `epochs` epochs (a fraction of an epoch rounded to whole steps of it).
fn steps_in(epoch_steps: &[usize], epochs: f64) -> usize {
    let whole = (epochs.floor() as usize).min(epoch_steps.len());
    let partial = epoch_steps.get(whole).map_or(0, |&steps| {
        ((epochs - whole as f64) * steps as f64).round() as usize
    });
    epoch_steps[..whole].iter().sum::<usize>() + partial
}
