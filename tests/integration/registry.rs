//! A new optimizer through the registry alone: plain gradient descent, defined here and
//! nowhere in hftrain, registered, named by a config, trained by the same loop as every other
//! optimizer, with a step log of its own columns.

use anyhow::Result;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use hftrain::config::Config;
use hftrain::optim::{
    Capabilities, Cell, Column, Format, Objective, Optimizer, OptimizerSettings, OptimizerState,
    Step, StepInfo, StepRecord, read_scalars,
};
use hftrain::support::validate::Problems;

use crate::common::{TempDir, small_config, synthetic_binary};

/// `kind = "gradient-descent"`: `theta -= lr * g`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GradientDescentConfig {
    lr: f64,
}

impl Default for GradientDescentConfig {
    fn default() -> Self {
        Self { lr: 0.05 }
    }
}

const COLUMNS: &[Column] =
    &[Column::new("gradient_norm", Format::Exponent(6)).tag("descent/gradient_norm")];

impl OptimizerSettings for GradientDescentConfig {
    const KIND: &'static str = "gradient-descent";
    const CAPABILITIES: Capabilities = Capabilities::FIRST_ORDER;
    const STEP_COLUMNS: &'static [Column] = COLUMNS;

    fn lr(&self) -> Option<f64> {
        Some(self.lr)
    }

    fn weight_decay(&self) -> f64 {
        0.0
    }

    fn validate(&self, problems: &mut Problems) {
        problems.check(
            self.lr > 0.0,
            format!("optimizer.lr = {}: expected a positive number", self.lr),
        );
    }

    fn build(&self, _decay_mask: Tensor<1>, _len: usize) -> Box<dyn Optimizer> {
        Box::new(GradientDescent)
    }
}

struct GradientDescent;

#[derive(Serialize, Deserialize)]
struct NoState {}

impl Optimizer for GradientDescent {
    fn step(&mut self, objective: &dyn Objective, params: &Tensor<1>, lr: f64) -> Result<Step> {
        let gradient = objective.loss_gradient(params);
        let [norm_sq] = read_scalars([gradient.clone().square().sum()]);
        let norm = norm_sq.sqrt();
        Ok(Step {
            params: params.clone() - gradient.mul_scalar(lr),
            info: StepInfo::recorded(
                lr,
                StepRecord::new(COLUMNS, vec![Cell::Number(norm)]),
                format!("lr {lr:.2e} |g| {norm:.2e}"),
                norm,
            ),
        })
    }

    fn state(&self) -> OptimizerState {
        OptimizerState::new(GradientDescentConfig::KIND, &NoState {})
    }

    fn load_state(&mut self, state: &OptimizerState, _device: &Device) -> Result<()> {
        let NoState {} = state.scalars(GradientDescentConfig::KIND)?;
        Ok(())
    }
}

fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| hftrain::optim::register::<GradientDescentConfig>().unwrap());
}

#[test]
fn an_optimizer_defined_outside_hftrain_trains_through_the_registry_alone() {
    // Unknown before it is registered.
    let text = "[optimizer]\nkind = \"gradient-descent\"\nlr = 0.1\n";
    register();
    assert!(
        hftrain::optim::register::<GradientDescentConfig>()
            .unwrap_err()
            .contains("already registered")
    );
    let parsed = Config::parse(text).unwrap();
    assert_eq!(parsed.optimizer.name(), "gradient-descent");
    assert_eq!(parsed.optimizer.lr(), Some(0.1));
    // Its own keys only, named in the message.
    let wrong = Config::parse("[optimizer]\nkind = \"gradient-descent\"\nmomentum = 0.9\n")
        .unwrap_err()
        .to_string();
    assert!(
        wrong.contains("momentum") && wrong.contains("sgd"),
        "{wrong}"
    );
    let bad = Config::parse("[optimizer]\nkind = \"gradient-descent\"\nlr = -1\n").unwrap();
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("optimizer.lr = -1")
    );

    let mut config = small_config(&synthetic_binary(), "flex");
    config.optimizer = parsed.optimizer.clone();
    config.validate().unwrap();
    let dir = TempDir::new();
    let run = dir.path().join("run");
    let outcome = crate::training::train(&config, &run, None, None).unwrap();
    assert_eq!(outcome.metrics.len(), 2);
    let first = &outcome.metrics[0];
    let last = outcome.metrics.last().unwrap();
    assert!(
        last.train_loss < first.train_loss.max(2.3),
        "{first:?} {last:?}"
    );
    // Its step log has its columns, not Hessian-free's, one row per step.
    let steps = std::fs::read_to_string(run.join("steps.csv")).unwrap();
    let mut lines = steps.lines();
    assert_eq!(lines.next(), Some("step,epoch,loss,gradient_norm"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), last.step);
    for row in &rows {
        let norm: f64 = row.split(',').nth(3).unwrap().parse().unwrap();
        assert!(norm.is_finite() && norm > 0.0, "{row}");
    }
    // Its config is written and read back by name.
    let written = Config::load(&run.join("config.toml")).unwrap();
    assert_eq!(written.optimizer, config.optimizer);
}
