//! Evaluation: loss, accuracy, per-class accuracy and the confusion matrix.

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
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
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
    let k = data.classes.len();
    let mut confusion = vec![vec![0u64; k]; k];
    let mut loss_sum = 0.0;
    let param_parts = network.params.split(params);
    let buffer_parts = network.buffers.split(buffers);
    for batch in eval_batches(data, batch_size, transform) {
        let (images, labels) = batch.to_device(device);
        let logits = network
            .forward(images, &param_parts, &buffer_parts, crate::model::Mode::Eval)
            .logits;
        let n = batch.len();
        let predicted: Vec<i64> = logits.clone().argmax(1).reshape([n]).to_data().iter::<i64>().collect();
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
            if total == 0 { 0.0 } else { row[i] as f64 / total as f64 }
        })
        .collect();
    Evaluation {
        images,
        loss: loss_sum / images.max(1) as f64,
        accuracy: correct as f64 / images.max(1) as f64,
        classes: data.classes.clone(),
        per_class_accuracy,
        confusion,
    }
}

impl Evaluation {
    /// Per-class accuracy and the confusion matrix as a text table.
    pub fn table(&self) -> String {
        let width = self.classes.iter().map(String::len).max().unwrap_or(5).max(5);
        let mut out = format!(
            "test accuracy {:.2}% ({} images), loss {:.4}\n\n{:>width$}  accuracy\n",
            100.0 * self.accuracy,
            self.images,
            self.loss,
            "class"
        );
        for (name, acc) in self.classes.iter().zip(&self.per_class_accuracy) {
            out.push_str(&format!("{name:>width$}  {:>7.2}%\n", 100.0 * acc));
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
        out
    }
}
