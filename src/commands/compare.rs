//! `hftrain compare RUN...`: several runs in one picture and one table. Test accuracy and
//! train loss against wall time and against data passes (epochs: each is one pass over the
//! training set), and each run's time to a few test accuracies. The picture this project's
//! users show: how fast each optimizer gets where.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use image::RgbImage;

use crate::config::Config;
use crate::report::plots::{Series, line_chart};
use crate::store::metrics::EpochMetrics;
use crate::store::output::{self, Existing};

/// `hftrain compare`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Run directories, e.g. runs/cifar10-small-sgd runs/cifar10-small-hf.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where to write the picture (PNG) [default: compare.png, replaced each time].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the --out file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Test accuracies (percent, comma-separated) the table gives each run's time to.
    #[arg(long, default_value = DEFAULT_LEVELS)]
    pub levels: String,
}

/// `hftrain compare`: the table, then where the picture is.
pub fn execute(args: &CompareArgs) -> Result<ExitCode> {
    let levels = parse_levels(&args.levels)?;
    // The default picture is compare's own; one the user named is replaced only with --force.
    let (out, existing) = match &args.out {
        Some(out) => (out.clone(), Existing::named(args.force)),
        None => (PathBuf::from(DEFAULT_PICTURE), Existing::Replace),
    };
    output::check(&out, "--out", existing)?;
    print!("{}", compare(&args.runs, &out, &levels)?);
    println!("picture: {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// The picture's name where --out names none (in the current directory).
pub const DEFAULT_PICTURE: &str = "compare.png";

/// Test accuracies (percent) the table reports the time to, unless `--levels` names others.
pub const DEFAULT_LEVELS: &str = "50,60,70";

/// `--levels 30,31.5`: test accuracies in percent, each in (0, 100], as fractions.
pub fn parse_levels(text: &str) -> Result<Vec<f64>> {
    let levels = text
        .split(',')
        .map(|part| {
            let part = part.trim().trim_end_matches('%');
            match part.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(p / 100.0),
                _ => bail!(
                    "--levels {text}: `{part}` is not a test accuracy in percent; expected \
                     numbers in (0, 100] separated by commas, e.g. --levels 50,60,70"
                ),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    if levels.iter().all(|&l| l <= 0.01) {
        bail!(
            "--levels {text}: test accuracies are in percent (--levels 50,60 for 50% and 60%), \
             and every level here is at most 1%"
        );
    }
    Ok(levels)
}

/// One run's epochs and what names it.
pub struct Run {
    /// `<run directory name> (<optimizer>)`.
    pub label: String,
    pub rows: Vec<EpochMetrics>,
}

impl Run {
    /// The run at `dir`; Ok(Err(why)) for one without a finished epoch to compare (left
    /// out with a warning), an error for a damaged metrics file (refused, naming the line).
    pub fn load(dir: &Path) -> Result<std::result::Result<Self, String>> {
        let metrics = dir.join("metrics.csv");
        if !metrics.is_file() {
            return Ok(Err(format!(
                "{} is not a run directory with epochs (it has no metrics.csv)",
                dir.display()
            )));
        }
        let rows = crate::store::metrics::read(&metrics)?;
        if rows.is_empty() {
            return Ok(Err(format!("{} has no finished epoch yet", dir.display())));
        }
        let optimizer = Config::load(&dir.join("config.toml"))
            .map(|c| c.optimizer.name().to_string())
            .unwrap_or_else(|_| "optimizer unknown".into());
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Ok(Self {
            label: format!("{name} ({optimizer})"),
            rows,
        }))
    }

    /// `(wall seconds at the end of each epoch, its row)`: training and evaluation time
    /// summed over the epochs.
    pub fn timeline(&self) -> Vec<(f64, &EpochMetrics)> {
        let mut seconds = 0.0;
        self.rows
            .iter()
            .map(|r| {
                seconds += r.epoch_seconds;
                (seconds, r)
            })
            .collect()
    }

    /// Seconds and epochs until the test accuracy first reached `level`, if it did (the
    /// better of the live and the averaged parameters', where the run averages them).
    pub fn time_to(&self, level: f64) -> Option<(f64, usize)> {
        self.timeline()
            .into_iter()
            .find(|(_, r)| r.best_test_accuracy() >= level)
            .map(|(s, r)| (s, r.epoch))
    }
}

/// The comparison table, as Markdown: each run's time to each of `levels`.
pub fn table(runs: &[Run], levels: &[f64]) -> String {
    let mut out = String::from("| run | best test acc | epochs | wall |");
    for level in levels {
        // Percent to a tenth: 0.58 * 100 is 57.99999999999999 in f64.
        let _ = write!(out, " to {}% |", (1000.0 * level).round() / 10.0);
    }
    out += "\n|---|---|---|---|";
    out += &"---|".repeat(levels.len());
    for run in runs {
        let best = run
            .rows
            .iter()
            .map(EpochMetrics::best_test_accuracy)
            .fold(0.0, f64::max);
        let (seconds, last) = run.timeline().last().map(|(s, r)| (*s, r.epoch)).unwrap();
        let _ = write!(
            out,
            "\n| {} | {:.2}% | {last} | {} |",
            run.label,
            100.0 * best,
            wall(seconds)
        );
        for &level in levels {
            match run.time_to(level) {
                Some((s, epoch)) => {
                    let _ = write!(out, " {} (epoch {epoch}) |", wall(s));
                }
                None => out += " not reached |",
            }
        }
    }
    out.push('\n');
    let averaged = |run: &Run| run.rows.iter().any(|r| r.averaged_test_accuracy.is_some());
    if runs.iter().any(averaged) {
        out += "\nA run that averages its parameters (train.average) is judged at each epoch by \
                the better test accuracy of its live and its averaged parameters.\n";
    }
    out
}

/// A table's time: minutes to a tenth, seconds to a tenth under a minute (a small problem's
/// whole run can take seconds).
fn wall(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        format!("{:.1} min", seconds / 60.0)
    }
}

/// Four charts in one picture: test accuracy and train loss, against minutes and against
/// data passes, one colour per run.
pub fn picture(runs: &[Run]) -> Result<RgbImage> {
    let series = |by_time: bool, f: fn(&EpochMetrics) -> f64| -> Vec<Series> {
        runs.iter()
            .map(|run| {
                let mut points = vec![];
                for (seconds, r) in run.timeline() {
                    let x = if by_time {
                        seconds / 60.0
                    } else {
                        r.epoch as f64
                    };
                    points.push((x, f(r)));
                }
                Series {
                    name: run.label.clone(),
                    points,
                }
            })
            .collect()
    };
    let accuracy = |r: &EpochMetrics| 100.0 * r.best_test_accuracy();
    let loss = |r: &EpochMetrics| r.train_loss;
    let charts = [
        line_chart("test accuracy (%)", "minutes", &series(true, accuracy))?,
        line_chart("test accuracy (%)", "data passes", &series(false, accuracy))?,
        line_chart("train loss", "minutes", &series(true, loss))?,
        line_chart("train loss", "data passes", &series(false, loss))?,
    ];
    let (w, h) = charts[0].dimensions();
    let mut out = RgbImage::from_pixel(2 * w, 2 * h, image::Rgb([255, 255, 255]));
    for (i, chart) in charts.iter().enumerate() {
        let (x, y) = ((i as u32 % 2) * w, (i as u32 / 2) * h);
        image::imageops::replace(&mut out, chart, x as i64, y as i64);
    }
    Ok(out)
}

/// Loads the runs, writes the picture to `out` and returns the table of the times to
/// `levels`. A run without a finished epoch is left out with a warning (a budget can end
/// before one).
pub fn compare(dirs: &[PathBuf], out: &Path, levels: &[f64]) -> Result<String> {
    let mut runs = Vec::new();
    for dir in dirs {
        match Run::load(dir)? {
            Ok(run) => runs.push(run),
            Err(why) => log::warn!("left out: {why}"),
        }
    }
    if runs.is_empty() {
        bail!("none of the runs has a finished epoch to compare");
    }
    crate::report::plots::save(&picture(&runs)?, out)?;
    Ok(table(&runs, levels))
}
