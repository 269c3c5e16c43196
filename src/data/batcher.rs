//! Batches: the data order of an epoch, augmentation (random crop with zero padding,
//! horizontal flip), per-channel normalisation, and a background thread that prepares the
//! next batches while the device works on the current one.
//!
//! Every random choice is drawn from a stream derived from (seed, epoch, step), so a run
//! resumed at any step sees exactly the batches the uninterrupted run would have.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use burn::prelude::*;
use burn::tensor::TensorData;

use super::DataConfig;
use super::{CHANNELS, Dataset, IMAGE_BYTES, IMAGE_SIDE};
use crate::support::rng::Rng;

/// Labels of the random streams, so that order and augmentation never share one.
const STREAM_ORDER: u64 = 1;
const STREAM_AUGMENT: u64 = 2;

/// How pixels become network inputs.
#[derive(Debug, Clone)]
pub struct Transform {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub crop_padding: usize,
    pub flip: bool,
}

impl Transform {
    pub fn train(config: &DataConfig) -> Self {
        Self {
            mean: config.mean,
            std: config.std,
            crop_padding: config.crop_padding,
            flip: config.flip,
        }
    }

    /// Normalisation only, for evaluation.
    pub fn eval(config: &DataConfig) -> Self {
        Self {
            crop_padding: 0,
            flip: false,
            ..Self::train(config)
        }
    }

    /// Writes one normalised (and, with `rng`, augmented) image into `out` (CHW floats).
    fn apply(&self, image: &[u8], rng: Option<&mut Rng>, out: &mut [f32]) {
        let side = IMAGE_SIDE as isize;
        let (mut dy, mut dx, mut flip) = (0isize, 0isize, false);
        if let Some(rng) = rng {
            let pad = self.crop_padding;
            if pad > 0 {
                dy = rng.below(2 * pad + 1) as isize - pad as isize;
                dx = rng.below(2 * pad + 1) as isize - pad as isize;
            }
            flip = self.flip && rng.coin();
        }
        for c in 0..CHANNELS {
            let scale = 1.0 / (255.0 * self.std[c]);
            let shift = self.mean[c] / self.std[c];
            // A zero pixel (the padding) after normalisation.
            let fill = -shift;
            let plane = &image[c * IMAGE_SIDE * IMAGE_SIDE..(c + 1) * IMAGE_SIDE * IMAGE_SIDE];
            let out_plane =
                &mut out[c * IMAGE_SIDE * IMAGE_SIDE..(c + 1) * IMAGE_SIDE * IMAGE_SIDE];
            for y in 0..side {
                let sy = y + dy;
                for x in 0..side {
                    let xx = if flip { side - 1 - x } else { x };
                    let sx = xx + dx;
                    let value = if (0..side).contains(&sy) && (0..side).contains(&sx) {
                        plane[(sy * side + sx) as usize] as f32 * scale - shift
                    } else {
                        fill
                    };
                    out_plane[(y * side + x) as usize] = value;
                }
            }
        }
    }
}

/// A batch on the host, ready to upload.
#[derive(Debug, Clone)]
pub struct HostBatch {
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
}

impl HostBatch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Assembles the images at `indices`; `rng` enables augmentation.
    pub fn assemble(
        data: &Dataset,
        indices: &[usize],
        transform: &Transform,
        mut rng: Option<&mut Rng>,
    ) -> Self {
        let mut pixels = vec![0f32; indices.len() * IMAGE_BYTES];
        for (slot, &i) in pixels.chunks_exact_mut(IMAGE_BYTES).zip(indices) {
            transform.apply(data.image(i), rng.as_deref_mut(), slot);
        }
        let labels = indices.iter().map(|&i| data.labels[i] as i64).collect();
        Self { pixels, labels }
    }

    /// Uploads to `device`: images `[n, 3, 32, 32]` and labels `[n]`.
    pub fn to_device(&self, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let n = self.len();
        let images = Tensor::<4>::from_data(
            TensorData::new(self.pixels.clone(), [n, CHANNELS, IMAGE_SIDE, IMAGE_SIDE]),
            device,
        );
        let labels = Tensor::<1, Int>::from_data(TensorData::new(self.labels.clone(), [n]), device);
        (images, labels)
    }
}

/// The batches of one training epoch: a seeded permutation cut into full batches (a last
/// partial batch is dropped, so batch-norm statistics never come from a handful of images,
/// unless the data set is smaller than one batch).
#[derive(Debug, Clone)]
pub struct EpochPlan {
    pub epoch: usize,
    order: Vec<usize>,
    batch_size: usize,
}

impl EpochPlan {
    pub fn new(seed: u64, epoch: usize, len: usize, batch_size: usize) -> Self {
        let mut order: Vec<usize> = (0..len).collect();
        Rng::derive(seed, &[STREAM_ORDER, epoch as u64]).shuffle(&mut order);
        Self {
            epoch,
            order,
            batch_size: batch_size.min(len),
        }
    }

    pub fn steps(&self) -> usize {
        Self::steps_of(self.order.len(), self.batch_size)
    }

    /// The steps of an epoch of `len` images in batches of `batch_size` (without drawing the
    /// order).
    pub fn steps_of(len: usize, batch_size: usize) -> usize {
        len / batch_size.min(len).max(1)
    }

    pub fn batch_indices(&self, step: usize) -> &[usize] {
        &self.order[step * self.batch_size..(step + 1) * self.batch_size]
    }

    /// The augmentation stream of one step.
    pub fn augment_rng(seed: u64, epoch: usize, step: usize) -> Rng {
        Rng::derive(seed, &[STREAM_AUGMENT, epoch as u64, step as u64])
    }
}

/// Prepares the batches of steps `first..plan.steps()` on a background thread, a few ahead.
pub struct Prefetcher {
    receiver: Option<Receiver<(usize, HostBatch)>>,
    worker: Option<JoinHandle<()>>,
}

impl Prefetcher {
    pub fn start(
        data: Arc<Dataset>,
        plan: EpochPlan,
        first: usize,
        seed: u64,
        transform: Transform,
    ) -> Self {
        const AHEAD: usize = 3;
        let (sender, receiver): (SyncSender<_>, _) = sync_channel(AHEAD);
        let worker = std::thread::spawn(move || {
            for step in first..plan.steps() {
                let mut rng = EpochPlan::augment_rng(seed, plan.epoch, step);
                let batch = HostBatch::assemble(
                    &data,
                    plan.batch_indices(step),
                    &transform,
                    Some(&mut rng),
                );
                if sender.send((step, batch)).is_err() {
                    return; // the consumer stopped early
                }
            }
        });
        Self {
            receiver: Some(receiver),
            worker: Some(worker),
        }
    }
}

impl Iterator for Prefetcher {
    type Item = (usize, HostBatch);

    fn next(&mut self) -> Option<Self::Item> {
        self.receiver.as_ref()?.recv().ok()
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Closing the channel first lets a worker blocked on `send` finish.
        self.receiver.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Evaluation batches: every image once, in order, without augmentation.
pub fn eval_batches<'a>(
    data: &'a Dataset,
    batch_size: usize,
    transform: &'a Transform,
) -> impl Iterator<Item = HostBatch> + 'a {
    let indices: Vec<usize> = (0..data.len()).collect();
    let chunks: Vec<Vec<usize>> = indices
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    chunks
        .into_iter()
        .map(move |chunk| HostBatch::assemble(data, &chunk, transform, None))
}
