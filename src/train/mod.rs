//! The training loop. `setup.rs` prepares a `Training` (config, run directory, device, data,
//! network, optimizer, or all of it from a checkpoint); here are the epochs of steps, each
//! epoch's evaluation, and when to checkpoint. What is recorded and where (CSV, TensorBoard,
//! report, plots) is `recorder.rs`; the epoch's running sums are `totals.rs`.

mod growth;
mod progress;
mod recorder;
mod setup;
mod totals;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use burn::prelude::*;

use crate::config::{Config, Precision};
use crate::curvature::{Batch, BatchObjective, BatchOutcome, CurvatureSampling, NetworkObjective};
use crate::data::Dataset;
use crate::data::batcher::{EpochPlan, Prefetcher, Transform};
use crate::device::DeviceChoice;
use crate::evaluation::evaluate;
use crate::model::Network;
use crate::optim::averaging::IterateAverage;
use crate::optim::schedule::Schedule;
use crate::optim::{Optimizer, StepInfo};
use crate::params::to_host;
use crate::precision::MixedPrecision;
use crate::store::checkpoint::{self, Checkpoint, EpochProgress, Position};
use crate::store::metrics::EpochMetrics;
use crate::store::run_dir::RunPaths;
use crate::support::interrupt;
use crate::support::lock::RunLock;
use crate::support::words::{count, human_duration};
use progress::Progress;
use recorder::Recorder;
use totals::EpochTotals;

pub use setup::default_run_dir;

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
    pub device: Option<DeviceChoice>,
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
    /// The running average of the parameters (`train.average`; None without one or before
    /// its first iterate), and the batch-norm statistics recomputed for it at the last
    /// epoch's end (None before one).
    pub average: Option<Vec<f32>>,
    pub average_buffers: Option<Vec<f32>>,
    pub last_checkpoint: Option<PathBuf>,
    pub position: Position,
    /// Stopped by Ctrl-C (after writing a checkpoint of the current state).
    pub interrupted: bool,
}

pub fn run(request: TrainRequest) -> Result<TrainOutcome> {
    let mut session = setup::set_up(&request)?;
    session.train_epochs(request.stop_after_epoch)
}

/// A training run in progress: everything the epochs need, after set-up (not to be confused
/// with `crate::session`, what every command opens).
struct Training {
    config: Config,
    paths: RunPaths,
    device: Device,
    network: Network,
    train: Arc<Dataset>,
    test: Dataset,
    params: Tensor<1>,
    buffers: Tensor<1>,
    optimizer: Box<dyn Optimizer>,
    /// 1 where weight decay applies.
    decay_mask: Tensor<1>,
    /// `train.precision` below f32 (f16's loss scale lives here from step to step).
    mixed_precision: Option<MixedPrecision>,
    schedule: Schedule,
    /// `train.average`: the running average of the parameters.
    average: Option<IterateAverage>,
    /// The batch-norm statistics recomputed for the average at the last epoch's end.
    average_buffers: Option<Tensor<1>>,
    /// Steps in each epoch of the run (`train.batch_size_milestones` and `batch_growth`
    /// change the count).
    epoch_steps: Vec<usize>,
    /// Milestones `[epoch, batch size]` that `train.batch_growth`'s test added.
    grown_batch_sizes: Vec<[usize; 2]>,
    /// The device computes in the host's memory (flex, or wgpu on a software adapter).
    on_cpu: bool,
    recorder: Recorder,
    position: Position,
    /// The sums of the epoch's steps before a mid-epoch checkpoint this session resumed from.
    epoch_progress: EpochProgress,
    metrics: Vec<EpochMetrics>,
    /// Held while the session lives: one training process per run directory.
    _lock: RunLock,
}

/// Training batches the batch-norm statistics of the averaged parameters are recomputed over
/// where `train.bn_recompute_batches` is 0 (the running averages were never those of the
/// averaged parameters, so they are recomputed whatever that setting says).
pub const AVERAGE_BN_BATCHES: usize = 10;

/// How an epoch's steps ended.
enum EpochEnd {
    /// All steps done: the epoch's sums, and the last step's report (boxed: it is large,
    /// and there is one per epoch).
    Done(Box<(EpochTotals, Option<StepInfo>)>),
    /// Ctrl-C inside the epoch: the position was checkpointed there.
    Interrupted(PathBuf),
}

impl Training {
    fn train_epochs(&mut self, stop_after_epoch: Option<usize>) -> Result<TrainOutcome> {
        let epochs = self.config.train.epochs;
        if self.position.epoch >= epochs {
            log::info!(
                "the run is already complete ({}); nothing to train",
                count(epochs, "epoch")
            );
        }
        // `--stop-after-epoch N` counts the run's complete epochs, so a run resumed with N
        // already complete trains nothing (not one epoch more).
        let reached = |done: usize| stop_after_epoch.is_some_and(|s| done >= s);
        if self.position.epoch < epochs && reached(self.position.epoch) {
            log::info!(
                "the run already has {} complete, as many as --stop-after-epoch asks; nothing \
                 to train (ask for more, or resume without it)",
                count(self.position.epoch, "epoch")
            );
        }
        let mut last_checkpoint = None;
        while self.position.epoch < epochs && !reached(self.position.epoch) {
            let (totals, last_step) = match self.train_epoch()? {
                EpochEnd::Done(done) => *done,
                EpochEnd::Interrupted(dir) => return Ok(self.outcome(Some(dir), true)),
            };
            self.end_epoch(&totals, last_step.as_ref())?;
            self.grow_batch()?;
            let done = self.position.epoch;
            let stopping = reached(done);
            let interrupted = interrupt::requested();
            if self.checkpoint_due(done, stopping || interrupted) {
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

    /// The steps of the current epoch, from where the position stands.
    fn train_epoch(&mut self) -> Result<EpochEnd> {
        let (epoch, epochs) = (self.position.epoch, self.config.train.epochs);
        let seed = self.config.seed;
        let batch_size = self.batch_size_of(epoch);
        if epoch > 0 && batch_size != self.batch_size_of(epoch - 1) {
            let why = match self.config.train.batch_growth {
                Some(_) => "train.batch_growth",
                None => "train.batch_size_milestones",
            };
            log::info!(
                "epoch {}: {batch_size} images a step from here ({why})",
                epoch + 1
            );
        }
        let plan = EpochPlan::new(seed, epoch, self.train.len(), batch_size);
        let first = self.position.step_in_epoch;
        let progress = Progress::start(epoch, epochs, plan.steps(), first);
        let mut totals =
            EpochTotals::resume(std::mem::take(&mut self.epoch_progress), &self.device);
        let transform = Transform::train(&self.config.data);
        let batches = Prefetcher::start(self.train.clone(), plan.clone(), first, seed, transform);
        let mut last_step = None;
        for (step, batch) in batches {
            let n = batch.len();
            let (images, labels) = batch.to_device(&self.device);
            let lr = self.schedule.lr(self.position.global_step);
            let stopped = |e: anyhow::Error, paths: &RunPaths| {
                progress.abandon();
                e.context(format!(
                    "training stopped at epoch {} step {}; the last checkpoint is {}",
                    epoch + 1,
                    step + 1,
                    last_good_checkpoint(paths)
                ))
            };
            let products = std::cell::Cell::new(0);
            let on_product = || {
                products.set(products.get() + 1);
                progress.inside_step(step, products.get());
            };
            let started = std::time::Instant::now();
            let (params, outcome, info) = self
                .step(Batch { images, labels }, lr, &on_product)
                .map_err(|e| stopped(e, &self.paths))?;
            if step == first {
                self.estimate_time(started.elapsed().as_secs_f64(), plan.steps() - first);
            }
            if let Err(what) = check_finite(&outcome.loss, &params) {
                progress.abandon();
                return Err(self.divergence(&what, step, lr));
            }
            self.record_step(params, outcome, &info, (step, n), &mut totals);
            let last = step + 1 == plan.steps();
            if (step + 1).is_multiple_of(self.config.train.log_every) || last {
                let (loss, accuracy) = totals.read();
                self.recorder.scalars(
                    self.position.global_step,
                    &[
                        ("loss/train_running", loss as f32),
                        ("accuracy/train_running", accuracy as f32),
                    ],
                );
                let speed = totals.images() as f64 / totals.seconds().max(1e-9);
                progress.show(step + 1, loss, accuracy, &info.summary, speed);
            }
            last_step = Some(info);
            // After the step's line and events, so that they are kept for the resumed run.
            if interrupt::requested() && !last {
                progress.abandon();
                let dir = self.checkpoint_mid_epoch(&totals, step, plan.steps())?;
                return Ok(EpochEnd::Interrupted(dir));
            }
        }
        progress.finish();
        Ok(EpochEnd::Done(Box::new((totals, last_step))))
    }

    /// The error of a step (`step` of the epoch, at learning rate `lr`) whose loss or
    /// parameters are no longer finite (`what`); nothing of the step was kept.
    fn divergence(&self, what: &str, step: usize, lr: f64) -> anyhow::Error {
        // f16's range ends at 65504: a forward pass past it looks like divergence.
        let f16 = if self.config.train.precision == Precision::F16 {
            "; in train.precision = \"f16\" an activation past 65504 overflows: try \"bf16\" \
             (f32's range) or \"f32\""
        } else {
            ""
        };
        // The advice names the settings that can cause it: a logit scale far from 1 makes
        // the loss overflow whatever the step, and an optimizer without a learning rate
        // has none to lower.
        let scale = self.config.model.logit_scale;
        let logits = if !(1e-3..=1e3).contains(&scale.abs()) {
            format!(
                "; model.logit_scale = {scale:e} multiplies every logit, and a scale that far \
                 from 1 overflows the loss: use 1 (0.125 for a ResNet's max-pooled features)"
            )
        } else {
            String::new()
        };
        let step_size = if self.config.optimizer.capabilities().learning_rate {
            "lower optimizer.lr or lengthen schedule.warmup_epochs"
        } else {
            "its steps come from the optimizer's own line search: check the model and the \
             data, or raise optimizer.hessian_free.initial_damping"
        };
        anyhow::anyhow!(
            "training diverged: {what} at epoch {} step {} (global step {}, learning \
             rate {lr:.3e}); nothing of this step was saved, the last checkpoint is {}; \
             {step_size}{logits}{f16}",
            self.position.epoch + 1,
            step + 1,
            self.position.global_step + 1,
            last_good_checkpoint(&self.paths)
        )
    }

    /// A finite step (`step` of the epoch, on `images` images) taken: the new parameters,
    /// batch-norm buffers and parameter average, the epoch's sums, the position, the step's
    /// records.
    fn record_step(
        &mut self,
        params: Tensor<1>,
        outcome: BatchOutcome,
        info: &StepInfo,
        (step, images): (usize, usize),
        totals: &mut EpochTotals,
    ) {
        self.params = params;
        self.buffers = self.network.update_buffers(
            self.buffers.clone(),
            &outcome.stats,
            self.config.train.bn_momentum,
        );
        if let Some(average) = &mut self.average {
            average.update(&self.params, self.position.epoch);
        }
        log::debug!("step {}: {}", self.position.global_step + 1, info.summary);
        totals.add(&outcome.loss, outcome.correct, images);
        self.position.global_step += 1;
        self.position.step_in_epoch = step + 1;
        self.recorder.step(self.position, &outcome.loss, info);
        // f16's loss scale, as AMP users watch GradScaler's (`precision/loss_scale`).
        if let Some(scale) = self.mixed_precision.as_ref().and_then(|m| m.loss_scale()) {
            self.recorder.scalars(
                self.position.global_step,
                &[("precision/loss_scale", scale)],
            );
        }
    }

    /// Ctrl-C inside the epoch, after `step` of its `steps`: checkpoints this exact position
    /// (the data order and augmentation of the rest of the epoch follow from it) with the
    /// epoch's sums so far, the step log written to match.
    fn checkpoint_mid_epoch(
        &self,
        totals: &EpochTotals,
        step: usize,
        steps: usize,
    ) -> Result<PathBuf> {
        self.recorder.write_steps()?;
        let dir = self.save_checkpoint(totals.progress())?;
        log::info!(
            "interrupted at epoch {} step {}/{steps}: checkpoint {}; continue with --resume latest",
            self.position.epoch + 1,
            step + 1,
            dir.display()
        );
        Ok(dir)
    }

    /// One optimizer step on a batch: the new parameters, the batch's loss, accuracy and
    /// batch-norm statistics, and the optimizer's report. Nothing of the session changes yet.
    fn step(
        &mut self,
        batch: Batch,
        lr: f64,
        on_product: &dyn Fn(),
    ) -> Result<(Tensor<1>, BatchOutcome, StepInfo)> {
        let objective = NetworkObjective {
            network: &self.network,
            label_smoothing: self.config.train.label_smoothing,
            weight_decay: self.config.optimizer.weight_decay(),
            decay_mask: self.decay_mask.clone(),
        };
        let on_batch = BatchObjective::new(
            &objective,
            &self.buffers,
            batch,
            CurvatureSampling::of(&self.config.optimizer),
        )
        .first_order_by_backprop(self.config.train.gradient.uses_backprop(&self.device))
        .in_precision(self.mixed_precision.as_ref())
        .watched(on_product);
        let step = self.optimizer.step(&on_batch, &self.params, lr)?;
        let outcome = on_batch.into_outcome().ok_or_else(|| {
            anyhow::anyhow!(
                "optimizer {} took no gradient at the step's start, so the batch has no loss \
                 to report (every optimizer must ask its objective for one)",
                self.config.optimizer
            )
        })?;
        Ok((step.params, outcome, step.info))
    }

    /// After the session's first step (`seconds`, `steps_left` in the epoch): how long the
    /// epoch and the run will take at that pace (per image, where later epochs take larger
    /// batches), and on a CPU, where that is hours, the config that fits one.
    fn estimate_time(&self, seconds: f64, steps_left: usize) {
        let (epoch, train) = (self.position.epoch, &self.config.train);
        let batch_of = |e: usize| self.batch_size_of(e).min(self.train.len());
        let per_image = seconds / batch_of(epoch) as f64;
        let images_of = |e: usize| (self.epoch_steps[e] * batch_of(e)) as f64;
        let per_epoch = per_image * images_of(epoch);
        let later: f64 = (epoch + 1..train.epochs).map(images_of).sum();
        let run = seconds * steps_left as f64 + per_image * later;
        log::info!(
            "first step took {}: about {} an epoch, {} for the run (evaluation not included)",
            human_duration(seconds),
            human_duration(per_epoch),
            human_duration(run)
        );
        if self.on_cpu && run > 3600.0 {
            log::warn!(
                "this run would take about {} on the CPU; configs/cifar10-small-hf.toml (the \
                 classic small CNN with Hessian-free) trains on two CPU cores in about 2 minutes \
                 an epoch, and configs/cifar10-small-sgd.toml reaches 70% in about 4 minutes \
                 (BENCHMARKS.md)",
                human_duration(run)
            );
        }
    }

    /// Whether the epoch ending now is one `train.spectrum_every` asks the curvature of.
    fn sharpness_due(&self) -> bool {
        let every = self.config.train.spectrum_every;
        every > 0 && (self.position.epoch + 1).is_multiple_of(every)
    }

    /// The training loss's Hessian at the current parameters on fixed training batches (the
    /// same ones every epoch, without augmentation): its top eigenvalue and trace, the
    /// sharpness a run is watched by (Cohen et al. 2021). Weight decay left out, batch norm
    /// in training mode, as `hftrain spectrum` measures.
    fn measure_sharpness(&self) -> Result<crate::spectrum::Sharpness> {
        let t = &self.config.train;
        let size = t
            .batch_size
            .min(self.train.len() / t.spectrum_batches.max(1))
            .max(1);
        let batches = crate::spectrum::fixed_batches(
            &self.train,
            &Transform::eval(&self.config.data),
            t.spectrum_batches,
            size,
            self.config.seed,
            &self.device,
        )?;
        let objective = NetworkObjective::new(&self.network, t.label_smoothing, 0.0, &self.device);
        let clock = std::time::Instant::now();
        let measured = crate::spectrum::sharpness(
            &objective,
            crate::curvature::CurvatureKind::Hessian,
            &self.params,
            &batches,
            &crate::spectrum::SharpnessSettings {
                seed: self.config.seed,
                ..Default::default()
            },
        );
        log::info!(
            "          curvature: top Hessian eigenvalue {:.4e} (residual {:.1e}), trace {} \
             ({} products, {:.1}s)",
            measured.top_eigenvalue,
            measured.residual,
            measured.trace.as_ref().map_or("-".into(), |t| format!(
                "{:.4e} ± {:.1e}",
                t.estimate, t.standard_error
            )),
            measured.products,
            clock.elapsed().as_secs_f64()
        );
        Ok(measured)
    }

    /// Whether to checkpoint after `done` epochs: every `checkpoint.every_epochs`, after the
    /// last epoch, and wherever the run stops (`stopping`: asked to, or interrupted).
    fn checkpoint_due(&self, done: usize, stopping: bool) -> bool {
        done.is_multiple_of(self.config.checkpoint.every_epochs)
            || done == self.config.train.epochs
            || stopping
    }

    /// The epoch's end: batch-norm statistics recomputed where asked, the test set evaluated,
    /// the row recorded, the position moved to the next epoch.
    fn end_epoch(&mut self, totals: &EpochTotals, last_step: Option<&StepInfo>) -> Result<()> {
        let train_seconds = totals.seconds();
        let (train_loss, train_accuracy) = totals.read();
        let epoch = self.position.epoch;
        let plan = EpochPlan::new(
            self.config.seed,
            epoch,
            self.train.len(),
            // The first batch size, where milestones grow the training batch: the statistics'
            // cost stays what `bn_recompute_batches` says.
            self.config.train.batch_size,
        );
        let eval_transform = Transform::eval(&self.config.data);
        self.buffers = crate::bn_statistics::recompute(
            &self.network,
            &self.params,
            self.buffers.clone(),
            &self.train,
            &plan,
            self.config.bn_recompute_batches(),
            &eval_transform,
            &self.device,
        );
        let eval = evaluate(
            &self.network,
            &self.params,
            &self.buffers,
            &self.test,
            self.config.train.eval_batch_size,
            &eval_transform,
            &self.device,
        );
        let averaged = self.evaluate_average(&plan, &eval_transform);
        let sharpness = self
            .sharpness_due()
            .then(|| self.measure_sharpness())
            .transpose()?;
        let row = EpochMetrics {
            epoch: epoch + 1,
            step: self.position.global_step,
            lr: last_step.map_or(self.schedule.lr(self.position.global_step), |s| {
                s.step_length
            }),
            train_loss,
            train_accuracy,
            test_loss: eval.loss,
            test_accuracy: eval.accuracy,
            epoch_seconds: totals.seconds(),
            images_per_second: totals.images() as f64 / train_seconds.max(1e-9),
            sharpness: sharpness.as_ref().map(|s| s.top_eigenvalue),
            hessian_trace: sharpness
                .as_ref()
                .and_then(|s| s.trace.as_ref())
                .map(|t| t.estimate),
            averaged_test_loss: averaged.as_ref().map(|e| e.loss),
            averaged_test_accuracy: averaged.as_ref().map(|e| e.accuracy),
        };
        log::info!(
            "epoch {:>3}/{}  train loss {:.4} acc {:5.2}%  test loss {:.4} acc {:5.2}%  \
             lr {:.2e}  {:.1}s  {:.1} img/s",
            row.epoch,
            self.config.train.epochs,
            row.train_loss,
            100.0 * row.train_accuracy,
            row.test_loss,
            100.0 * row.test_accuracy,
            row.lr,
            row.epoch_seconds,
            row.images_per_second
        );
        if let (Some(loss), Some(accuracy)) = (row.averaged_test_loss, row.averaged_test_accuracy) {
            log::info!(
                "          averaged weights: test loss {loss:.4} acc {:5.2}%",
                100.0 * accuracy
            );
        }
        if let Some(step) = last_step.filter(|s| s.record.is_some()) {
            log::info!("          {}: {}", self.config.optimizer, step.summary);
        }
        self.metrics.push(row);
        self.recorder.epoch(&self.metrics)?;
        self.position.epoch += 1;
        self.position.step_in_epoch = 0;
        Ok(())
    }

    /// The test set's evaluation of the running average of the parameters, with batch-norm
    /// statistics recomputed for it over the first batches of `plan` (the live weights'
    /// statistics describe other weights): `train.bn_recompute_batches` of them, or
    /// `AVERAGE_BN_BATCHES` where that is 0. None without an average (yet).
    fn evaluate_average(
        &mut self,
        plan: &EpochPlan,
        transform: &Transform,
    ) -> Option<crate::evaluation::Evaluation> {
        let average = self.average.as_ref()?.value()?;
        let batches = match self.config.bn_recompute_batches() {
            0 => AVERAGE_BN_BATCHES,
            n => n,
        };
        let buffers = crate::bn_statistics::recompute(
            &self.network,
            average,
            self.buffers.clone(),
            &self.train,
            plan,
            batches,
            transform,
            &self.device,
        );
        let eval = evaluate(
            &self.network,
            average,
            &buffers,
            &self.test,
            self.config.train.eval_batch_size,
            transform,
            &self.device,
        );
        self.average_buffers = Some(buffers);
        Some(eval)
    }

    fn outcome(&self, last_checkpoint: Option<PathBuf>, interrupted: bool) -> TrainOutcome {
        TrainOutcome {
            run_dir: self.paths.run_dir.clone(),
            metrics: self.metrics.clone(),
            params: to_host(&self.params),
            buffers: to_host(&self.buffers),
            average: self.average.as_ref().and_then(|a| a.value()).map(to_host),
            average_buffers: self.average_buffers.as_ref().map(to_host),
            last_checkpoint,
            position: self.position,
            interrupted,
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
            average: self.average.as_ref().and_then(IterateAverage::state),
            grown_batch_sizes: self.grown_batch_sizes.clone(),
        };
        ckpt.save(&self.paths.checkpoints, self.config.checkpoint.keep)
    }
}

/// Divergence is caught at the step where it happens, before anything of it is saved: one
/// scalar read per step (the loss plus the parameters' sum, which is not finite as soon as
/// one parameter is not). Err says what went wrong.
fn check_finite(loss: &Tensor<1>, params: &Tensor<1>) -> std::result::Result<(), String> {
    let health = loss.clone() + params.clone().sum();
    if health.into_scalar::<f64>().is_finite() {
        return Ok(());
    }
    let loss = loss.clone().into_scalar::<f64>();
    Err(if loss.is_finite() {
        "a parameter became NaN or infinite".to_string()
    } else {
        format!("the loss became {loss}")
    })
}

fn last_good_checkpoint(paths: &RunPaths) -> String {
    match checkpoint::list(&paths.checkpoints).pop() {
        Some(p) => p.display().to_string(),
        None => "none (no checkpoint was written yet)".into(),
    }
}
