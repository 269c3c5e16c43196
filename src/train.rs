//! The training loop: set-up (device, data, model, optimizer, or all of it from a
//! checkpoint), epochs of steps with a progress bar, evaluation, metrics and checkpoints.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{self, Checkpoint, EpochProgress, Position};
use crate::config::Config;
use crate::config::{CurvatureChoice, OptimizerKind};
use crate::curvature::{Batch, BatchProblem, CurvatureKind, Objective, loss_and_gradient};
use crate::data::batcher::{EpochPlan, Prefetcher, Transform};
use crate::data::{self, Dataset, Source, Split};
use crate::device::{self, DeviceChoice};
use crate::eval::{Evaluation, evaluate};
use crate::interrupt;
use crate::lock::RunLock;
use crate::memory;
use crate::metrics::{self, EpochMetrics, StepLog, StepMetrics};
use crate::model::Network;
use crate::optim::hessian_free::StepReport;
use crate::optim::{self, Method, schedule::Schedule};
use crate::params::{from_host, to_host};
use crate::run_dir;
use crate::tensorboard::{self, EventWriter};

/// What `hftrain train` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct TrainRequest {
    /// The config given with `--config` (None when resuming from a checkpoint's own config).
    pub config: Option<Config>,
    /// `--out`: the run directory (default `runs/<config name>`).
    pub out_dir: Option<PathBuf>,
    /// `--data` (or HFTRAIN_DATA, resolved by the caller): overrides `data.dir`.
    pub data_dir: Option<PathBuf>,
    /// `--device`: overrides the config's device.
    pub device: Option<String>,
    /// `--resume latest` or `--resume <checkpoint dir>`.
    pub resume: Option<String>,
    /// `--force`: start afresh in a run directory that already holds a run.
    pub force: bool,
    /// Stop (after checkpointing) once this many epochs are complete, as an interruption
    /// would; the run can be resumed. None: train to `train.epochs`.
    pub stop_after_epoch: Option<usize>,
}

/// What a training run left behind.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    pub metrics: Vec<EpochMetrics>,
    /// Final parameters and buffers on the host.
    pub params: Vec<f32>,
    pub buffers: Vec<f32>,
    pub last_checkpoint: Option<PathBuf>,
    pub position: Position,
    /// Stopped by Ctrl-C (after writing a checkpoint of the current state).
    pub interrupted: bool,
}

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub run_dir: PathBuf,
    pub checkpoints: PathBuf,
    pub metrics: PathBuf,
    /// Per-step log of the Hessian-free optimizer.
    pub steps: PathBuf,
    /// TensorBoard's event file.
    pub events: PathBuf,
}

impl RunPaths {
    pub fn new(run_dir: PathBuf) -> Self {
        Self {
            checkpoints: run_dir.join("checkpoints"),
            metrics: run_dir.join("metrics.csv"),
            steps: run_dir.join("steps.csv"),
            events: run_dir.join(tensorboard::FILE_NAME),
            run_dir,
        }
    }

    /// Whether the directory holds a run to protect: a checkpoint, or a metrics row. A run
    /// killed before its first epoch ended left only the header: nothing to lose, so it may
    /// start again without --force.
    fn holds_a_run(&self) -> bool {
        let has_rows = std::fs::read_to_string(&self.metrics)
            .map(|text| text.lines().skip(1).any(|line| !line.trim().is_empty()))
            .unwrap_or_else(|_| self.metrics.exists());
        has_rows || !checkpoint::list(&self.checkpoints).is_empty()
    }
}

/// The lines of the start-up summary that `report.md` repeats.
struct ReportFacts {
    device: String,
    model: String,
    data: String,
}

/// Everything needed to run the epochs, after set-up.
struct Session {
    config: Config,
    paths: RunPaths,
    device: Device,
    /// What `report.md` says of the device, model and data.
    facts: ReportFacts,
    network: Network,
    train: Arc<Dataset>,
    test: Dataset,
    params: Tensor<1>,
    buffers: Tensor<1>,
    optimizer: Method,
    /// 1 where weight decay applies (Hessian-free's objective).
    decay_mask: Tensor<1>,
    /// Hessian-free's per-step log (None for first-order optimizers).
    step_log: Option<StepLog>,
    /// TensorBoard's event file (None once writing it failed: it is a convenience).
    events: Option<EventWriter>,
    position: Position,
    /// The sums of the epoch's steps before a mid-epoch checkpoint this session resumed from.
    epoch_progress: EpochProgress,
    metrics: Vec<EpochMetrics>,
    /// Held while the session lives: one training process per run directory.
    _lock: RunLock,
}

pub fn run(request: TrainRequest) -> Result<TrainOutcome> {
    let mut session = set_up(&request)?;
    session.train_epochs(request.stop_after_epoch)
}

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
            Err(e) if !checkpoint::is_damage(&e) => {
                return Err(e.context(format!("checkpoint {} cannot be resumed", real.display())));
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
    bail!(
        "no checkpoint in {} can be resumed:\n  {}",
        checkpoints_dir.display(),
        refused.join("\n  ")
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

fn set_up(request: &TrainRequest) -> Result<Session> {
    let resumed = match &request.resume {
        Some(spec) => Some(find_resume_checkpoint(request, spec)?),
        None => None,
    };
    let mut config = match (&request.config, &resumed) {
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
            given.clone()
        }
        (Some(given), None) => given.clone(),
        (None, Some((_, ckpt))) => ckpt.config.clone(),
        (None, None) => bail!("train needs --config FILE (or --resume with a checkpoint)"),
    };
    if let Some(dir) = &request.data_dir {
        config.data.dir = dir.clone();
    }
    if let Some(device) = &request.device {
        config.device = device.clone();
    }
    config.validate().context("invalid settings")?;

    let run_dir = match (&request.out_dir, &resumed) {
        (Some(out), _) => out.clone(),
        (None, Some((dir, _))) if request.config.is_none() => {
            run_dir_of_checkpoint(dir).unwrap_or_else(|| default_run_dir(&config))
        }
        _ => default_run_dir(&config),
    };
    let paths = RunPaths::new(run_dir);
    // A folder of the user's is refused before the lock writes its `.lock` file there; the
    // rest of the checks need the lock (another process may be writing the run).
    refuse_a_folder_that_is_not_a_run(&paths.run_dir)?;
    let lock = RunLock::acquire(&paths.run_dir)?;
    protect_run_dir(
        &paths,
        request,
        resumed.as_ref().map(|(dir, _)| dir.as_path()),
    )?;

    let selected = device::select(DeviceChoice::parse(&config.device)?)?;
    log::info!("device: {}", selected.description);
    let device = selected.device;
    let host_memory = selected.host_memory;
    let device_summary = selected.description.clone();

    let source = Source::prepare(&config.data.dir)?;
    let train = source.load(Split::Train, config.data.train_limit)?;
    let test = source.load(Split::Test, config.data.test_limit)?;
    data::folder::check_same_classes(&source.root, &train, &test)?;
    let data_summary = data::describe(&source, &train, &test);
    log::info!("{data_summary}");

    let network = Network::new(&config.model, train.classes.len()).map_err(anyhow::Error::msg)?;
    log::info!("{}", network.summary());
    if let Some(available) = memory::available().filter(|_| host_memory) {
        memory::check_fits(&config, &network, available)?;
    }

    let total = network.params.total();
    let mut optimizer = optim::build(&config.optimizer, network.params.decay_mask(&device), total);
    let (params, buffers, position, metrics, epoch_progress) = match &resumed {
        Some((dir, ckpt)) => {
            ckpt.check_layout(dir, &network.params, &network.buffers)?;
            optimizer
                .load_state(&ckpt.optimizer, &device)
                .with_context(|| format!("cannot restore the optimizer from {}", dir.display()))?;
            log::info!(
                "resuming from {} (epoch {}, step {} of the epoch, {} steps in all)",
                dir.display(),
                ckpt.position.epoch,
                ckpt.position.step_in_epoch,
                ckpt.position.global_step
            );
            (
                from_host(ckpt.params.clone(), &device),
                from_host(ckpt.buffers.clone(), &device),
                ckpt.position,
                ckpt.metrics.clone(),
                ckpt.epoch_progress,
            )
        }
        None => {
            let (p, b) = network.init(config.seed, &device);
            let start = Position {
                epoch: 0,
                step_in_epoch: 0,
                global_step: 0,
            };
            (p, b, start, Vec::new(), EpochProgress::default())
        }
    };
    // The metrics file first: it is what marks the folder as a run of hftrain's
    // (`run_dir::was_started_by_hftrain`), should the process be killed right after.
    metrics::write(&paths.metrics, &metrics)?;
    checkpoint::write_run_config(&paths.run_dir, &config)?;
    let step_log = (config.optimizer.kind == OptimizerKind::HessianFree).then(|| {
        let log = StepLog::open(&paths.steps, position.global_step);
        log.write().map(|_| log)
    });
    let step_log = step_log.transpose()?;
    let events = EventWriter::open(&paths.run_dir, position.global_step as u64)
        .inspect_err(|e| log::warn!("no TensorBoard event file for this run: {e:#}"))
        .ok();
    let decay_mask = network.params.decay_mask(&device);
    Ok(Session {
        config,
        paths,
        device,
        facts: ReportFacts {
            device: device_summary,
            model: network.summary(),
            data: data_summary,
        },
        network,
        train: Arc::new(train),
        test,
        params,
        buffers,
        optimizer,
        decay_mask,
        step_log,
        events,
        position,
        epoch_progress,
        metrics,
        _lock: lock,
    })
}

/// `runs/<name>` for `runs/<name>/checkpoints/<checkpoint>`.
fn run_dir_of_checkpoint(dir: &Path) -> Option<PathBuf> {
    let checkpoints = dir.parent()?;
    (checkpoints.file_name()? == "checkpoints")
        .then(|| checkpoints.parent().map(Path::to_path_buf))?
}

/// The epoch's progress bar; hidden off a terminal or with `-q` (then the loop logs its
/// content as lines).
fn progress_bar(steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !crate::logging::progress_bars() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30.cyan/blue}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
    bar
}

impl Session {
    fn train_epochs(&mut self, stop_after_epoch: Option<usize>) -> Result<TrainOutcome> {
        let config = self.config.clone();
        let epochs = config.train.epochs;
        let seed = config.seed;
        let steps_per_epoch =
            EpochPlan::new(seed, 0, self.train.len(), config.train.batch_size).steps();
        let schedule = Schedule::new(
            config.optimizer.lr,
            &config.schedule,
            steps_per_epoch,
            epochs,
        );
        let transform = Transform::train(&config.data);
        let eval_transform = Transform::eval(&config.data);
        let mut last_checkpoint = None;
        if self.position.epoch >= epochs {
            log::info!("the run is already complete ({epochs} epochs); nothing to train");
        }

        while self.position.epoch < epochs {
            let epoch = self.position.epoch;
            let plan = EpochPlan::new(seed, epoch, self.train.len(), config.train.batch_size);
            let first = self.position.step_in_epoch;
            let bar = progress_bar(plan.steps(), epoch, epochs);
            bar.set_position(first as u64);
            // A resumed epoch goes on from the sums of its interrupted part (summed in the
            // same order, so its row equals an uninterrupted run's).
            let so_far = std::mem::take(&mut self.epoch_progress);
            let started = Instant::now();
            let seconds_in_epoch = || so_far.seconds + started.elapsed().as_secs_f64();
            let mut loss_sum: Option<Tensor<1>> = (so_far.images > 0).then(|| {
                Tensor::from_data(TensorData::new(vec![so_far.loss_sum], [1]), &self.device)
            });
            let mut correct_sum: Option<Tensor<1, Int>> = (so_far.images > 0).then(|| {
                Tensor::from_data(TensorData::new(vec![so_far.correct], [1]), &self.device)
            });
            let mut images = so_far.images;
            let mut lr = schedule.lr(self.position.global_step);
            let mut last_report: Option<StepReport> = None;
            let prefetch = Prefetcher::start(
                self.train.clone(),
                plan.clone(),
                first,
                seed,
                transform.clone(),
            );
            for (step, batch) in prefetch {
                let n = batch.len();
                let (x, y) = batch.to_device(&self.device);
                lr = schedule.lr(self.position.global_step);
                let out = match self.step(x, y, lr) {
                    Ok(out) => out,
                    Err(e) => {
                        bar.abandon();
                        return Err(e.context(format!(
                            "training stopped at epoch {} step {}; the last checkpoint is {}",
                            epoch + 1,
                            step + 1,
                            last_good_checkpoint(&self.paths.checkpoints)
                        )));
                    }
                };
                // Divergence is caught at the step where it happens, before anything of it is
                // saved: one scalar read per step (the loss plus the parameters' sum, which is
                // not finite as soon as one parameter is not).
                let health = out.loss.clone() + self.params.clone().sum();
                if !health.into_scalar::<f64>().is_finite() {
                    bar.abandon();
                    let loss = out.loss.clone().into_scalar::<f64>();
                    let what = if loss.is_finite() {
                        "a parameter became NaN or infinite".to_string()
                    } else {
                        format!("the loss became {loss}")
                    };
                    bail!(
                        "training diverged: {what} at epoch {} step {} (global step {}, learning \
                         rate {lr:.3e}); nothing of this step was saved, the last checkpoint is {}; \
                         lower optimizer.lr or lengthen schedule.warmup_epochs",
                        epoch + 1,
                        step + 1,
                        self.position.global_step + 1,
                        last_good_checkpoint(&self.paths.checkpoints)
                    );
                }
                self.buffers = self.network.update_buffers(
                    self.buffers.clone(),
                    &out.stats,
                    config.train.bn_momentum,
                );
                if let Some(report) = &out.report {
                    log::debug!(
                        "step {}: {}",
                        self.position.global_step + 1,
                        hessian_free_progress(report)
                    );
                    last_report = Some(report.clone());
                    if report.accepted {
                        lr = report.step_size;
                    }
                }
                let weighted = out.loss.clone().mul_scalar(n as f32);
                loss_sum = Some(match loss_sum {
                    Some(s) => s + weighted,
                    None => weighted,
                });
                correct_sum = Some(match correct_sum {
                    Some(s) => s + out.correct,
                    None => out.correct,
                });
                images += n;
                self.position.global_step += 1;
                self.position.step_in_epoch = step + 1;
                if let (Some(log), Some(report)) = (self.step_log.as_mut(), out.report) {
                    let row = StepMetrics {
                        step: self.position.global_step,
                        epoch: epoch + 1,
                        loss: out.loss.into_scalar::<f64>(),
                        report,
                    };
                    log.push(&row);
                    self.record(&metrics::step_scalars(&row));
                }

                let last = step + 1 == plan.steps();
                if (step + 1) % config.train.log_every == 0 || last {
                    let loss = loss_sum
                        .as_ref()
                        .map_or(0.0, |s| s.clone().into_scalar::<f64>())
                        / images as f64;
                    let correct = correct_sum
                        .as_ref()
                        .map_or(0, |s| s.clone().into_scalar::<i64>());
                    let seconds = seconds_in_epoch();
                    self.record(&[
                        ("loss/train_running", loss as f32),
                        ("accuracy/train_running", correct as f32 / images as f32),
                    ]);
                    bar.set_position((step + 1) as u64);
                    let optimizer = match &last_report {
                        Some(r) => hessian_free_progress(r),
                        None => format!("lr {lr:.2e}"),
                    };
                    let message = format!(
                        "loss {loss:.4} acc {:.1}% {optimizer} {:.1} img/s",
                        100.0 * correct as f64 / images as f64,
                        images as f64 / seconds.max(1e-9)
                    );
                    if bar.is_hidden() {
                        log::info!(
                            "epoch {}/{epochs} step {}/{}  {message}",
                            epoch + 1,
                            step + 1,
                            plan.steps()
                        );
                    }
                    bar.set_message(message);
                }
                // After the step's line and events, so that they are kept for the resumed run.
                if interrupt::requested() && !last {
                    // Mid-epoch: checkpoint this exact position (the data order and
                    // augmentation of the rest of the epoch follow from it).
                    bar.abandon();
                    if let Some(log) = &self.step_log {
                        log.write()?;
                    }
                    let progress = EpochProgress {
                        loss_sum: loss_sum.clone().map_or(0.0, |s| s.into_scalar::<f32>()),
                        correct: correct_sum.clone().map_or(0, |s| s.into_scalar::<i64>()),
                        images,
                        seconds: seconds_in_epoch(),
                    };
                    let dir = self.save_checkpoint(progress)?;
                    log::info!(
                        "interrupted at epoch {} step {}/{}: checkpoint {}; continue with --resume latest",
                        epoch + 1,
                        step + 1,
                        plan.steps(),
                        dir.display()
                    );
                    return Ok(self.outcome(Some(dir), true));
                }
            }
            let train_seconds = seconds_in_epoch();
            bar.finish_and_clear();
            let train_loss =
                loss_sum.map_or(f64::NAN, |s| s.into_scalar::<f64>()) / images.max(1) as f64;
            let train_correct = correct_sum.map_or(0, |s| s.into_scalar::<i64>());

            self.buffers = crate::bn_statistics::recompute(
                &self.network,
                &self.params,
                self.buffers.clone(),
                &self.train,
                &plan,
                config.bn_recompute_batches(),
                &eval_transform,
                &self.device,
            );
            let eval = self.evaluate(&eval_transform);
            let row = EpochMetrics {
                epoch: epoch + 1,
                step: self.position.global_step,
                lr,
                train_loss,
                train_accuracy: train_correct as f64 / images.max(1) as f64,
                test_loss: eval.loss,
                test_accuracy: eval.accuracy,
                epoch_seconds: seconds_in_epoch(),
                images_per_second: images as f64 / train_seconds.max(1e-9),
            };
            log::info!(
                "epoch {:>3}/{epochs}  train loss {:.4} acc {:5.2}%  test loss {:.4} acc {:5.2}%  \
                 lr {:.2e}  {:.1}s  {:.1} img/s",
                row.epoch,
                row.train_loss,
                100.0 * row.train_accuracy,
                row.test_loss,
                100.0 * row.test_accuracy,
                row.lr,
                row.epoch_seconds,
                row.images_per_second
            );
            if let Some(r) = &last_report {
                log::info!("          hessian-free: {}", hessian_free_progress(r));
            }
            self.record(&metrics::epoch_scalars(&row));
            if let Some(events) = &self.events
                && let Err(e) = events.sync()
            {
                log::warn!("{e:#}");
            }
            self.metrics.push(row);
            metrics::write(&self.paths.metrics, &self.metrics)?;
            if let Some(log) = &self.step_log {
                log.write()?;
            }
            crate::report::write(
                &self.paths.run_dir.join("report.md"),
                &self.config,
                &crate::report::RunFacts {
                    device: &self.facts.device,
                    model: &self.facts.model,
                    data: &self.facts.data,
                    step_log: self.step_log.is_some(),
                },
                &self.metrics,
            )?;
            // Pictures are a convenience: failing to draw them must not stop the run.
            let steps = self.step_log.as_ref().map(StepLog::series);
            if let Err(e) =
                crate::plots::write_all(&self.paths.run_dir, &self.metrics, steps.as_ref())
            {
                log::warn!("plots not drawn: {e:#}");
            }
            self.position.epoch += 1;
            self.position.step_in_epoch = 0;

            let done = self.position.epoch;
            let stopping = stop_after_epoch.is_some_and(|s| done >= s);
            let interrupted = interrupt::requested();
            if done.is_multiple_of(config.checkpoint.every_epochs)
                || done == epochs
                || stopping
                || interrupted
            {
                let dir = self.save_checkpoint(EpochProgress::default())?;
                log::info!("checkpoint: {}", dir.display());
                last_checkpoint = Some(dir);
            }
            if interrupted && done < epochs {
                log::info!("interrupted after epoch {done}; continue with --resume latest");
                return Ok(self.outcome(last_checkpoint, true));
            }
            if stopping && done < epochs {
                log::info!("stopping after epoch {done} as asked; continue with --resume latest");
                break;
            }
        }
        Ok(self.outcome(last_checkpoint, false))
    }

    fn outcome(&self, last_checkpoint: Option<PathBuf>, interrupted: bool) -> TrainOutcome {
        TrainOutcome {
            run_dir: self.paths.run_dir.clone(),
            metrics: self.metrics.clone(),
            params: to_host(&self.params),
            buffers: to_host(&self.buffers),
            last_checkpoint,
            position: self.position,
            interrupted,
        }
    }

    /// One optimizer step on a batch: the parameters move, the rest is returned.
    fn step(&mut self, images: Tensor<4>, labels: Tensor<1, Int>, lr: f64) -> Result<StepOutput> {
        let smoothing = self.config.train.label_smoothing;
        match &mut self.optimizer {
            Method::FirstOrder(optimizer) => {
                let out = loss_and_gradient(
                    &self.network,
                    &self.params,
                    &self.buffers,
                    images,
                    labels,
                    smoothing,
                );
                self.params = optimizer.step(self.params.clone(), out.gradient, lr);
                Ok(StepOutput {
                    loss: out.loss,
                    correct: out.correct,
                    stats: out.stats,
                    report: None,
                })
            }
            Method::HessianFree(hf) => {
                let settings = &self.config.optimizer.hessian_free;
                let objective = Objective {
                    network: &self.network,
                    label_smoothing: smoothing,
                    weight_decay: self.config.optimizer.weight_decay,
                    decay_mask: self.decay_mask.clone(),
                };
                let batch = Batch { images, labels };
                let clock = Instant::now();
                let grad = objective.gradient(&self.params, &batch, settings.preconditioner);
                let problem = BatchProblem {
                    objective: &objective,
                    batch: &batch,
                    curvature_batch: batch.head(settings.curvature_batch_size),
                    backtracking_batch: (settings.backtracking_batch_size > 0)
                        .then(|| batch.head(settings.backtracking_batch_size)),
                    kind: match settings.curvature {
                        CurvatureChoice::Hessian => CurvatureKind::Hessian,
                        CurvatureChoice::GaussNewton => CurvatureKind::GaussNewton,
                    },
                };
                let value = grad.value.into_scalar::<f64>();
                let gradient_seconds = clock.elapsed().as_secs_f64();
                let (params, mut report) = hf.step(
                    &problem,
                    &self.params,
                    value,
                    &grad.gradient,
                    grad.squared_gradients.as_ref(),
                )?;
                self.params = params;
                report.timing.gradient = gradient_seconds;
                report.timing.total = clock.elapsed().as_secs_f64();
                Ok(StepOutput {
                    loss: grad.loss,
                    correct: grad.correct,
                    stats: grad.stats,
                    report: Some(report),
                })
            }
        }
    }

    fn evaluate(&self, transform: &Transform) -> Evaluation {
        evaluate(
            &self.network,
            &self.params,
            &self.buffers,
            &self.test,
            self.config.train.eval_batch_size,
            transform,
            &self.device,
        )
    }

    /// Appends scalars at the current global step to the TensorBoard file. A failure there is
    /// reported once and ends that file's writing, not the run (the CSVs hold the same).
    fn record(&mut self, scalars: &[(&str, f32)]) {
        let step = self.position.global_step as u64;
        if let Some(events) = &mut self.events
            && let Err(e) = events.scalars(step, scalars)
        {
            log::warn!("TensorBoard event file no longer written: {e:#}");
            self.events = None;
        }
    }

    /// Checkpoints the current position; `progress` holds the sums of the epoch so far when
    /// the position is inside an epoch.
    fn save_checkpoint(&self, progress: EpochProgress) -> Result<PathBuf> {
        let ckpt = Checkpoint {
            position: self.position,
            config: self.config.clone(),
            params_layout: self.network.params.clone(),
            buffers_layout: self.network.buffers.clone(),
            params: to_host(&self.params),
            buffers: to_host(&self.buffers),
            optimizer: self.optimizer.state(),
            metrics: self.metrics.clone(),
            epoch_progress: progress,
            classes: self.train.classes.clone(),
        };
        ckpt.save(&self.paths.checkpoints, self.config.checkpoint.keep)
    }
}

/// What one step leaves for the loop besides the new parameters.
struct StepOutput {
    /// Mean loss of the batch (one element).
    loss: Tensor<1>,
    correct: Tensor<1, Int>,
    stats: Vec<crate::model::BatchStats>,
    report: Option<StepReport>,
}

/// The Hessian-free part of the progress line.
fn hessian_free_progress(r: &StepReport) -> String {
    format!(
        "λ {:.2e} cg {} ({}) ρ {:.2} α {:.2} |Δθ| {:.2e} Δf {:.2e} (model {:.2e}){}",
        r.damping_used,
        r.cg_iterations,
        r.cg_stop.label(),
        r.rho,
        r.step_size,
        r.step_norm,
        r.actual,
        r.predicted,
        match (r.accepted, r.converged) {
            (true, _) => "",
            (false, true) => " converged (below f32 resolution)",
            (false, false) => " rejected",
        }
    )
}

fn last_good_checkpoint(dir: &Path) -> String {
    match checkpoint::list(dir).pop() {
        Some(p) => p.display().to_string(),
        None => "none (no checkpoint was written yet)".into(),
    }
}
