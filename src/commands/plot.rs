//! `hftrain plot RUN`: the run's pictures again, from its CSV files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::config::Config;
use crate::optim::Column;
use crate::store::metrics::{self, StepLog};

/// `hftrain plot`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// The run directory, e.g. runs/cifar10.
    pub run: PathBuf,
}

pub fn execute(args: &PlotArgs) -> Result<ExitCode> {
    let run = &args.run;
    let metrics_path = run.join("metrics.csv");
    let metrics = metrics::read(&metrics_path)?;
    // Charts without a point are blank pictures that look like a plotting fault.
    if metrics.is_empty() {
        bail!(
            "{} has no finished epoch yet: nothing to plot (plot again after the first epoch)",
            metrics_path.display()
        );
    }
    if !metrics
        .iter()
        .any(|r| r.train_loss.is_finite() || r.test_loss.is_finite())
    {
        bail!(
            "{}: every epoch's loss is NaN or infinite (the run diverged): nothing to plot",
            metrics_path.display()
        );
    }
    let steps_path = run.join("steps.csv");
    let steps = match steps_path.exists() {
        true => step_log_columns(run).map(|columns| StepLog::read(&steps_path, columns)),
        false => None,
    }
    .transpose()?;
    for path in crate::report::plots::write_all(run, &metrics, steps.as_deref())? {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The run's optimizer's step-log columns, from its config.toml (parsed, not validated: an
/// older run's config still names its optimizer). Without a readable config the per-step
/// charts are left out, with a warning, and the rest drawn.
fn step_log_columns(run: &Path) -> Option<&'static [Column]> {
    let path = run.join("config.toml");
    let parsed = std::fs::read_to_string(&path)
        .map_err(anyhow::Error::from)
        .and_then(|text| Config::parse(&text));
    match parsed {
        Ok(config) => Some(config.optimizer.step_columns()).filter(|c| !c.is_empty()),
        Err(e) => {
            log::warn!(
                "{}: {e:#}; steps.csv's charts are left out (its columns are the run's \
                 optimizer's)",
                path.display()
            );
            None
        }
    }
}
