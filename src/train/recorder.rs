//! Everything a run writes about itself besides checkpoints, behind one interface: the
//! epoch metrics (`metrics.csv`), the optimizer's step log (`steps.csv`), TensorBoard's event
//! file, `report.md` and the plots. The loop says what happened; this decides where it goes.

use anyhow::Result;

use crate::config::Config;
use crate::optim::StepInfo;
use crate::store::checkpoint::{self, Position};
use crate::store::metrics::{self, EpochMetrics, StepLog, StepMetrics};
use crate::store::run_dir::RunPaths;
use crate::store::tensorboard::EventWriter;

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
    /// The optimizer's step log (None for optimizers without step-log columns).
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
        let columns = config.optimizer.step_columns();
        let step_log = if columns.is_empty() {
            None
        } else {
            let log = StepLog::open(&paths.steps, columns, position.global_step)?;
            log.write()?;
            Some(log)
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
        let (Some(log), Some(record)) = (self.step_log.as_mut(), &info.record) else {
            return;
        };
        let row = StepMetrics {
            step: position.global_step,
            epoch: position.epoch + 1,
            loss: loss.clone().into_scalar::<f64>(),
            record: record.clone(),
        };
        log.push(row.clone());
        self.scalars(position.global_step, &row.scalars());
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
        crate::report::markdown::write(
            &self.paths.report,
            &self.config,
            &crate::report::markdown::RunFacts {
                device: &self.facts.device,
                model: &self.facts.model,
                data: &self.facts.data,
                step_log: self.step_log.is_some(),
            },
            rows,
        )?;
        // Pictures are a convenience: failing to draw them must not stop the run.
        let steps = self.step_log.as_ref().map(StepLog::rows);
        if let Err(e) = crate::report::plots::write_all(&self.paths.run_dir, rows, steps) {
            log::warn!("plots not drawn: {e:#}");
        }
        Ok(())
    }
}
