//! Evaluation: loss, accuracy, per-class accuracy, the confusion matrix; for `hftrain eval`
//! also accuracy with horizontal-flip test-time augmentation and the most confident mistakes.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::data::batcher::{Transform, eval_batches};
use crate::model::{Network, cross_entropy};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub images: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub classes: Vec<String>,
    /// None (null in JSON) for a class without any evaluated image (`eval --limit`).
    pub per_class_accuracy: Vec<Option<f64>>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Accuracy when the logits of each image and of its mirror image are averaged.
    #[serde(default)]
    pub tta_accuracy: Option<f64>,
    /// The wrong predictions made with the highest softmax probability, most confident first.
    #[serde(default)]
    pub mistakes: Vec<Mistake>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mistake {
    /// Index of the image in the evaluated data set.
    pub index: usize,
    pub truth: usize,
    pub predicted: usize,
    /// Softmax probability of the predicted class.
    pub confidence: f64,
}

/// What `evaluate_with` adds to the plain evaluation.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalOptions {
    /// Also evaluate with horizontal-flip test-time augmentation (a second forward pass).
    pub flip_tta: bool,
    /// Keep this many most confident mistakes.
    pub mistakes: usize,
}

/// Evaluates the network (batch norm with running statistics) on every image of `data`.
pub fn evaluate(
    network: &Network,
    params: &Tensor<1>,
    buffers: &Tensor<1>,
    data: &Dataset,
    batch_size: usize,
    transform: &Transform,
    device: &Device,
) -> Evaluation {
    evaluate_with(
        network,
        params,
        buffers,
        data,
        batch_size,
        transform,
        device,
        EvalOptions::default(),
    )
}

/// `evaluate`, with test-time augmentation and mistakes as asked.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_with(
    network: &Network,
    params: &Tensor<1>,
    buffers: &Tensor<1>,
    data: &Dataset,
    batch_size: usize,
    transform: &Transform,
    device: &Device,
    options: EvalOptions,
) -> Evaluation {
    let k = data.classes.len();
    let mut tta_correct = 0u64;
    let mut mistakes = Vec::new();
    let mut offset = 0;
    let mut confusion = vec![vec![0u64; k]; k];
    let mut loss_sum = 0.0;
    let param_parts = network.params.split(params);
    let buffer_parts = network.buffers.split(buffers);
    for batch in eval_batches(data, batch_size, transform) {
        let (images, labels) = batch.to_device(device);
        let forward = |x: Tensor<4>| {
            network
                .forward(x, &param_parts, &buffer_parts, crate::model::Mode::Eval)
                .logits
        };
        let logits = forward(images.clone());
        let n = batch.len();
        let predicted = predicted_classes(logits.clone(), n);
        if options.flip_tta {
            // Images are NCHW: the width is axis 3.
            let averaged = (logits.clone() + forward(images.flip([3]))).div_scalar(2.0);
            let guesses = predicted_classes(averaged, n);
            tta_correct += guesses
                .iter()
                .zip(&batch.labels)
                .filter(|(g, t)| g == t)
                .count() as u64;
        }
        if options.mistakes > 0 {
            mistakes.extend(mistakes_in(
                logits.clone(),
                &batch.labels,
                &predicted,
                offset,
                k,
            ));
        }
        offset += n;
        let loss: f64 = cross_entropy(logits, labels, 0.0).into_scalar::<f64>();
        loss_sum += loss * n as f64;
        for (&truth, &guess) in batch.labels.iter().zip(&predicted) {
            confusion[truth as usize][guess as usize] += 1;
        }
    }
    let images = data.len();
    let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
    let per_class_accuracy = confusion
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let total: u64 = row.iter().sum();
            (total > 0).then(|| row[i] as f64 / total as f64)
        })
        .collect();
    Evaluation {
        images,
        loss: loss_sum / images.max(1) as f64,
        accuracy: correct as f64 / images.max(1) as f64,
        classes: data.classes.clone(),
        per_class_accuracy,
        confusion,
        tta_accuracy: options
            .flip_tta
            .then(|| tta_correct as f64 / images.max(1) as f64),
        mistakes: {
            mistakes.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
            mistakes.truncate(options.mistakes);
            mistakes
        },
    }
}

/// The class of each of the `n` rows' largest logit, on the host.
fn predicted_classes(logits: Tensor<2>, n: usize) -> Vec<i64> {
    logits
        .argmax(1)
        .reshape([n])
        .to_data()
        .iter::<i64>()
        .collect()
}

/// A batch's misclassified images (numbered from `offset`), each with the probability the
/// network gave its wrong guess (of `k` classes).
fn mistakes_in(
    logits: Tensor<2>,
    truths: &[i64],
    predicted: &[i64],
    offset: usize,
    k: usize,
) -> Vec<Mistake> {
    let probabilities: Vec<f64> = burn::tensor::activation::softmax(logits, 1)
        .to_data()
        .iter::<f64>()
        .collect();
    let mut mistakes = Vec::new();
    for (i, (&truth, &guess)) in truths.iter().zip(predicted).enumerate() {
        if truth != guess {
            mistakes.push(Mistake {
                index: offset + i,
                truth: truth as usize,
                predicted: guess as usize,
                confidence: probabilities[i * k + guess as usize],
            });
        }
    }
    mistakes
}

impl Evaluation {
    /// Per-class accuracy and the confusion matrix as a text table.
    pub fn table(&self) -> String {
        let width = self
            .classes
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!(
            "test accuracy {:.2}% ({} images), loss {:.4}\n\n{:>width$}  accuracy\n",
            100.0 * self.accuracy,
            self.images,
            self.loss,
            "class"
        );
        if let Some(tta) = self.tta_accuracy {
            out.insert_str(
                out.find('\n').unwrap_or(out.len()),
                &format!("; with horizontal-flip TTA {:.2}%", 100.0 * tta),
            );
        }
        for (name, acc) in self.classes.iter().zip(&self.per_class_accuracy) {
            match acc {
                Some(acc) => out.push_str(&format!("{name:>width$}  {:>7.2}%\n", 100.0 * acc)),
                None => out.push_str(&format!("{name:>width$}  no images\n")),
            }
        }
        // Rows are labelled "index name"; the columns by index alone, to stay narrow.
        let index_width = self.classes.len().saturating_sub(1).to_string().len();
        let label_width = index_width + 1 + width;
        out.push_str(&format!(
            "\nconfusion matrix (rows: true class, columns: predicted)\n{:label_width$}",
            ""
        ));
        for i in 0..self.classes.len() {
            out.push_str(&format!(" {:>5}", i));
        }
        out.push('\n');
        for (i, (name, row)) in self.classes.iter().zip(&self.confusion).enumerate() {
            out.push_str(&format!("{i:>index_width$} {name:<width$}"));
            for count in row {
                out.push_str(&format!(" {count:>5}"));
            }
            out.push('\n');
        }
        if !self.mistakes.is_empty() {
            out.push_str(
                "\nmost confident mistakes (image index: true -> predicted, probability)\n",
            );
            for m in &self.mistakes {
                out.push_str(&format!(
                    "  {:>5}: {} -> {} ({:.1}%)\n",
                    m.index,
                    self.classes[m.truth],
                    self.classes[m.predicted],
                    100.0 * m.confidence
                ));
            }
        }
        out
    }
}
