//! `hftrain spectrum`: the top eigenvalues, trace and spectral density of a checkpoint's
//! Hessian or Gauss-Newton matrix over a fixed set of training batches, for the whole model
//! and (`--per-layer`) for each layer's diagonal block, as a table, JSON and a plot.

use std::cell::Cell;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::curvature::{CurvatureKind, NetworkObjective};
use crate::data::Split;
use crate::data::batcher::Transform;
use crate::optim::cg::LinearOperator;
use crate::spectrum::hutchinson::mean_and_standard_error;
use crate::spectrum::{
    Average, Block, Counted, Density, LanczosStop, Restricted, STREAM_DENSITY, STREAM_LANCZOS,
    STREAM_TRACE, SlqSettings, TopEigen, TopSettings, TraceEstimate, batch_operators,
    fixed_batches, hutchinson, layer_blocks, rademacher, slq, top_eigenpairs,
};
use crate::store::output::{self, Existing};
use crate::support::fsutil::write_atomic;

/// The matrix's name in the table and messages.
fn matrix_name(kind: CurvatureKind) -> &'static str {
    match kind {
        CurvatureKind::Hessian => "Hessian",
        CurvatureKind::GaussNewton => "Gauss-Newton matrix",
    }
}

/// The options of `hftrain spectrum`.
#[derive(Debug, Clone, clap::Args)]
pub struct SpectrumArgs {
    /// Checkpoint directory, e.g. runs/cifar10/checkpoints/latest.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Data directory [default: the checkpoint config's `data.dir`].
    #[arg(long, env = "HFTRAIN_DATA")]
    pub data: Option<PathBuf>,
    /// Device: auto, wgpu, wgpu-cpu, flex, vulkan or vulkan-cpu [default: the checkpoint config's].
    #[arg(long)]
    pub device: Option<crate::device::DeviceChoice>,
    /// Training batches the curvature is averaged over (drawn without augmentation from the
    /// training split in a shuffled order fixed by --seed).
    #[arg(long, default_value_t = 4)]
    pub batches: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// The matrix.
    #[arg(long, value_enum, default_value_t = CurvatureKind::Hessian)]
    pub matrix: CurvatureKind,
    /// How many of the largest eigenvalues to find.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub top: usize,
    /// Lanczos steps at most for the top eigenvalues (at least --top).
    #[arg(long, default_value_t = 100)]
    pub max_steps: usize,
    /// Stop Lanczos once each top eigenvalue's residual ||Cv - lambda v|| is at most this
    /// fraction of the largest |lambda|.
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance: f64,
    /// Rademacher vectors for Hutchinson's trace estimate (0: no trace).
    #[arg(long, value_name = "S", default_value_t = 20)]
    pub trace_samples: usize,
    /// Runs of stochastic Lanczos quadrature for the spectral density (0: no density).
    #[arg(long, value_name = "R", default_value_t = 0)]
    pub density_runs: usize,
    /// Lanczos steps of each density run.
    #[arg(long, value_name = "M", default_value_t = 80)]
    pub lanczos_steps: usize,
    /// Standard deviation of the density's Gaussian broadening, as a fraction of the width
    /// of the spectrum found.
    #[arg(long, default_value_t = 0.01)]
    pub broadening: f64,
    /// Seed of the batches and of every random vector.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also the top eigenvalues and trace of each layer's diagonal block (its parameters
    /// alone), as a table.
    #[arg(long)]
    pub per_layer: bool,
    /// Write the results as JSON to this file [default: not written].
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the density (log scale) into this PNG file; needs --density-runs [default: not
    /// drawn].
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Replace the --json and --plot files if they exist.
    #[arg(long)]
    pub force: bool,
}

/// One eigenvalue as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EigenvalueReport {
    pub value: f64,
    /// ||C v - lambda v|| for the unit eigenvector v.
    pub residual: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopReport {
    /// Largest first.
    pub eigenvalues: Vec<EigenvalueReport>,
    pub lanczos_steps: usize,
    pub stop: LanczosStop,
}

impl TopReport {
    fn new(top: &TopEigen) -> Self {
        Self {
            eigenvalues: top
                .pairs
                .iter()
                .map(|p| EigenvalueReport {
                    value: p.value,
                    residual: p.residual,
                })
                .collect(),
            lanczos_steps: top.steps,
            stop: top.stop,
        }
    }
}

/// The top eigenvalue of each batch's curvature alone, beside the one of their average.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchSpread {
    pub values: Vec<f64>,
    pub mean: f64,
    /// Sample standard deviation (n - 1).
    pub std: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockReport {
    pub name: String,
    pub parameters: usize,
    pub top: TopReport,
    pub trace: Option<TraceEstimate>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpectrumReport {
    pub format: &'static str,
    pub checkpoint: String,
    pub matrix: CurvatureKind,
    /// What the matrix is the curvature of, in words.
    pub definition: String,
    pub batch_norm: &'static str,
    pub label_smoothing: f32,
    pub parameters: usize,
    pub batches: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub tolerance: f64,
    pub top: TopReport,
    /// With two batches or more.
    pub per_batch_top: Option<BatchSpread>,
    pub trace: Option<TraceEstimate>,
    pub density: Option<Density>,
    pub per_layer: Vec<BlockReport>,
    /// Per-batch products made (each one Hv or Gv on one batch).
    pub products: usize,
    /// Wall time from the batches on the device to the last product (loading the checkpoint
    /// and the data set not included).
    pub seconds: f64,
}

const BATCH_NORM: &str = "training mode: each batch normalised with its own statistics (as in \
                          training and in the optimizer's products); running statistics unused";

/// Refuses option values that cannot work, naming the option.
fn check_options(args: &SpectrumArgs) -> Result<()> {
    if args.batches == 0 {
        bail!("--batches 0: expected at least 1 (training batches to average the curvature over)");
    }
    if args.batch_size == 0 {
        bail!("--batch-size 0: expected at least 1 image per batch");
    }
    if args.top == 0 {
        bail!("--top 0: expected at least 1 (how many of the largest eigenvalues to find)");
    }
    if !(args.tolerance.is_finite() && args.tolerance > 0.0) {
        bail!("--tolerance {}: expected a positive number", args.tolerance);
    }
    if args.density_runs > 0 && args.lanczos_steps < 2 {
        bail!(
            "--lanczos-steps {}: expected at least 2 for the density",
            args.lanczos_steps
        );
    }
    // A fraction of the spectrum's width: wider than the whole spectrum shows nothing.
    if !(args.broadening > 0.0 && args.broadening <= 1.0) {
        bail!(
            "--broadening {}: expected a fraction of the spectrum's width in (0, 1], e.g. 0.01",
            args.broadening
        );
    }
    if args.max_steps == 0 {
        bail!("--max-steps 0: expected at least 1 Lanczos step (at least --top is used)");
    }
    if args.plot.is_some() && args.density_runs == 0 {
        bail!("--plot draws the spectral density: give --density-runs R (at least 1) too");
    }
    Ok(())
}

/// Products done against the plan, on a progress bar (hidden off a terminal or with -q).
struct Progress {
    bar: ProgressBar,
    done: Cell<usize>,
}

impl Progress {
    fn new(planned: usize) -> Self {
        let bar = if crate::support::logging::progress_bars() {
            let bar = ProgressBar::new(planned as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "products [{bar:30.cyan/blue}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar
        } else {
            // Hidden, but keeping the count (for the lines off a terminal).
            ProgressBar::with_draw_target(Some(planned as u64), ProgressDrawTarget::hidden())
        };
        Self {
            bar,
            done: Cell::new(0),
        }
    }

    fn tick(&self, n: usize) {
        self.done.set(self.done.get() + n);
        self.bar.inc(n as u64);
    }

    /// A phase planned `planned` products and made `made`: the total to go shrinks.
    fn settle(&self, planned: usize, made: usize) {
        if let Some(len) = self.bar.length() {
            self.bar
                .set_length(len.saturating_sub(planned.saturating_sub(made) as u64));
        }
    }

    /// Starts a phase: on the bar, or off a terminal as a line (as training does).
    fn phase(&self, what: impl Into<String>) {
        let what = what.into();
        if self.bar.is_hidden() {
            log::info!(
                "spectrum: {what} (products so far {}, at most {} in all)",
                self.done.get(),
                self.bar.length().unwrap_or(0)
            );
        }
        self.bar.set_message(what);
    }
}

/// The top eigenvalue of each batch's matrix alone, and their spread.
fn spread_over_batches(
    parts: &[Box<dyn LinearOperator + '_>],
    n: usize,
    settings: &TopSettings,
    start: &dyn Fn(u64, u64) -> Tensor<1>,
    progress: &Progress,
    planned_per_batch: usize,
) -> BatchSpread {
    let tick = |k: usize| progress.tick(k);
    let values: Vec<f64> = parts
        .iter()
        .enumerate()
        .map(|(b, part)| {
            let counted = Counted {
                inner: part.as_ref(),
                cost: 1,
                tick: &tick,
            };
            let one = top_eigenpairs(
                &counted,
                &start(0, b as u64 + 1),
                n,
                &TopSettings {
                    count: 1,
                    explicit_residuals: false,
                    ..settings.clone()
                },
            );
            progress.settle(planned_per_batch, one.products);
            one.pairs.first().map_or(f64::NAN, |p| p.value)
        })
        .collect();
    let (mean, standard_error) = mean_and_standard_error(&values);
    BatchSpread {
        mean,
        std: standard_error * (values.len() as f64).sqrt(),
        values,
    }
}

/// A parameter block's report, and the Lanczos products it took.
struct MeasuredBlock {
    block: BlockReport,
    top_products: usize,
}

/// The top eigenvalues and trace of one parameter block's diagonal block of the matrix (the
/// operator restricted to the block by a mask); `label` separates its random vectors.
fn block_report(
    block: &Block,
    label: u64,
    operator: &dyn LinearOperator,
    settings: &TopSettings,
    args: &SpectrumArgs,
    start: &dyn Fn(u64, u64) -> Tensor<1>,
) -> MeasuredBlock {
    let probe = start(label, 0);
    let (n, device) = (probe.dims()[0], probe.device());
    let mask = block.mask(n, &device);
    let restricted = Restricted {
        inner: operator,
        mask: mask.clone(),
    };
    let top = top_eigenpairs(&restricted, &(probe * mask.clone()), block.len(), settings);
    let trace = (args.trace_samples > 0).then(|| {
        hutchinson(&restricted, args.trace_samples, |i| {
            rademacher(n, args.seed, &[STREAM_TRACE, label, i as u64], &device) * mask.clone()
        })
    });
    MeasuredBlock {
        block: BlockReport {
            name: block.name.clone(),
            parameters: block.len(),
            top: TopReport::new(&top),
            trace,
        },
        top_products: top.products,
    }
}

/// `--json` and `--plot`.
fn write_outputs(args: &SpectrumArgs, report: &SpectrumReport) -> Result<()> {
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(report).context("cannot encode the results")?;
        write_atomic(path, text.as_bytes())?;
    }
    if let (Some(path), Some(density)) = (&args.plot, &report.density) {
        crate::report::plots::save(&density_chart(report, density)?, path)?;
    }
    Ok(())
}

/// Runs `hftrain spectrum` and writes what was asked for; returns the report.
pub fn run(args: &SpectrumArgs) -> Result<SpectrumReport> {
    check_options(args)?;
    // Before the work, which can take minutes.
    for (path, option) in [(&args.json, "--json"), (&args.plot, "--plot")] {
        if let Some(path) = path {
            output::check(path, option, Existing::named(args.force))?;
        }
    }
    let opened = crate::session::open_checkpoint(
        &args.checkpoint,
        args.data.clone(),
        args.device,
        Split::Train,
        0,
    )?;
    let (config, network, device) = (&opened.config, &opened.network, &opened.device);
    let n = network.params.total();
    if args.top > n {
        bail!("--top {}: the network has only {n} parameters", args.top);
    }
    let images = args.batches.saturating_mul(args.batch_size);
    if images > opened.data.len() {
        bail!(
            "--batches {} x --batch-size {} = {images} images, but the training split has {}",
            args.batches,
            args.batch_size,
            opened.data.len()
        );
    }
    let batches = fixed_batches(
        &opened.data,
        &Transform::eval(&config.data),
        args.batches,
        args.batch_size,
        args.seed,
        device,
    )?;
    // The data loss alone, as PyHessian: weight decay would only add its constant to the
    // decayed weights' eigenvalues.
    let clock = std::time::Instant::now();
    let objective = NetworkObjective::new(network, config.train.label_smoothing, 0.0, device);
    let parts = batch_operators(&objective, args.matrix, &opened.params, &batches);
    let nb = batches.len();

    let blocks = if args.per_layer {
        layer_blocks(&network.params)
    } else {
        Vec::new()
    };
    let plan = Plan {
        args,
        parameters: n,
        batches: nb,
    };
    let progress = Progress::new(plan.total(&blocks));
    let average = Average { parts };
    let estimates = estimate(args, &average, &blocks, &plan, &progress, device);
    progress.bar.finish_and_clear();

    let report = SpectrumReport {
        format: "hftrain spectrum v1",
        checkpoint: args.checkpoint.display().to_string(),
        matrix: args.matrix,
        definition: format!(
            "the {} of the mean softmax cross-entropy (label smoothing {}), without weight \
             decay, with respect to the parameters, averaged over {} fixed training batches \
             of {} images (no augmentation)",
            matrix_name(args.matrix),
            config.train.label_smoothing,
            nb,
            args.batch_size
        ),
        batch_norm: BATCH_NORM,
        label_smoothing: config.train.label_smoothing,
        parameters: n,
        batches: nb,
        batch_size: args.batch_size,
        seed: args.seed,
        tolerance: args.tolerance,
        top: estimates.top,
        per_batch_top: estimates.per_batch_top,
        trace: estimates.trace,
        density: estimates.density,
        per_layer: estimates.per_layer,
        products: progress.done.get(),
        seconds: clock.elapsed().as_secs_f64(),
    };
    write_outputs(args, &report)?;
    Ok(report)
}

/// The products each phase plans (each one product on one batch), for the progress bar.
struct Plan<'a> {
    args: &'a SpectrumArgs,
    parameters: usize,
    batches: usize,
}

impl Plan<'_> {
    /// Lanczos takes at least one step per eigenvalue asked for (`top_eigenpairs`).
    fn steps_for(&self, dim: usize) -> usize {
        self.args.max_steps.max(self.args.top).min(dim)
    }

    /// The top eigenvalues of a `dim`-dimensional block.
    fn top(&self, dim: usize) -> usize {
        self.batches * (self.steps_for(dim) + self.args.top.min(dim))
    }

    fn spread(&self) -> usize {
        if self.batches > 1 {
            self.batches * self.steps_for(self.parameters)
        } else {
            0
        }
    }

    fn trace(&self) -> usize {
        self.batches * self.args.trace_samples
    }

    fn density(&self) -> usize {
        self.batches * self.args.density_runs * self.args.lanczos_steps.min(self.parameters)
    }

    fn total(&self, blocks: &[Block]) -> usize {
        let layers: usize = blocks
            .iter()
            .map(|b| self.top(b.len()) + self.trace())
            .sum();
        self.top(self.parameters) + self.spread() + self.trace() + self.density() + layers
    }
}

/// What `hftrain spectrum` measures of the matrix.
struct Estimates {
    top: TopReport,
    per_batch_top: Option<BatchSpread>,
    trace: Option<TraceEstimate>,
    density: Option<Density>,
    per_layer: Vec<BlockReport>,
}

/// The phases in order (top eigenvalues, each batch's top eigenvalue, trace, density, each
/// layer's block), every product counted on `progress`.
fn estimate(
    args: &SpectrumArgs,
    average: &Average,
    blocks: &[Block],
    plan: &Plan,
    progress: &Progress,
    device: &Device,
) -> Estimates {
    let (n, nb) = (plan.parameters, plan.batches);
    let tick = |k: usize| progress.tick(k);
    let counted = Counted {
        inner: average,
        cost: nb,
        tick: &tick,
    };
    let settings = TopSettings {
        count: args.top,
        max_steps: args.max_steps,
        tolerance: args.tolerance,
        explicit_residuals: true,
    };
    let start =
        |block: u64, batch: u64| rademacher(n, args.seed, &[STREAM_LANCZOS, block, batch], device);

    progress.phase("top eigenvalues");
    let top = top_eigenpairs(&counted, &start(0, 0), n, &settings);
    progress.settle(plan.top(n), top.products * nb);

    let per_batch_top = (nb > 1).then(|| {
        progress.phase("top eigenvalue per batch");
        spread_over_batches(
            &average.parts,
            n,
            &settings,
            &start,
            progress,
            plan.steps_for(n),
        )
    });

    let trace = (args.trace_samples > 0).then(|| {
        progress.phase("trace");
        hutchinson(&counted, args.trace_samples, |i| {
            rademacher(n, args.seed, &[STREAM_TRACE, 0, i as u64], device)
        })
    });

    let density = (args.density_runs > 0).then(|| {
        progress.phase("density");
        let density = slq(
            &counted,
            n,
            &SlqSettings {
                runs: args.density_runs,
                steps: args.lanczos_steps,
                broadening: args.broadening,
                ..SlqSettings::default()
            },
            |run| rademacher(n, args.seed, &[STREAM_DENSITY, run as u64], device),
        );
        progress.settle(plan.density(), density.products * nb);
        density
    });

    let per_layer = blocks
        .iter()
        .enumerate()
        .map(|(index, block)| {
            progress.phase(format!("layer {}", block.name));
            let report = block_report(block, index as u64 + 1, &counted, &settings, args, &start);
            progress.settle(plan.top(block.len()), report.top_products * nb);
            report.block
        })
        .collect();
    Estimates {
        top: TopReport::new(&top),
        per_batch_top,
        trace,
        density,
        per_layer,
    }
}

/// The density as `line_chart` draws it, with log10 of the density on the y axis (floored
/// at 1e-10 of its peak, as a log scale needs).
fn density_chart(report: &SpectrumReport, density: &Density) -> Result<image::RgbImage> {
    let peak = density.density.iter().copied().fold(0.0, f64::max);
    let floor = peak * 1e-10;
    let points = density
        .grid
        .iter()
        .zip(&density.density)
        .map(|(&t, &d)| (t, d.max(floor).max(f64::MIN_POSITIVE).log10()))
        .collect();
    let runs = density.runs.len();
    let steps = density.runs.first().map_or(0, |r| r.steps);
    crate::report::plots::line_chart(
        &format!(
            "log10 spectral density, {} (SLQ {runs} x {steps} steps)",
            matrix_name(report.matrix)
        ),
        "eigenvalue",
        &[crate::report::plots::Series {
            name: "log10 density".into(),
            points,
        }],
    )
}

fn number(v: f64) -> String {
    format!("{v:>12.5e}")
}

/// The density's line of the table: its runs and the range of their Ritz values.
fn density_line(density: &Density) -> String {
    let (lo, hi) = density
        .runs
        .iter()
        .flat_map(|r| r.nodes.iter().copied())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
            (lo.min(t), hi.max(t))
        });
    format!(
        "density (SLQ, {} runs x {} steps): Ritz values from {} to {}, Gaussian \
         broadening sigma {}",
        density.runs.len(),
        density.runs.first().map_or(0, |r| r.steps),
        number(lo).trim(),
        number(hi).trim(),
        number(density.sigma).trim()
    )
}

impl SpectrumReport {
    /// The summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "{} of checkpoint {} ({} parameters)",
            matrix_name(self.matrix),
            self.checkpoint,
            self.parameters
        ));
        line(format!("  {}", self.definition));
        line(format!("  batch norm: {}", self.batch_norm));
        line(format!(
            "top eigenvalues (Lanczos, {} steps, stop: {}; tolerance {:.0e} x max |lambda|):",
            self.top.lanczos_steps,
            self.top.stop.label(),
            self.tolerance
        ));
        line("     #    eigenvalue  ||Cv - lambda v||".into());
        for (i, e) in self.top.eigenvalues.iter().enumerate() {
            line(format!(
                "  {:>4}  {}  {:>12.2e}",
                i + 1,
                number(e.value),
                e.residual
            ));
        }
        if let Some(spread) = &self.per_batch_top {
            line(format!(
                "top eigenvalue of each batch alone: mean {}, std {} over {} batches \
                 (on their average: {})",
                number(spread.mean).trim(),
                number(spread.std).trim(),
                spread.values.len(),
                self.top
                    .eigenvalues
                    .first()
                    .map_or("-".into(), |e| number(e.value).trim().to_string())
            ));
        }
        if let Some(trace) = &self.trace {
            line(format!(
                "trace (Hutchinson, {} Rademacher vectors): {} +- {} (standard error)",
                trace.samples.len(),
                number(trace.estimate).trim(),
                number(trace.standard_error).trim()
            ));
        }
        if let Some(density) = &self.density {
            line(density_line(density));
        }
        if !self.per_layer.is_empty() {
            line("per layer (each block's diagonal block of the matrix):".into());
            line(format!(
                "  {:<32} {:>10}  {:>12}  {:>9}  {:>12}  {:>10}",
                "block", "parameters", "top eig.", "residual", "trace", "+-"
            ));
            for b in &self.per_layer {
                let top = b.top.eigenvalues.first();
                // What was not estimated is a dash, not NaN.
                let dash = |width: usize| format!("{:>width$}", "-");
                line(format!(
                    "  {:<32} {:>10}  {}  {}  {}  {}",
                    b.name,
                    b.parameters,
                    top.map_or(dash(12), |e| number(e.value)),
                    top.map_or(dash(9), |e| format!("{:>9.2e}", e.residual)),
                    b.trace.as_ref().map_or(dash(12), |t| number(t.estimate)),
                    b.trace
                        .as_ref()
                        .map_or(dash(10), |t| format!("{:>10.2e}", t.standard_error)),
                ));
            }
        }
        line(format!(
            "products: {} (each one {} product on one batch) in {:.1} s, {:.0} ms each",
            self.products,
            match self.matrix {
                CurvatureKind::Hessian => "Hessian-vector",
                CurvatureKind::GaussNewton => "Gauss-Newton-vector",
            },
            self.seconds,
            1000.0 * self.seconds / self.products.max(1) as f64
        ));
        out
    }
}

/// `hftrain spectrum`: the table, then where the JSON and the plot are.
pub fn execute(args: &SpectrumArgs) -> Result<ExitCode> {
    let report = run(args)?;
    print!("{}", report.table());
    for (what, path) in [("results", &args.json), ("density plot", &args.plot)] {
        if let Some(path) = path {
            println!("{what}: {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
