//! The running sums of an epoch (loss, correct predictions, images, time), kept on the
//! device so that a step does not wait for a read, and carried across a mid-epoch
//! checkpoint so that a resumed epoch reports what an uninterrupted one would.

use std::time::Instant;

use burn::prelude::*;

use crate::store::checkpoint::EpochProgress;

pub struct EpochTotals {
    /// Sum of (mean batch loss x batch size), one element.
    loss_sum: Option<Tensor<1>>,
    correct: Option<Tensor<1, Int>>,
    images: usize,
    /// Seconds before this session's part of the epoch, and when that part started.
    seconds_before: f64,
    started: Instant,
}

impl EpochTotals {
    /// Continues from the sums of an interrupted part of the epoch (zero at its start), in
    /// the same order of additions, so that the row equals an uninterrupted run's.
    pub fn resume(so_far: EpochProgress, device: &Device) -> Self {
        let resumed = so_far.images > 0;
        Self {
            loss_sum: resumed
                .then(|| Tensor::from_data(TensorData::new(vec![so_far.loss_sum], [1]), device)),
            correct: resumed
                .then(|| Tensor::from_data(TensorData::new(vec![so_far.correct], [1]), device)),
            images: so_far.images,
            seconds_before: so_far.seconds,
            started: Instant::now(),
        }
    }

    /// Adds a batch of `images` with mean loss `loss` and `correct` right answers.
    pub fn add(&mut self, loss: &Tensor<1>, correct: Tensor<1, Int>, images: usize) {
        let weighted = loss.clone().mul_scalar(images as f32);
        self.loss_sum = Some(match self.loss_sum.take() {
            Some(s) => s + weighted,
            None => weighted,
        });
        self.correct = Some(match self.correct.take() {
            Some(s) => s + correct,
            None => correct,
        });
        self.images += images;
    }

    pub fn images(&self) -> usize {
        self.images
    }

    pub fn seconds(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }

    /// Mean loss and accuracy so far (reads from the device).
    pub fn read(&self) -> (f64, f64) {
        let loss = self
            .loss_sum
            .as_ref()
            .map_or(f64::NAN, |s| s.clone().into_scalar::<f64>());
        let correct = self
            .correct
            .as_ref()
            .map_or(0, |s| s.clone().into_scalar::<i64>());
        let images = self.images.max(1) as f64;
        (loss / images, correct as f64 / images)
    }

    /// What a mid-epoch checkpoint keeps.
    pub fn progress(&self) -> EpochProgress {
        EpochProgress {
            loss_sum: self
                .loss_sum
                .clone()
                .map_or(0.0, |s| s.into_scalar::<f32>()),
            correct: self.correct.clone().map_or(0, |s| s.into_scalar::<i64>()),
            images: self.images,
            seconds: self.seconds(),
        }
    }
}
