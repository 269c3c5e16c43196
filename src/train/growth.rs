//! `train.batch_growth`: at each epoch's end, the variance test (`batch_growth.rs`) on the
//! next epoch's first batch, and the batch of the epochs after grown where it fails.

use anyhow::Result;

use super::Training;
use crate::batch_growth::{grown_batch_size, variance_test};
use crate::config::Config;
use crate::curvature::{Batch, NetworkObjective};
use crate::data::batcher::{EpochPlan, HostBatch, Transform};
use crate::optim::schedule::Schedule;

/// Steps in each epoch of the run, and the schedule over them, where the batch follows the
/// config and the milestones `grown` added.
pub(super) fn steps_and_schedule(
    config: &Config,
    train_images: usize,
    grown: &[[usize; 2]],
) -> (Vec<usize>, Schedule) {
    let epoch_steps: Vec<usize> = (0..config.train.epochs)
        .map(|epoch| {
            let batch_size = config.train.batch_size_after_growth(epoch, grown);
            EpochPlan::steps_of(train_images, batch_size)
        })
        .collect();
    // Hessian-free has no learning rate: its schedule (unused by it) peaks at 1.
    let schedule = Schedule::new(
        config.optimizer.lr().unwrap_or(1.0),
        &config.schedule,
        &epoch_steps,
    );
    (epoch_steps, schedule)
}

impl Training {
    /// The training batch of the epoch with this 0-based index: the config's, or the one the
    /// variance test has grown it to.
    pub(super) fn batch_size_of(&self, epoch: usize) -> usize {
        self.config
            .train
            .batch_size_after_growth(epoch, &self.grown_batch_sizes)
    }

    /// With `train.batch_growth`, between epochs: the test at the current parameters on the
    /// next epoch's first batch (as that epoch will draw and augment it), and where it fails
    /// a larger batch from that epoch on (the schedule then spans the run's new step count).
    pub(super) fn grow_batch(&mut self) -> Result<()> {
        let Some(growth) = self.config.train.batch_growth else {
            return Ok(());
        };
        let next = self.position.epoch;
        if next >= self.config.train.epochs {
            return Ok(());
        }
        let current = self.batch_size_of(next);
        let seed = self.config.seed;
        let plan = EpochPlan::new(seed, next, self.train.len(), current);
        let mut rng = EpochPlan::augment_rng(seed, next, 0);
        let transform = Transform::train(&self.config.data);
        let (images, labels) = HostBatch::assemble(
            &self.train,
            plan.batch_indices(0),
            &transform,
            Some(&mut rng),
        )
        .to_device(&self.device);
        let objective = NetworkObjective::new(
            &self.network,
            self.config.train.label_smoothing,
            self.config.optimizer.weight_decay(),
            &self.device,
        );
        let batch = Batch { images, labels };
        let test = variance_test(
            &objective,
            &self.params,
            &batch,
            growth.chunks,
            growth.theta,
        );
        let grown = grown_batch_size(&test, current, growth.max_batch_size);
        self.recorder.scalars(
            self.position.global_step,
            &[
                ("batch_growth/variance_ratio", test.ratio() as f32),
                (
                    "batch_growth/passing_batch_size",
                    test.passing_batch_size as f32,
                ),
                ("batch_growth/batch_size", grown as f32),
            ],
        );
        log::info!(
            "variance test on {} images: ||Var||_1 / (|S| ||g||^2) = {:.3} (theta^2 = {:.3}); \
             {}",
            test.batch_size,
            test.ratio(),
            growth.theta * growth.theta,
            match (test.passes(), grown > current) {
                (true, _) => format!("passes, the batch stays {current}"),
                (false, true) => format!(
                    "fails (it would pass at {}): {grown} images a step from epoch {}",
                    test.passing_batch_size,
                    next + 1
                ),
                (false, false) => format!(
                    "fails (it would pass at {}), but the batch is at max_batch_size \
                     ({current})",
                    test.passing_batch_size
                ),
            }
        );
        if grown > current {
            self.grown_batch_sizes.push([next + 1, grown]);
            (self.epoch_steps, self.schedule) =
                steps_and_schedule(&self.config, self.train.len(), &self.grown_batch_sizes);
        }
        Ok(())
    }
}
