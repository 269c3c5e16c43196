//! Per-epoch metrics, written as CSV (opens in any spreadsheet or plotting tool) in the run
//! directory, rewritten atomically after every epoch.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::optim::cg::CgStop;
use crate::optim::hessian_free::{StepReport, StepTiming};

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
    /// The top eigenvalue and the trace of the training loss's Hessian at the epoch's end,
    /// where `train.spectrum_every` asked for them (empty in the CSV otherwise).
    #[serde(default)]
    pub sharpness: Option<f64>,
    #[serde(default)]
    pub hessian_trace: Option<f64>,
}

const HEADER: &str = "epoch,step,lr,train_loss,train_accuracy,test_loss,test_accuracy,epoch_seconds,images_per_second,sharpness,hessian_trace";
/// The columns before the curvature ones were added (files of older runs).
const OLD_COLUMNS: usize = 9;

/// A value of an optional column: empty when absent.
fn optional(value: Option<f64>) -> String {
    value.map_or(String::new(), |v| format!("{v:.6e}"))
}

pub fn to_csv(rows: &[EpochMetrics]) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for r in rows {
        out.push_str(&format!(
            "{},{},{:.6e},{:.6},{:.6},{:.6},{:.6},{:.3},{:.3},{},{}\n",
            r.epoch,
            r.step,
            r.lr,
            r.train_loss,
            r.train_accuracy,
            r.test_loss,
            r.test_accuracy,
            r.epoch_seconds,
            r.images_per_second,
            optional(r.sharpness),
            optional(r.hessian_trace),
        ));
    }
    out
}

/// The TensorBoard scalars of an epoch (tags grouped as TensorBoard shows them: a section per
/// prefix). Accuracies are fractions, as in the CSV.
pub fn epoch_scalars(r: &EpochMetrics) -> Vec<(&'static str, f32)> {
    let curvature = [
        ("curvature/top_eigenvalue", r.sharpness),
        ("curvature/trace", r.hessian_trace),
    ];
    let mut scalars = vec![
        ("loss/train", r.train_loss as f32),
        ("loss/test", r.test_loss as f32),
        ("accuracy/train", r.train_accuracy as f32),
        ("accuracy/test", r.test_accuracy as f32),
        ("optimizer/lr", r.lr as f32),
        ("time/epoch_seconds", r.epoch_seconds as f32),
        ("time/images_per_second", r.images_per_second as f32),
        ("epoch", r.epoch as f32),
    ];
    scalars.extend(
        curvature
            .into_iter()
            .filter_map(|(tag, value)| Some((tag, value? as f32))),
    );
    scalars
}

/// Reads a metrics file written by `write` (for `hftrain plot`).
pub fn read(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (number, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let columns = HEADER.split(',').count();
        let parsed = (fields.len() == columns || fields.len() == OLD_COLUMNS).then(|| {
            let f = |i: usize| fields[i].parse::<f64>().ok();
            // An optional column: absent in older files, empty where not measured.
            let optional = |i: usize| match fields.get(i) {
                None | Some(&"") => Some(None),
                Some(text) => text.parse::<f64>().ok().map(Some),
            };
            Some(EpochMetrics {
                epoch: fields[0].parse().ok()?,
                step: fields[1].parse().ok()?,
                lr: f(2)?,
                train_loss: f(3)?,
                train_accuracy: f(4)?,
                test_loss: f(5)?,
                test_accuracy: f(6)?,
                epoch_seconds: f(7)?,
                images_per_second: f(8)?,
                sharpness: optional(9)?,
                hessian_trace: optional(10)?,
            })
        });
        match parsed.flatten() {
            Some(row) => rows.push(row),
            None => bail!(
                "{} line {}: expected the columns {HEADER} (the last two may be empty), found \
                 {line:?}",
                path.display(),
                number + 1
            ),
        }
    }
    Ok(rows)
}

/// Rewrites the metrics file with all rows so far.
pub fn write(path: &Path, rows: &[EpochMetrics]) -> Result<()> {
    write_atomic(path, to_csv(rows).as_bytes())
}

/// One Hessian-free step, for `steps.csv` (what a user of such an optimizer plots: damping,
/// CG iterations, rho, predicted versus actual reduction).
#[derive(Debug, Clone, PartialEq)]
pub struct StepMetrics {
    /// Global step, counted from 1.
    pub step: usize,
    pub epoch: usize,
    /// Mean data loss of the batch before the step.
    pub loss: f64,
    pub report: StepReport,
}

/// The TensorBoard scalars of a Hessian-free step.
pub fn step_scalars(row: &StepMetrics) -> Vec<(&'static str, f32)> {
    let r = &row.report;
    vec![
        ("loss/train_batch", row.loss as f32),
        ("hessian_free/damping", r.damping_used as f32),
        ("hessian_free/cg_iterations", r.cg_iterations as f32),
        ("hessian_free/rho", r.rho as f32),
        ("hessian_free/step_size", r.step_size as f32),
        ("hessian_free/step_norm", r.step_norm as f32),
        ("hessian_free/predicted_change", r.predicted as f32),
        ("hessian_free/actual_change", r.actual as f32),
        ("hessian_free/accepted", f32::from(u8::from(r.accepted))),
        ("hessian_free/converged", f32::from(u8::from(r.converged))),
        ("hessian_free/curvature_products", r.timing.products as f32),
        ("time/step_seconds", r.timing.total as f32),
        ("time/step_gradient_seconds", r.timing.gradient as f32),
        ("time/step_cg_seconds", r.timing.cg as f32),
        (
            "time/step_backtracking_seconds",
            r.timing.backtracking as f32,
        ),
        ("time/step_line_search_seconds", r.timing.line_search as f32),
    ]
}

const STEP_HEADER: &str = "step,epoch,loss,objective_before,objective_after,predicted,actual,rho,\
damping_used,damping,cg_iterations,cg_stop,chosen_iteration,step_size,step_norm,accepted,\
converged,curvature_products,seconds_gradient,seconds_cg,seconds_backtracking,\
seconds_line_search,seconds_step";

/// The columns of `steps.csv` that are wall times (they differ between equal runs).
pub const STEP_TIME_COLUMNS: [&str; 5] = [
    "seconds_gradient",
    "seconds_cg",
    "seconds_backtracking",
    "seconds_line_search",
    "seconds_step",
];

/// The names of `steps.csv`'s columns.
pub fn step_columns() -> Vec<&'static str> {
    STEP_HEADER.split(',').collect()
}

/// The position of column `name` in `steps.csv`.
pub fn step_column(name: &str) -> Option<usize> {
    STEP_HEADER.split(',').position(|c| c == name)
}

/// One `steps.csv` line.
fn format_step(row: &StepMetrics) -> String {
    let r = &row.report;
    format!(
        "{},{},{:.6},{:.8e},{:.8e},{:.6e},{:.6e},{:.6},{:.6e},{:.6e},{},{},{},{:.6},{:.6e},{},\
         {},{},{:.4},{:.4},{:.4},{:.4},{:.4}",
        row.step,
        row.epoch,
        row.loss,
        r.value_before,
        r.value_after,
        r.predicted,
        r.actual,
        r.rho,
        r.damping_used,
        r.damping,
        r.cg_iterations,
        r.cg_stop.label(),
        r.chosen_iteration,
        r.step_size,
        r.step_norm,
        r.accepted,
        r.converged,
        r.timing.products,
        r.timing.gradient,
        r.timing.cg,
        r.timing.backtracking,
        r.timing.line_search,
        r.timing.total,
    )
}

/// A `steps.csv` line read back (None for a line of another format, such as an older
/// hftrain's, or a damaged one). The numbers are those `format_step` wrote, so writing the
/// row again gives the same line.
fn parse_step(line: &str) -> Option<StepMetrics> {
    let fields: Vec<&str> = line.split(',').collect();
    if fields.len() != step_columns().len() {
        return None;
    }
    let field = |name: &str| fields[step_column(name).expect("a step column")];
    let number = |name: &str| field(name).parse::<f64>().ok();
    let count = |name: &str| field(name).parse::<usize>().ok();
    let flag = |name: &str| field(name).parse::<bool>().ok();
    Some(StepMetrics {
        step: count("step")?,
        epoch: count("epoch")?,
        loss: number("loss")?,
        report: StepReport {
            value_before: number("objective_before")?,
            value_after: number("objective_after")?,
            predicted: number("predicted")?,
            actual: number("actual")?,
            rho: number("rho")?,
            damping_used: number("damping_used")?,
            damping: number("damping")?,
            cg_iterations: count("cg_iterations")?,
            cg_stop: CgStop::from_label(field("cg_stop"))?,
            chosen_iteration: count("chosen_iteration")?,
            step_size: number("step_size")?,
            step_norm: number("step_norm")?,
            accepted: flag("accepted")?,
            converged: flag("converged")?,
            timing: StepTiming {
                products: count("curvature_products")?,
                gradient: number("seconds_gradient")?,
                cg: number("seconds_cg")?,
                backtracking: number("seconds_backtracking")?,
                line_search: number("seconds_line_search")?,
                total: number("seconds_step")?,
            },
        },
    })
}

/// The step log of a run, `steps.csv`, rewritten atomically with the epoch metrics.
pub struct StepLog {
    path: std::path::PathBuf,
    rows: Vec<StepMetrics>,
}

impl StepLog {
    /// The log at `path`, continuing an existing one up to and including global step
    /// `last_step` (a resumed run drops the rows of its interrupted part). A row that does
    /// not parse, or has other columns than this version writes (a log of an older hftrain),
    /// ends what is kept.
    pub fn open(path: &Path, last_step: usize) -> Self {
        let rows = std::fs::read_to_string(path)
            .map(|text| {
                text.lines()
                    .skip(1)
                    .map_while(parse_step)
                    .take_while(|row| row.step <= last_step)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            path: path.to_path_buf(),
            rows,
        }
    }

    pub fn push(&mut self, row: StepMetrics) {
        self.rows.push(row);
    }

    pub fn rows(&self) -> &[StepMetrics] {
        &self.rows
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn write(&self) -> Result<()> {
        let mut out = String::from(STEP_HEADER);
        out.push('\n');
        for row in &self.rows {
            out.push_str(&format_step(row));
            out.push('\n');
        }
        write_atomic(&self.path, out.as_bytes())
    }
}
