//! Per-epoch metrics, written as CSV (opens in any spreadsheet or plotting tool) in the run
//! directory, rewritten atomically after every epoch.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub epoch_seconds: f64,
    pub images_per_second: f64,
}

const HEADER: &str = "epoch,step,lr,train_loss,train_accuracy,test_loss,test_accuracy,epoch_seconds,images_per_second";

pub fn to_csv(rows: &[EpochMetrics]) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for r in rows {
        out.push_str(&format!(
            "{},{},{:.6e},{:.6},{:.6},{:.6},{:.6},{:.3},{:.3}\n",
            r.epoch,
            r.step,
            r.lr,
            r.train_loss,
            r.train_accuracy,
            r.test_loss,
            r.test_accuracy,
            r.epoch_seconds,
            r.images_per_second
        ));
    }
    out
}

/// Rewrites the metrics file with all rows so far.
pub fn write(path: &Path, rows: &[EpochMetrics]) -> Result<()> {
    write_atomic(path, to_csv(rows).as_bytes())
}
