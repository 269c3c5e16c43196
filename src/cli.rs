//! The command line: clap's entry point and the dispatch to `commands/`, one module per
//! command (train, eval, predict, export, data, compare, plot, curvature, spectrum, bench).

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::commands::{
    bench, compare, curvature, data, eval, export, plot, predict, spectrum, train,
};

#[derive(Debug, Parser)]
#[command(
    name = "hftrain",
    version,
    about = "Train CIFAR-10 classifiers on the GPU with Burn, \
    with Hessian-free (truncated Newton) optimisation or SGD/Adam",
    after_help = "On a GPU, which kernel is fastest for each shape is measured once and kept \
    across runs and resumes in ~/.cache/hftrain/kernels ($XDG_CACHE_HOME/hftrain/kernels where \
    set); HFTRAIN_KERNEL_CACHE=DIR keeps it elsewhere, HFTRAIN_KERNEL_CACHE=off keeps nothing. \
    On Linux, freed memory is kept for the next step's tensors (HFTRAIN_MALLOC=system leaves \
    malloc as it was)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Also print debug lines (every Hessian-free step) and the libraries' warnings.
    #[arg(long, short, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print only warnings, errors and results; no progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a network; writes runs/<name>/{config.toml, metrics.csv, report.md, checkpoints/}
    /// (and steps.csv with Hessian-free).
    Train(train::TrainArgs),
    /// Evaluate a checkpoint on the test split: accuracy (also with horizontal-flip test-time
    /// augmentation), per-class accuracy, confusion matrix, most confident mistakes.
    Eval(eval::EvalArgs),
    /// Classify your own pictures: each is turned upright by its EXIF orientation, cropped to
    /// its centred square and resized to 32x32 with a Lanczos-3 filter, then normalised as in
    /// training. Prints the top classes
    /// with probabilities, one line per picture; a picture that cannot be read is reported and
    /// the others are still classified (exit status 1 then).
    Predict(predict::PredictArgs),
    /// Export a checkpoint's network for PyTorch: a safetensors file of its state_dict
    /// (PyTorch's names and layouts, batch-norm statistics included) with the network, the
    /// input normalisation and the class names in its metadata; scripts/load_export.py
    /// rebuilds it.
    Export(export::ExportArgs),
    /// Data set commands (`hftrain data download`).
    Data {
        #[command(subcommand)]
        command: data::DataCommand,
    },
    /// Compare runs: test accuracy and train loss against wall time and data passes in one
    /// picture, and a table of each run's time to 50%, 60% and 70% test accuracy (or the
    /// levels asked).
    Compare(compare::CompareArgs),
    /// Draw a run's plots again from its metrics.csv (and steps.csv) into <run>/plots/.
    Plot(plot::PlotArgs),
    /// Write a checkpoint's loss, gradient, Hessian-vector and Gauss-Newton-vector products
    /// on the first test images and a seeded direction v to a safetensors file (PyTorch
    /// names and layouts), and print how long each product takes.
    Curvature(curvature::CurvatureArgs),
    /// The curvature of a checkpoint's loss over fixed training batches: the top eigenvalues
    /// of the Hessian or the Gauss-Newton matrix (Lanczos, with residuals), the trace
    /// (Hutchinson), the spectral density (stochastic Lanczos quadrature), per layer on
    /// request; a table, JSON and a density plot.
    Spectrum(spectrum::SpectrumArgs),
    /// Time what training is made of on the config's network and a device: forward pass,
    /// evaluation, both gradients, an SGD step, the Gauss-Newton- and Hessian-vector
    /// products, a CG iteration and a Hessian-free step, each the median of timed calls after
    /// a warm-up call (compilation and autotuning are in the warm-up, reported apart), with
    /// peak memory. `scripts/torch_reference.py --bench` times the same in PyTorch.
    Bench(bench::BenchArgs),
}

/// The environment variables the options read. An empty one (`HFTRAIN_DATA=`, as a shell
/// script writes when its own variable is unset) means "not set", not an empty value.
pub const ENVIRONMENT: [&str; 4] = [
    "HFTRAIN_DATA",
    "HFTRAIN_DATA_URL",
    "HFTRAIN_DATA_MD5",
    crate::data::download::STALL_VARIABLE,
];

/// Runs a command; the exit code is 130 for a training run stopped by Ctrl-C (as shells
/// report an interrupted program).
pub fn run(cli: Cli) -> Result<ExitCode> {
    use crate::support::logging::{self, Verbosity};
    logging::init(match (cli.quiet, cli.verbose) {
        (true, _) => Verbosity::Quiet,
        (_, true) => Verbosity::Verbose,
        _ => Verbosity::Normal,
    });
    match &cli.command {
        Command::Train(args) => train::execute(args),
        Command::Eval(args) => eval::execute(args),
        Command::Predict(args) => predict::execute(args),
        Command::Export(args) => export::execute(args),
        Command::Data { command } => data::execute(command),
        Command::Compare(args) => compare::execute(args),
        Command::Plot(args) => plot::execute(args),
        Command::Curvature(args) => curvature::execute(args),
        Command::Spectrum(args) => spectrum::execute(args),
        Command::Bench(args) => bench::execute(args),
    }
}
