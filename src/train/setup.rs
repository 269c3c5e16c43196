//! A training run's set-up: the config (given, or the checkpoint's), the run directory
//! (never one that would mix or overwrite runs, or hold the user's own files), the device,
//! data, network and optimizer, and, when resuming, everything from the checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::prelude::*;

use super::growth;
use super::recorder::{Recorder, ReportFacts};
use super::{TrainRequest, Training};
use crate::config::Config;
use crate::memory;
use crate::model::Network;
use crate::optim::Optimizer;
use crate::optim::averaging::IterateAverage;
use crate::params::from_host;
use crate::precision::MixedPrecision;
use crate::session;
use crate::store::checkpoint::{self, Checkpoint, EpochProgress, Position};
use crate::store::metrics::EpochMetrics;
use crate::store::run_dir::{self, RunPaths};
use crate::support::lock::RunLock;

/// Where a resumed run's checkpoint is, and the checkpoint itself.
fn find_resume_checkpoint(request: &TrainRequest, spec: &str) -> Result<(PathBuf, Checkpoint)> {
    let checkpoints_dir = match (&request.out_dir, &request.config) {
        (Some(out), _) => RunPaths::new(out.clone()).checkpoints,
        (None, Some(config)) => RunPaths::new(default_run_dir(config)).checkpoints,
        (None, None) if spec != checkpoint::LATEST => PathBuf::new(),
        (None, None) => bail!(
            "--resume latest needs --config or --out to find the run; or give the checkpoint \
             directory itself: --resume runs/<name>/checkpoints/epoch-0003"
        ),
    };
    if spec == checkpoint::LATEST
        && let Some(run) = checkpoints_dir.parent()
    {
        crate::support::lock::check_not_held(run)?;
    }
    let dir = checkpoint::resolve(spec, &checkpoints_dir)?;
    if spec != checkpoint::LATEST {
        let loaded = Checkpoint::load(&dir)?;
        return Ok((dir, loaded));
    }
    // `latest`: the newest checkpoint that loads; a damaged one (truncated, bit-flipped, cut
    // short by a crash) is reported and the next newest tried.
    let mut candidates = vec![dir];
    candidates.extend(checkpoint::list(&checkpoints_dir).into_iter().rev());
    let mut seen = Vec::new();
    let mut refused = Vec::new();
    for candidate in candidates {
        let real = std::fs::canonicalize(&candidate).unwrap_or_else(|_| candidate.clone());
        if seen.contains(&real) {
            continue;
        }
        seen.push(real.clone());
        match Checkpoint::load(&candidate) {
            Ok(loaded) => {
                if !refused.is_empty() {
                    log::info!(
                        "resuming from the newest valid checkpoint, {}",
                        real.display()
                    );
                }
                return Ok((real, loaded));
            }
            // Only damage is skipped: a newer format or an unreadable file is not the
            // checkpoint's fault, and falling back to an older one would hide it.
            Err(e) if !e.is_damage() => {
                return Err(anyhow::Error::new(e)
                    .context(format!("checkpoint {} cannot be resumed", real.display())));
            }
            Err(e) => {
                log::warn!(
                    "checkpoint {} is unusable and is skipped: {e:#}",
                    real.display()
                );
                refused.push(format!("{}: {e:#}", real.display()));
            }
        }
    }
    let run = checkpoints_dir.parent().unwrap_or(Path::new("."));
    bail!(
        "no checkpoint in {} can be resumed:\n  {}\nrestore one from a copy, or start the \
         run over with `hftrain train --config {} --out {} --force` (removing what hftrain \
         wrote there, these checkpoints too)",
        checkpoints_dir.display(),
        refused.join("\n  "),
        run.join("config.toml").display(),
        run.display()
    )
}

/// Refuses to start or resume where that would overwrite or mix what is in the run
/// directory: a folder of the user's that is not empty, a run (without --force), another run
/// than the checkpoint's. With --force, removes only what hftrain wrote.
fn protect_run_dir(paths: &RunPaths, request: &TrainRequest, resumed: Option<&Path>) -> Result<()> {
    let dir = &paths.run_dir;
    if run_dir::is_empty(dir) {
        return Ok(());
    }
    refuse_a_folder_that_is_not_a_run(dir)?;
    match resumed {
        // Resuming another run's checkpoint into one with checkpoints of its own would mix
        // two runs' metrics, events and checkpoints. (Without checkpoints, as after a fork
        // killed before its first one, there is nothing to mix: it is taken over.)
        Some(checkpoint) if !checkpoint::list(&paths.checkpoints).is_empty() => {
            // The checkpoint's folder is this run's checkpoints folder, wherever links lead.
            let its_folder = std::fs::canonicalize(checkpoint)
                .ok()
                .and_then(|c| c.parent().map(Path::to_path_buf));
            let ours = std::fs::canonicalize(&paths.checkpoints).ok();
            if its_folder.is_none() || its_folder != ours {
                bail!(
                    "{} holds another run than the checkpoint {}; resuming into it would mix \
                     the two: resume into the checkpoint's own run, or into a new directory \
                     with --out",
                    dir.display(),
                    checkpoint.display()
                );
            }
            Ok(())
        }
        Some(_) => Ok(()),
        None if !paths.holds_a_run() => Ok(()),
        None if request.force => run_dir::remove_run(dir),
        None if checkpoint::list(&paths.checkpoints).is_empty() => bail!(
            "run directory {} holds a run that was stopped before its first checkpoint, so \
             there is nothing to resume: pass --force to start it over (removing only what \
             hftrain wrote there), or choose another directory with --out",
            dir.display()
        ),
        None => bail!(
            "run directory {} already holds a run (metrics.csv or checkpoints); continue it \
             with --resume latest, choose another directory with --out, or pass --force to \
             start over (removing only what hftrain wrote there)",
            dir.display()
        ),
    }
}

/// A folder that is not empty and holds no run of hftrain's is the user's: nothing is written
/// into it.
fn refuse_a_folder_that_is_not_a_run(dir: &Path) -> Result<()> {
    if dir.is_dir() && !run_dir::is_empty(dir) && !run_dir::was_started_by_hftrain(dir) {
        bail!(
            "{} is not empty and holds no hftrain run (it holds {}); hftrain writes only into a \
             new or empty directory or its own run: choose one with --out",
            dir.display(),
            run_dir::describe_entries(dir)
        );
    }
    Ok(())
}

pub fn default_run_dir(config: &Config) -> PathBuf {
    PathBuf::from("runs").join(&config.name)
}

/// The config of the run: the given one (which must agree with a resumed checkpoint's in
/// everything that changes the run) or the checkpoint's, with the command line's data
/// directory and device.
fn resolve_config(
    request: &TrainRequest,
    resumed: Option<&(PathBuf, Checkpoint)>,
) -> Result<Config> {
    let mut config = match (&request.config, resumed) {
        (Some(given), Some((dir, ckpt))) => {
            let differences = ckpt.config.run_differences(given);
            if !differences.is_empty() {
                bail!(
                    "the config differs from the one checkpoint {} was trained with, in what \
                     changes the run (checkpoint vs config):\n  {}\nresume without --config to \
                     use the checkpoint's settings, or start a new run with --out",
                    dir.display(),
                    differences.join("\n  ")
                );
            }
            if given.train.precision != ckpt.config.train.precision {
                log::info!(
                    "train.precision: this run trained in {} until {}, and goes on in {}",
                    ckpt.config.train.precision,
                    dir.display(),
                    given.train.precision
                );
            }
            given.clone()
        }
        (Some(given), None) => given.clone(),
        (None, Some((_, ckpt))) => ckpt.config.clone(),
        (None, None) => bail!("train needs --config FILE (or --resume with a checkpoint)"),
    };
    if let Some(dir) = &request.data_dir {
        config.data.dir = dir.clone();
    }
    if let Some(device) = request.device {
        config.device = device;
    }
    config.validate().context("invalid settings")?;
    Ok(config)
}

pub(super) fn set_up(request: &TrainRequest) -> Result<Training> {
    let resumed = match &request.resume {
        Some(spec) => Some(find_resume_checkpoint(request, spec)?),
        None => None,
    };
    let config = resolve_config(request, resumed.as_ref())?;
    let (paths, lock) = open_run_dir(request, &config, resumed.as_ref())?;
    if let (None, Some((_, ckpt))) = (&request.config, &resumed) {
        keep_an_edited_run_config(&paths.run_dir.join("config.toml"), &ckpt.config)?;
    }

    let selected = session::open_device(config.device)?;
    let device = selected.device.clone();
    let data = session::load_training_data(&config.data)?;
    check_spectrum_batches(&config, data.train.len())?;
    let network =
        Network::new(&config.model, data.train.classes.len()).map_err(anyhow::Error::msg)?;
    log::info!("{}", network.summary());
    if let Some(available) = memory::available().filter(|_| selected.host_memory) {
        memory::check_fits(&config, &network, available)?;
    }

    let mixed_precision = MixedPrecision::on_device(
        config.train.precision,
        &device,
        &selected.description,
        "train.precision",
    )?;
    if mixed_precision.is_some() {
        log::info!(
            "gradients in {} (weights, optimizer state, loss and evaluation in f32)",
            config.train.precision
        );
    }
    let decay_mask = network.params.decay_mask(&device);
    let mut optimizer = config
        .optimizer
        .build(decay_mask.clone(), network.params.total());
    let Start {
        params,
        buffers,
        position,
        metrics,
        epoch_progress,
    } = match &resumed {
        Some((dir, ckpt)) => resume(dir, ckpt, &network, optimizer.as_mut(), &device)?,
        None => start_afresh(&network, config.seed, &device),
    };
    let average = parameter_average(&config, resumed.as_ref(), network.params.total(), &device)?;
    let facts = ReportFacts {
        device: selected.description.clone(),
        model: network.summary(),
        data: data.summary.clone(),
    };
    let recorder = Recorder::open(&paths, &config, facts, position, &metrics)?;
    let grown_batch_sizes = resumed
        .as_ref()
        .map(|(_, ckpt)| ckpt.grown_batch_sizes.clone())
        .unwrap_or_default();
    let (epoch_steps, schedule) =
        growth::steps_and_schedule(&config, data.train.len(), &grown_batch_sizes);
    Ok(Training {
        config,
        paths,
        device,
        network,
        train: Arc::new(data.train),
        test: data.test,
        params,
        buffers,
        optimizer,
        decay_mask,
        mixed_precision,
        schedule,
        average,
        average_buffers: None,
        epoch_steps,
        grown_batch_sizes,
        on_cpu: selected.host_memory,
        recorder,
        position,
        epoch_progress,
        metrics,
        _lock: lock,
    })
}

/// The run directory, checked and locked: the one asked for, the resumed checkpoint's, or
/// the config's default.
fn open_run_dir(
    request: &TrainRequest,
    config: &Config,
    resumed: Option<&(PathBuf, Checkpoint)>,
) -> Result<(RunPaths, RunLock)> {
    let run_dir = match (&request.out_dir, resumed) {
        (Some(out), _) => out.clone(),
        (None, Some((dir, _))) if request.config.is_none() => {
            run_dir_of_checkpoint(dir).unwrap_or_else(|| default_run_dir(config))
        }
        _ => default_run_dir(config),
    };
    let paths = RunPaths::new(run_dir);
    // A folder of the user's is refused before the lock writes its `.lock` file there; the
    // rest of the checks need the lock (another process may be writing the run).
    refuse_a_folder_that_is_not_a_run(&paths.run_dir)?;
    let lock = RunLock::acquire(&paths.run_dir)?;
    protect_run_dir(&paths, request, resumed.map(|(dir, _)| dir.as_path()))?;
    // Under the lock: what killed processes left half-written is theirs alone.
    run_dir::remove_leftover_temporaries(&paths.run_dir)?;
    Ok((paths, lock))
}

/// Where a run begins: its weights, its position, the metrics of its epochs so far and how
/// far into its epoch it is.
struct Start {
    params: Tensor<1>,
    buffers: Tensor<1>,
    position: Position,
    metrics: Vec<EpochMetrics>,
    epoch_progress: EpochProgress,
}

/// Resumed without `--config`, the checkpoint's config wins; the run's `config.toml` (at
/// `path`, in the run directory being trained into, its lock held) is then rewritten from it.
/// One that differs (edited by hand, say, or damaged) is saved aside first and the choice
/// said, so the edit is neither lost nor silently ignored.
fn keep_an_edited_run_config(path: &Path, used: &Config) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let what = match Config::parse(&text) {
        Ok(written) if written == *used => return Ok(()),
        Ok(written) => {
            let mut changes = used.run_differences(&written);
            if changes.is_empty() {
                changes.push("settings that do not change the run".into());
            }
            format!(
                "differs from the checkpoint's config ({})",
                changes.join("; ")
            )
        }
        Err(e) => format!("is not a valid config ({e:#})"),
    };
    let kept = crate::support::fsutil::keep_aside(path, "edited")?;
    log::warn!(
        "{} {what}: the checkpoint's config is used and written there; your file is kept as \
         {} (to train with it, resume with --config {})",
        path.display(),
        kept.display(),
        kept.display()
    );
    Ok(())
}

/// `train.spectrum_every`'s fixed batches must fit in the training split: found before the
/// first epoch, not after it.
fn check_spectrum_batches(config: &Config, train_images: usize) -> Result<()> {
    let t = &config.train;
    if t.spectrum_every > 0 && t.spectrum_batches > train_images {
        bail!(
            "train.spectrum_batches = {}: the sharpness measured every {} takes that many fixed \
             training batches of at least one image each, and the training split has {}; set \
             it to at most {train_images} (a few batches suffice: 1 to 10)",
            t.spectrum_batches,
            crate::support::words::count(t.spectrum_every, "epoch"),
            crate::support::words::count(train_images, "image"),
        );
    }
    Ok(())
}

/// A new run: the network's initial weights, at the beginning.
fn start_afresh(network: &Network, seed: u64, device: &Device) -> Start {
    let (params, buffers) = network.init(seed, device);
    Start {
        params,
        buffers,
        position: Position::default(),
        metrics: Vec::new(),
        epoch_progress: EpochProgress::default(),
    }
}

/// A resumed run: the checkpoint's weights, position and metrics, and its optimizer state
/// restored into `optimizer`, once its layout is the network's.
fn resume(
    dir: &Path,
    ckpt: &Checkpoint,
    network: &Network,
    optimizer: &mut dyn Optimizer,
    device: &Device,
) -> Result<Start> {
    ckpt.check_layout(dir, &network.params, &network.buffers)?;
    optimizer
        .load_state(&ckpt.optimizer, device)
        .with_context(|| format!("cannot restore the optimizer from {}", dir.display()))?;
    log::info!(
        "resuming from {} (epoch {}, step {} of the epoch, {} steps in all)",
        dir.display(),
        ckpt.position.epoch,
        ckpt.position.step_in_epoch,
        ckpt.position.global_step
    );
    Ok(Start {
        params: from_host(ckpt.params.clone(), device),
        buffers: from_host(ckpt.buffers.clone(), device),
        position: ckpt.position,
        metrics: ckpt.metrics.clone(),
        epoch_progress: ckpt.epoch_progress,
    })
}

/// The running average of the parameters `train.average` asks for (None without it),
/// restored from the checkpoint when resuming.
fn parameter_average(
    config: &Config,
    resumed: Option<&(PathBuf, Checkpoint)>,
    len: usize,
    device: &Device,
) -> Result<Option<IterateAverage>> {
    let Some(settings) = &config.train.average else {
        return Ok(None);
    };
    log::info!("averaging the parameters: {settings}");
    let mut average = IterateAverage::new(settings);
    if let Some((dir, ckpt)) = resumed {
        average
            .load(ckpt.average.as_ref(), len, device)
            .with_context(|| {
                format!(
                    "cannot restore the parameter average from {}",
                    dir.display()
                )
            })?;
    }
    Ok(Some(average))
}

/// `runs/<name>` for `runs/<name>/checkpoints/<checkpoint>`.
fn run_dir_of_checkpoint(dir: &Path) -> Option<PathBuf> {
    let checkpoints = dir.parent()?;
    (checkpoints.file_name()? == "checkpoints")
        .then(|| checkpoints.parent().map(Path::to_path_buf))?
}
