//! `report.md` in the run directory: what ran where, how it went, the best and final
//! accuracy and every epoch, rewritten (atomically) after each epoch so that an interrupted
//! run has one too.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::config::{Config, CurvatureKind};
use crate::store::metrics::EpochMetrics;
use crate::support::fsutil::write_atomic;

/// What the report says besides the config and the metrics.
pub struct RunFacts<'a> {
    pub device: &'a str,
    pub model: &'a str,
    pub data: &'a str,
    /// Whether the run has a Hessian-free step log.
    pub step_log: bool,
}

fn optimizer_line(config: &Config) -> String {
    let o = &config.optimizer;
    match o.hessian_free() {
        Some(h) => {
            let curvature = match h.curvature {
                CurvatureKind::GaussNewton => "Gauss-Newton",
                CurvatureKind::Hessian => "exact Hessian",
            };
            format!(
                "hessian-free ({curvature} curvature on {} images per batch, CG at most {} \
                 iterations, initial damping {}, weight decay {})",
                h.curvature_batch_size,
                h.cg_max_iterations,
                h.initial_damping,
                o.weight_decay()
            )
        }
        None => format!(
            "{o} (peak lr {}, {} schedule, weight decay {})",
            o.lr().unwrap_or_default(),
            config.schedule.kind,
            o.weight_decay()
        ),
    }
}

pub fn render(config: &Config, facts: &RunFacts, metrics: &[EpochMetrics]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Run `{}`\n", config.name);
    let _ = writeln!(out, "- device: {}", facts.device);
    let _ = writeln!(out, "- {}", facts.model.lines().next().unwrap_or_default());
    let _ = writeln!(out, "- {}", facts.data.lines().next().unwrap_or_default());
    let _ = writeln!(out, "- optimizer: {}", optimizer_line(config));
    let _ = writeln!(
        out,
        "- batch size {}, label smoothing {}, seed {}",
        config.train.batch_size_in_words(),
        config.train.label_smoothing,
        config.seed
    );
    let seconds: f64 = metrics.iter().map(|m| m.epoch_seconds).sum();
    let _ = writeln!(
        out,
        "- epochs done: {} of {}, {:.1} minutes of training and evaluation",
        metrics.len(),
        config.train.epochs,
        seconds / 60.0
    );
    if let Some((extra, later)) = first_epoch_start_up(metrics) {
        let _ = writeln!(
            out,
            "- of the first epoch's {:.1} s, about {extra:.1} s went to start-up (kernel \
             compilation and autotuning on a GPU; kept in the kernel cache for later runs): a \
             later epoch of as many steps took {later:.1} s",
            metrics[0].epoch_seconds
        );
    }
    write_accuracy_and_epochs(&mut out, metrics);
    if !metrics.is_empty() {
        let _ = writeln!(out, "\n## Plots\n");
        let _ = writeln!(
            out,
            "![loss](plots/loss.png)\n![accuracy](plots/accuracy.png)\n![learning rate](plots/lr.png)"
        );
        if facts.step_log {
            let _ = writeln!(
                out,
                "![damping](plots/damping.png)\n![CG iterations](plots/cg_iterations.png)\n![rho](plots/rho.png)"
            );
        }
    }
    let _ = writeln!(out, "\n## Files\n");
    let _ = writeln!(out, "- `config.toml`: every setting of the run");
    let _ = writeln!(out, "- `metrics.csv`: the table above, for plotting");
    if facts.step_log {
        let _ = writeln!(
            out,
            "- `steps.csv`: every Hessian-free step (damping, CG iterations, rho, predicted and actual reduction)"
        );
    }
    let _ = writeln!(
        out,
        "- `{}`: all of these curves for TensorBoard (`tensorboard --logdir <parent of this directory>`)",
        crate::store::tensorboard::FILE_NAME
    );
    let _ = writeln!(
        out,
        "- `checkpoints/latest`: resume with `hftrain train --config config.toml --out <this directory> --resume latest`"
    );
    out
}

/// The "Accuracy" and "Epochs" sections (none before the first epoch's metrics).
fn write_accuracy_and_epochs(out: &mut String, metrics: &[EpochMetrics]) {
    if let (Some(last), Some(best)) = (
        metrics.last(),
        metrics
            .iter()
            .max_by(|a, b| a.test_accuracy.total_cmp(&b.test_accuracy)),
    ) {
        let _ = writeln!(out, "\n## Accuracy\n");
        let _ = writeln!(
            out,
            "- final test accuracy: {:.2}% (epoch {})",
            100.0 * last.test_accuracy,
            last.epoch
        );
        let _ = writeln!(
            out,
            "- best test accuracy: {:.2}% (epoch {})",
            100.0 * best.test_accuracy,
            best.epoch
        );
        let _ = writeln!(
            out,
            "- final train loss {:.4}, test loss {:.4}",
            last.train_loss, last.test_loss
        );
        let _ = writeln!(out, "\n## Epochs\n");
        let _ = writeln!(
            out,
            "| epoch | train loss | train acc | test loss | test acc | lr | seconds | images/s |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for m in metrics {
            let _ = writeln!(
                out,
                "| {} | {:.4} | {:.2}% | {:.4} | {:.2}% | {:.2e} | {:.1} | {:.1} |",
                m.epoch,
                m.train_loss,
                100.0 * m.train_accuracy,
                m.test_loss,
                100.0 * m.test_accuracy,
                m.lr,
                m.epoch_seconds,
                m.images_per_second
            );
        }
    }
}

/// The first epoch's seconds beyond the median of the later epochs of as many steps (the
/// same batch size: new shapes would pay compilation again), and that median; None without
/// such an epoch or when the excess is under half a second and a tenth of the first epoch.
pub fn first_epoch_start_up(metrics: &[EpochMetrics]) -> Option<(f64, f64)> {
    let first = metrics.first().filter(|m| m.epoch == 1)?;
    let mut later: Vec<f64> = metrics
        .windows(2)
        .filter(|pair| pair[1].step - pair[0].step == first.step)
        .map(|pair| pair[1].epoch_seconds)
        .collect();
    if later.is_empty() {
        return None;
    }
    later.sort_by(f64::total_cmp);
    let median = later[later.len() / 2];
    let extra = first.epoch_seconds - median;
    (extra >= 0.5 && extra >= 0.1 * first.epoch_seconds).then_some((extra, median))
}

pub fn write(
    path: &Path,
    config: &Config,
    facts: &RunFacts,
    metrics: &[EpochMetrics],
) -> Result<()> {
    write_atomic(path, render(config, facts, metrics).as_bytes())
}
