//! `hftrain plot RUN`: the run's pictures again, from its CSV files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::config::Config;
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
    // The run's optimizer says what its step log's columns are.
    let config = Config::load(&run.join("config.toml"))?;
    let columns = config.optimizer.step_columns();
    let steps_path = run.join("steps.csv");
    let steps = match steps_path.exists() && !columns.is_empty() {
        true => Some(StepLog::read(&steps_path, columns)?),
        false => None,
    };
    for path in crate::report::plots::write_all(run, &metrics, steps.as_deref())? {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
