//! Per-epoch metrics, written as CSV (opens in any spreadsheet or plotting tool) in the run
//! directory, rewritten atomically after every epoch.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::optim::step_log::{Cell, Column, StepRecord};
use crate::support::exact_float;
use crate::support::fsutil::write_atomic;

/// One epoch's row. Its floats are kept exactly in checkpoints (`support::exact_float`), so
/// that a resumed run's earlier rows equal the uninterrupted run's to the bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: usize,
    #[serde(with = "exact_float")]
    pub lr: f64,
    #[serde(with = "exact_float")]
    pub train_loss: f64,
    #[serde(with = "exact_float")]
    pub train_accuracy: f64,
    #[serde(with = "exact_float")]
    pub test_loss: f64,
    #[serde(with = "exact_float")]
    pub test_accuracy: f64,
    #[serde(with = "exact_float")]
    pub epoch_seconds: f64,
    #[serde(with = "exact_float")]
    pub images_per_second: f64,
    /// The top eigenvalue and the trace of the training loss's Hessian at the epoch's end,
    /// where `train.spectrum_every` asked for them (empty in the CSV otherwise).
    #[serde(default, with = "exact_float::option")]
    pub sharpness: Option<f64>,
    #[serde(default, with = "exact_float::option")]
    pub hessian_trace: Option<f64>,
    /// The test loss and accuracy of the running average of the parameters (`train.average`,
    /// with batch-norm statistics recomputed for it), where the run keeps one: the CSV has
    /// these columns only then.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "exact_float::option"
    )]
    pub averaged_test_loss: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "exact_float::option"
    )]
    pub averaged_test_accuracy: Option<f64>,
}

impl EpochMetrics {
    /// The better test accuracy of the live and the averaged parameters (what `hftrain
    /// compare` judges a run by).
    pub fn best_test_accuracy(&self) -> f64 {
        self.averaged_test_accuracy
            .map_or(self.test_accuracy, |a| a.max(self.test_accuracy))
    }
}

const HEADER: &str = "epoch,step,lr,train_loss,train_accuracy,test_loss,test_accuracy,epoch_seconds,images_per_second,sharpness,hessian_trace";
/// The columns before the curvature ones were added (files of older runs).
const OLD_COLUMNS: usize = 9;
/// The columns after `HEADER` of a run that averages its parameters (`train.average`).
const AVERAGED_COLUMNS: &str = "averaged_test_loss,averaged_test_accuracy";

/// A value of an optional column: empty when absent.
fn optional(value: Option<f64>) -> String {
    value.map_or(String::new(), |v| format!("{v:.6e}"))
}

/// The metrics as CSV; the averaged weights' columns only where a row has them, so that a
/// run without an average writes the file it always did.
pub fn to_csv(rows: &[EpochMetrics]) -> String {
    let averaged = rows.iter().any(|r| r.averaged_test_accuracy.is_some());
    let mut out = String::from(HEADER);
    if averaged {
        out = format!("{out},{AVERAGED_COLUMNS}");
    }
    out.push('\n');
    for r in rows {
        out.push_str(&format!(
            "{},{},{:.6e},{:.6},{:.6},{:.6},{:.6},{:.3},{:.3},{},{}",
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
        if averaged {
            let fixed = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
            out.push_str(&format!(
                ",{},{}",
                fixed(r.averaged_test_loss),
                fixed(r.averaged_test_accuracy)
            ));
        }
        out.push('\n');
    }
    out
}

/// The TensorBoard scalars of an epoch (tags grouped as TensorBoard shows them: a section per
/// prefix). Accuracies are fractions, as in the CSV.
pub fn epoch_scalars(r: &EpochMetrics) -> Vec<(&'static str, f32)> {
    let optional = [
        ("curvature/top_eigenvalue", r.sharpness),
        ("curvature/trace", r.hessian_trace),
        ("loss/test_averaged", r.averaged_test_loss),
        ("accuracy/test_averaged", r.averaged_test_accuracy),
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
        optional
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
    let averaged_header = format!("{HEADER},{AVERAGED_COLUMNS}");
    // The first line is the header (that of older files is the current one's start, that of
    // a run with an average the current one's and two more): a file without one would lose
    // its first epoch unseen.
    if let Some(first) = text.lines().next()
        && !((HEADER.starts_with(first) && first.split(',').count() >= OLD_COLUMNS)
            || first == averaged_header)
    {
        bail!(
            "{} line 1: expected the header {HEADER}, found {first:?}",
            path.display()
        );
    }
    for (number, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let columns = HEADER.split(',').count();
        let averaged = columns + AVERAGED_COLUMNS.split(',').count();
        let parsed = [OLD_COLUMNS, columns, averaged]
            .contains(&fields.len())
            .then(|| {
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
                    averaged_test_loss: optional(11)?,
                    averaged_test_accuracy: optional(12)?,
                })
            });
        match parsed.flatten() {
            Some(row) => {
                if let Some(why) = implausible(&row) {
                    bail!(
                        "{} line {}: {why}; this file was not written by hftrain as it is \
                         (restore it, or remove the line)",
                        path.display(),
                        number + 1
                    );
                }
                rows.push(row)
            }
            None => bail!(
                "{} line {}: expected the columns {HEADER} (the last two may be empty; \
                 {AVERAGED_COLUMNS} may follow), found {line:?}",
                path.display(),
                number + 1
            ),
        }
    }
    Ok(rows)
}

/// What no run of hftrain writes: an accuracy outside [0, 1], a time or a rate that is
/// negative or not finite (a loss may be NaN: a run that diverged).
fn implausible(row: &EpochMetrics) -> Option<String> {
    let accuracies = [
        ("train_accuracy", row.train_accuracy),
        ("test_accuracy", row.test_accuracy),
        (
            "averaged_test_accuracy",
            row.averaged_test_accuracy.unwrap_or(0.0),
        ),
    ];
    if let Some((name, value)) = accuracies
        .into_iter()
        .find(|(_, v)| !(0.0..=1.0).contains(v))
    {
        return Some(format!("{name} {value} is not a fraction in [0, 1]"));
    }
    let times = [
        ("epoch_seconds", row.epoch_seconds),
        ("images_per_second", row.images_per_second),
    ];
    times
        .into_iter()
        .find(|(_, v)| !(v.is_finite() && *v >= 0.0))
        .map(|(name, value)| format!("{name} {value} is not a finite number of at least 0"))
}

/// Rewrites the metrics file with all rows so far.
pub fn write(path: &Path, rows: &[EpochMetrics]) -> Result<()> {
    write_atomic(path, to_csv(rows).as_bytes())
}

/// One step of an optimizer that keeps a step log, as a row of `steps.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepMetrics {
    /// Global step, counted from 1.
    pub step: usize,
    pub epoch: usize,
    /// Mean data loss of the batch before the step.
    pub loss: f64,
    /// The optimizer's own columns.
    pub record: StepRecord,
}

impl StepMetrics {
    /// The TensorBoard scalars of the step.
    pub fn scalars(&self) -> Vec<(&'static str, f32)> {
        let mut scalars = vec![("loss/train_batch", self.loss as f32)];
        scalars.extend(self.record.scalars());
        scalars
    }

    /// The value of column `name` as a number.
    pub fn number(&self, name: &str) -> Option<f64> {
        self.record.number(name)
    }
}

/// The columns every step log starts with; the optimizer's own follow.
const COMMON_COLUMNS: [&str; 3] = ["step", "epoch", "loss"];

/// The names of the columns of a step log whose optimizer has `columns`.
pub fn step_columns(columns: &[Column]) -> Vec<&'static str> {
    COMMON_COLUMNS
        .into_iter()
        .chain(columns.iter().map(|c| c.name))
        .collect()
}

/// The names of those columns that are wall times (they differ between equal runs).
pub fn step_time_columns(columns: &[Column]) -> Vec<&'static str> {
    columns
        .iter()
        .filter(|c| c.wall_time)
        .map(|c| c.name)
        .collect()
}

/// One `steps.csv` line.
fn format_step(row: &StepMetrics) -> String {
    let mut line = format!("{},{},{:.6}", row.step, row.epoch, row.loss);
    for (column, cell) in row.record.columns.iter().zip(&row.record.cells) {
        line.push(',');
        line.push_str(&cell.format(column.format));
    }
    line
}

/// A `steps.csv` line read back (None for a line of another format or a damaged one). The
/// numbers are those `format_step` wrote, so writing the row again gives the same line.
fn parse_step(line: &str, columns: &'static [Column]) -> Option<StepMetrics> {
    let fields: Vec<&str> = line.split(',').collect();
    if fields.len() != COMMON_COLUMNS.len() + columns.len() {
        return None;
    }
    let cells = columns
        .iter()
        .zip(&fields[COMMON_COLUMNS.len()..])
        .map(|(column, text)| Cell::parse(text, column.format))
        .collect::<Option<Vec<Cell>>>()?;
    Some(StepMetrics {
        step: fields[0].parse().ok()?,
        epoch: fields[1].parse().ok()?,
        loss: fields[2].parse().ok()?,
        record: StepRecord::new(columns, cells),
    })
}

/// The step log of a run, `steps.csv`, rewritten atomically with the epoch metrics.
pub struct StepLog {
    path: std::path::PathBuf,
    columns: &'static [Column],
    rows: Vec<StepMetrics>,
}

/// The rows of the step log at `path` up to `last_step`, and the numbers of its lines that
/// are not rows (nothing where there is no file).
fn read_step_rows(
    path: &Path,
    columns: &'static [Column],
    last_step: usize,
) -> Result<(Vec<StepMetrics>, Vec<usize>)> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // Lossy: an undecodable line is one that is not a row, named like any other.
    let text = String::from_utf8_lossy(&bytes);
    let header = step_columns(columns).join(",");
    let (mut rows, mut unreadable) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        if i == 0 && line == header {
            continue;
        }
        match parse_step(line, columns) {
            Some(row) if row.step <= last_step => rows.push(row),
            Some(_) => {}
            None => unreadable.push(i + 1),
        }
    }
    Ok((rows, unreadable))
}

/// `PATH: line 4 is not a row of this run's step log` (or `lines ... are not rows`).
fn unreadable_rows(path: &Path, lines: &[usize]) -> String {
    format!(
        "{}: {} {} of this run's step log",
        path.display(),
        crate::support::words::list_lines(lines),
        if lines.len() == 1 {
            "is not a row"
        } else {
            "are not rows"
        }
    )
}

impl StepLog {
    /// The log at `path` of an optimizer with `columns`, continuing an existing one up to and
    /// including global step `last_step` (a resumed run drops the rows of its interrupted
    /// part). Lines that are not rows of this log (damaged, or of another version's columns)
    /// are named in a warning, and the file as it was is kept beside the log before it is
    /// rewritten, so nothing is dropped silently.
    pub fn open(path: &Path, columns: &'static [Column], last_step: usize) -> Result<Self> {
        let (rows, unreadable) = read_step_rows(path, columns, last_step)?;
        if !unreadable.is_empty() {
            let kept = crate::support::fsutil::keep_aside(path, "damaged")?;
            log::warn!(
                "{}; kept its {}, and saved the file as it was as {}",
                unreadable_rows(path, &unreadable),
                crate::support::words::count(rows.len(), "readable row"),
                kept.display()
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            columns,
            rows,
        })
    }

    /// The rows of the log at `path`, to read and not rewrite (`hftrain plot`): lines that
    /// are not rows are named in a warning and left as they are.
    pub fn read(path: &Path, columns: &'static [Column]) -> Result<Vec<StepMetrics>> {
        let (rows, unreadable) = read_step_rows(path, columns, usize::MAX)?;
        if !unreadable.is_empty() {
            log::warn!(
                "{}; the plots show its {}",
                unreadable_rows(path, &unreadable),
                crate::support::words::count(rows.len(), "readable row")
            );
        }
        Ok(rows)
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
        let mut out = step_columns(self.columns).join(",");
        out.push('\n');
        for row in &self.rows {
            out.push_str(&format_step(row));
            out.push('\n');
        }
        write_atomic(&self.path, out.as_bytes())
    }
}
