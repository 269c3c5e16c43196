//! `hftrain train`: a run from a config, or a run continued from its checkpoint.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::config::Config;
use crate::device::DeviceChoice;
use crate::train::{self, TrainRequest};

/// `hftrain train`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// The run's TOML config (see configs/) [default: with --resume, the checkpoint's own
    /// config; a new run needs one].
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Continue a run: `latest` (the run's newest checkpoint) or a checkpoint directory
    /// [default: start a new run].
    #[arg(long)]
    pub resume: Option<String>,
    /// Data directory (CIFAR-10 binary batches or an image folder; fetched when empty)
    /// [default: the config's `data.dir`, `data/cifar10` unless set].
    #[arg(long, env = "HFTRAIN_DATA")]
    pub data: Option<PathBuf>,
    /// Run directory [default: runs/<config name>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Device: auto, wgpu, wgpu-cpu, flex, vulkan or vulkan-cpu [default: the config's `device`, itself
    /// `auto` (a GPU through wgpu, else the CPU) unless set].
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// Start afresh in a run directory that already holds a run, deleting its
    /// checkpoints and metrics.
    #[arg(long)]
    pub force: bool,
    /// Stop after this many epochs are complete (checkpointed; continue with --resume)
    /// [default: the config's `train.epochs`].
    #[arg(long, value_parser = at_least_one)]
    pub stop_after_epoch: Option<usize>,
}

/// A count of at least 1 (`--stop-after-epoch 0` would otherwise still train an epoch).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("expected at least 1 (the number of complete epochs to stop after)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{text:?} is not a whole number: {e}")),
    }
}

/// `hftrain train`: exit code 130 for a run stopped by Ctrl-C, 143 by SIGTERM, 129 by
/// SIGHUP (as shells report a program the signal ended), after its checkpoint.
pub fn execute(args: &TrainArgs) -> Result<ExitCode> {
    let config = args.config.as_deref().map(Config::load).transpose()?;
    crate::support::interrupt::install();
    let outcome = train::run(TrainRequest {
        config,
        out_dir: args.out.clone(),
        data_dir: args.data.clone(),
        device: args.device,
        resume: args.resume.clone(),
        force: args.force,
        stop_after_epoch: args.stop_after_epoch,
    })?;
    if outcome.interrupted {
        return Ok(ExitCode::from(crate::support::interrupt::exit_status()));
    }
    if let Some(last) = outcome.metrics.last() {
        println!(
            "done: test accuracy {:.2}% after {}; run directory {}",
            100.0 * last.test_accuracy,
            crate::support::words::count(last.epoch, "epoch"),
            outcome.run_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
