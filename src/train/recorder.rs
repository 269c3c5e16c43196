//! Everything a run writes about itself besides checkpoints, behind one interface: the
//! epoch metrics (`metrics.csv`), Hessian-free's step log (`steps.csv`), TensorBoard's event
//! file, `report.md` and the plots. The loop says what happened; this decides where it goes.

use anyhow::Result;

use crate::checkpoint::{self, Position};
use crate::config::Config;
use crate::metrics::{self, EpochMetrics, StepLog, StepMetrics};
use crate::optim::StepInfo;
use crate::run_dir::RunPaths;
use crate::tensorboard::EventWriter;

/// What `report.md` says of the device, model and data.
pub struct ReportFacts {
    pub device: String,
    pub model: String,
    pub data: String,
}

pub struct Recorder {
    paths: RunPaths,
    config: Config,
    facts: ReportFacts,
    /// Hessian-free's per-step log (None for optimizers that report no steps).
    step_log: Option<StepLog>,
    /// TensorBoard's event file (None once writing it failed: it is a convenience).
    events: Option<EventWriter>,
}

impl Recorder {
    /// Starts (or continues, at `position`) the run's records. The metrics file comes first:
    /// it is what marks the folder as a run of hftrain's (`run_dir::was_started_by_hftrain`),
    /// should the process be killed right after.
    pub fn open(
        paths: &RunPaths,
        config: &Config,
        facts: ReportFacts,
        position: Position,
        rows: &[EpochMetrics],
    ) -> Result<Self> {
        metrics::write(&paths.metrics, rows)?;
        checkpoint::write_run_config(&paths.run_dir, config)?;
        let step_log = if config.optimizer.reports_steps() {
            let log = StepLog::open(&paths.steps, position.global_step);
            log.write()?;
            Some(log)
        } else {
            None
        };
        let events = EventWriter::open(&paths.run_dir, position.global_step as u64)
            .inspect_err(|e| log::warn!("no TensorBoard event file for this run: {e:#}"))
            .ok();
        Ok(Self {
            paths: paths.clone(),
            config: config.clone(),
            facts,
            step_log,
            events,
        })
    }

    /// Appends scalars at `global_step` to the TensorBoard file. A failure there is reported
    /// once and ends that file's writing, not the run (the CSVs hold the same).
    pub fn scalars(&mut self, global_step: usize, scalars: &[(&str, f32)]) {
        if let Some(events) = &mut self.events
            && let Err(e) = events.scalars(global_step as u64, scalars)
        {
            log::warn!("TensorBoard event file no longer written: {e:#}");
            self.events = None;
        }
    }

    /// A step's row, where the optimizer reports one (`loss` is the batch's mean loss).
    pub fn step(&mut self, position: Position, loss: &burn::prelude::Tensor<1>, info: &StepInfo) {
        let (Some(log), Some(report)) = (self.step_log.as_mut(), &info.report) else {
            return;
        };
        let row = StepMetrics {
            step: position.global_step,
            epoch: position.epoch + 1,
            loss: loss.clone().into_scalar::<f64>(),
            report: report.clone(),
        };
        log.push(row.clone());
        self.scalars(position.global_step, &metrics::step_scalars(&row));
    }

    /// Writes the step log (before a mid-epoch checkpoint, so that it matches it).
    pub fn write_steps(&self) -> Result<()> {
        match &self.step_log {
            Some(log) => log.write(),
            None => Ok(()),
        }
    }

    /// An epoch's end: every file rewritten with `rows` (all epochs so far).
    pub fn epoch(&mut self, rows: &[EpochMetrics]) -> Result<()> {
        let Some(row) = rows.last() else {
            return Ok(());
        };
        self.scalars(row.step, &metrics::epoch_scalars(row));
        if let Some(events) = &self.events
            && let Err(e) = events.sync()
        {
            log::warn!("{e:#}");
        }
        metrics::write(&self.paths.metrics, rows)?;
        self.write_steps()?;
        crate::report::write(
            &self.paths.report,
            &self.config,
            &crate::report::RunFacts {
                device: &self.facts.device,
                model: &self.facts.model,
                data: &self.facts.data,
                step_log: self.step_log.is_some(),
            },
            rows,
        )?;
        // Pictures are a convenience: failing to draw them must not stop the run.
        let steps = self.step_log.as_ref().map(StepLog::rows);
        if let Err(e) = crate::plots::write_all(&self.paths.run_dir, rows, steps) {
            log::warn!("plots not drawn: {e:#}");
        }
        Ok(())
    }
}
