//! The command line: `hftrain train`, `hftrain eval` and `hftrain curvature`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::data::Split;
use crate::data::batcher::Transform;
use crate::device::DeviceChoice;
use crate::eval::{EvalOptions, evaluate_with};
use crate::fsutil::write_atomic;
use crate::train::{self, TrainRequest};

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
    Train {
        /// The run's TOML config (see configs/) [default: with --resume, the checkpoint's own
        /// config; a new run needs one].
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Continue a run: `latest` (the run's newest checkpoint) or a checkpoint directory
        /// [default: start a new run].
        #[arg(long)]
        resume: Option<String>,
        /// Data directory (CIFAR-10 binary batches or an image folder; fetched when empty)
        /// [default: the config's `data.dir`, `data/cifar10` unless set].
        #[arg(long, env = "HFTRAIN_DATA")]
        data: Option<PathBuf>,
        /// Run directory [default: runs/<config name>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Device: auto, wgpu, wgpu-cpu, flex, vulkan or vulkan-cpu [default: the config's `device`, itself
        /// `auto` (a GPU through wgpu, else the CPU) unless set].
        #[arg(long)]
        device: Option<DeviceChoice>,
        /// Start afresh in a run directory that already holds a run, deleting its
        /// checkpoints and metrics.
        #[arg(long)]
        force: bool,
        /// Stop after this many epochs are complete (checkpointed; continue with --resume)
        /// [default: the config's `train.epochs`].
        #[arg(long, value_parser = at_least_one)]
        stop_after_epoch: Option<usize>,
    },
    /// Evaluate a checkpoint on the test split: accuracy (also with horizontal-flip test-time
    /// augmentation), per-class accuracy, confusion matrix, most confident mistakes.
    Eval {
        /// Checkpoint directory, e.g. runs/cifar10/checkpoints/latest.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Data directory [default: the checkpoint config's `data.dir`].
        #[arg(long, env = "HFTRAIN_DATA")]
        data: Option<PathBuf>,
        /// Device: auto, wgpu, wgpu-cpu, flex, vulkan or vulkan-cpu [default: the checkpoint config's].
        #[arg(long)]
        device: Option<DeviceChoice>,
        /// Evaluate on at most this many test images, balanced over classes [default: all].
        #[arg(long, default_value_t = 0, hide_default_value = true)]
        limit: usize,
        /// Where to write the results as JSON [default: <run>/eval/<checkpoint>.json].
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the N most confident mistakes as a grid image with true and predicted
        /// classes, beside the JSON (<name>-mistakes.png); they are also listed.
        #[arg(long, value_name = "N", default_value_t = 0)]
        show_mistakes: usize,
    },
    /// Classify your own pictures: each is cropped to its centred square and resized to
    /// 32x32 with a Lanczos-3 filter, then normalised as in training. Prints the top classes
    /// with probabilities, one line per picture; a picture that cannot be read is reported and
    /// the others are still classified (exit status 1 then).
    Predict {
        /// Checkpoint directory, e.g. runs/cifar10/checkpoints/latest.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Pictures (PNG, JPEG, GIF, BMP, WebP, PNM; any size) or folders of them.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
        /// How many of the most likely classes to show.
        #[arg(long, default_value_t = 3)]
        top: usize,
        /// Also write the predictions as JSON to this file [default: none, only printed].
        #[arg(long)]
        json: Option<PathBuf>,
        /// Device: auto, wgpu, wgpu-cpu, flex, vulkan or vulkan-cpu [default: the checkpoint config's].
        #[arg(long)]
        device: Option<DeviceChoice>,
    },
    /// Export a checkpoint's network for PyTorch: a safetensors file of its state_dict
    /// (PyTorch's names and layouts, batch-norm statistics included) with the network, the
    /// input normalisation and the class names in its metadata; scripts/load_export.py
    /// rebuilds it.
    Export {
        /// Checkpoint directory, e.g. runs/cifar10/checkpoints/latest.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The file to write, e.g. model.safetensors.
        #[arg(long)]
        out: PathBuf,
        /// Replace --out if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Data set commands (`hftrain data download`).
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Compare runs: test accuracy and train loss against wall time and data passes in one
    /// picture, and a table of each run's time to 50%, 60% and 70% test accuracy (or the
    /// levels asked).
    Compare {
        /// Run directories, e.g. runs/cifar10-small-sgd runs/cifar10-small-hf.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where to write the picture (PNG).
        #[arg(long, default_value = "compare.png")]
        out: PathBuf,
        /// Test accuracies (percent, comma-separated) the table gives each run's time to.
        #[arg(long, default_value = crate::compare::DEFAULT_LEVELS)]
        levels: String,
    },
    /// Draw a run's plots again from its metrics.csv (and steps.csv) into <run>/plots/.
    Plot {
        /// The run directory, e.g. runs/cifar10.
        run: PathBuf,
    },
    /// Write a checkpoint's loss, gradient, Hessian-vector and Gauss-Newton-vector products
    /// on the first test images and a seeded direction v to a safetensors file (PyTorch
    /// names and layouts), and print how long each product takes.
    Curvature {
        /// Checkpoint directory, e.g. runs/cifar10/checkpoints/latest.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Number of test images (the first ones of the test split).
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Seed of the direction v (entries uniform in [-1, 1)).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output file [default: curvature-<checkpoint>-n<batch>-seed<seed>.safetensors].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Data directory [default: the checkpoint config's `data.dir`].
        #[arg(long, env = "HFTRAIN_DATA")]
        data: Option<PathBuf>,
        /// Device: auto, wgpu, wgpu-cpu, flex, vulkan or vulkan-cpu [default: the checkpoint config's].
        #[arg(long)]
        device: Option<DeviceChoice>,
        /// Timed runs of each product after one warm-up; the median is printed.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Compute only one product (to measure its peak memory alone).
        #[arg(long, value_enum, default_value_t = crate::inspect::Products::All)]
        only: crate::inspect::Products,
    },
    /// The curvature of a checkpoint's loss over fixed training batches: the top eigenvalues
    /// of the Hessian or the Gauss-Newton matrix (Lanczos, with residuals), the trace
    /// (Hutchinson), the spectral density (stochastic Lanczos quadrature), per layer on
    /// request; a table, JSON and a density plot.
    Spectrum(crate::spectrum::command::SpectrumArgs),
    /// Time what training is made of on the config's network and a device: forward pass,
    /// evaluation, both gradients, an SGD step, the Gauss-Newton- and Hessian-vector
    /// products, a CG iteration and a Hessian-free step, each the median of timed calls after
    /// a warm-up call (compilation and autotuning are in the warm-up, reported apart), with
    /// peak memory. `scripts/torch_reference.py --bench` times the same in PyTorch.
    Bench(crate::bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Download CIFAR-10's binary version (cifar-10-binary.tar.gz, 163 MB) from its
    /// publisher, check its MD5 and extract it into <data>/cifar-10-batches-bin/. `train` and
    /// `eval` do the same by themselves when the data directory is empty or missing. A copy
    /// of the archive placed at <data>/cifar-10-binary.tar.gz is checked and extracted
    /// without network access. A download that receives nothing for 60 s fails
    /// (HFTRAIN_DOWNLOAD_STALL_SECONDS sets the wait); Ctrl-C stops it at once, keeping
    /// nothing.
    Download {
        /// Data directory.
        #[arg(long, env = "HFTRAIN_DATA", default_value = "data/cifar10")]
        data: PathBuf,
        /// Address of the archive, for a mirror (needs --md5) [default: the publisher's,
        /// https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz].
        #[arg(long, env = "HFTRAIN_DATA_URL")]
        url: Option<String>,
        /// MD5 checksum of the mirror's archive (32 hexadecimal digits) [default: the
        /// publisher's, c32a1d4ab5d03f1284b67883e8d87530].
        #[arg(long, env = "HFTRAIN_DATA_MD5")]
        md5: Option<String>,
    },
    /// Write a generated stand-in for CIFAR-10: ten classes (CIFAR-10's names) of coloured
    /// stripes with noise, which a small network learns in seconds. For a check of the whole
    /// pipeline without downloading anything: `--data` a run at the folder it writes.
    Synthetic {
        /// Folder to create (refused when it exists and is not empty).
        #[arg(long)]
        out: PathBuf,
        /// On-disk format: the official binary batches or an image folder of PNG files.
        #[arg(long, value_enum, default_value_t = SyntheticFormat::Binary)]
        format: SyntheticFormat,
        /// Training images per class.
        #[arg(long, default_value_t = 500)]
        train_per_class: usize,
        /// Test images per class.
        #[arg(long, default_value_t = 100)]
        test_per_class: usize,
        /// Seed of the generator (the same seed writes the same images on every machine).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// A count of at least 1 (`--stop-after-epoch 0` would otherwise still train an epoch).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("expected at least 1 (the number of complete epochs to stop after)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{text:?} is not a whole number: {e}")),
    }
}

/// The environment variables the options read. An empty one (`HFTRAIN_DATA=`, as a shell
/// script writes when its own variable is unset) means "not set", not an empty value.
pub const ENVIRONMENT: [&str; 4] = [
    "HFTRAIN_DATA",
    "HFTRAIN_DATA_URL",
    "HFTRAIN_DATA_MD5",
    crate::data::download::STALL_VARIABLE,
];

/// The formats `hftrain data synthetic` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyntheticFormat {
    /// data_batch_1.bin ... data_batch_5.bin and test_batch.bin.
    Binary,
    /// train/<class>/*.png and test/<class>/*.png.
    Folder,
}

/// Runs a command; the exit code is 130 for a training run stopped by Ctrl-C (as shells
/// report an interrupted program).
pub fn run(cli: Cli) -> Result<ExitCode> {
    use crate::logging::{self, Verbosity};
    logging::init(match (cli.quiet, cli.verbose) {
        (true, _) => Verbosity::Quiet,
        (_, true) => Verbosity::Verbose,
        _ => Verbosity::Normal,
    });
    match cli.command {
        Command::Train {
            config,
            resume,
            data,
            out,
            device,
            force,
            stop_after_epoch,
        } => {
            let config = config.as_deref().map(Config::load).transpose()?;
            train_command(TrainRequest {
                config,
                out_dir: out,
                data_dir: data,
                device,
                resume,
                force,
                stop_after_epoch,
            })
        }
        Command::Eval {
            checkpoint,
            data,
            device,
            limit,
            json,
            show_mistakes,
        } => eval_command(&checkpoint, data, device, limit, json, show_mistakes)
            .map(|()| ExitCode::SUCCESS),
        Command::Data {
            command: DataCommand::Download { data, url, md5 },
        } => {
            let source = crate::data::download::ArchiveSource::new(url, md5)?;
            let folder = crate::data::download::fetch(&data, &source)?;
            println!("CIFAR-10: {}", folder.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Data {
            command:
                DataCommand::Synthetic {
                    out,
                    format,
                    train_per_class,
                    test_per_class,
                    seed,
                },
        } => synthetic_command(&out, format, train_per_class, test_per_class, seed),
        Command::Predict {
            checkpoint,
            images,
            top,
            json,
            device,
        } => predict_command(&crate::predict::PredictRequest {
            checkpoint,
            inputs: images,
            top,
            json,
            device,
        }),
        Command::Export {
            checkpoint,
            out,
            force,
        } => {
            let exported = crate::export::run(&checkpoint, &out, force)?;
            println!(
                "exported {} ({}) to {}; rebuild it in PyTorch with scripts/load_export.py",
                crate::words::count(exported.tensors, "tensor"),
                crate::words::count(exported.parameters, "parameter"),
                exported.path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare { runs, out, levels } => {
            let levels = crate::compare::parse_levels(&levels)?;
            print!("{}", crate::compare::compare(&runs, &out, &levels)?);
            println!("picture: {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Plot { run } => plot_command(&run),
        Command::Curvature {
            checkpoint,
            batch,
            seed,
            out,
            data,
            device,
            repeats,
            only,
        } => {
            let request = crate::inspect::CurvatureRequest {
                checkpoint,
                batch,
                seed,
                out,
                data,
                device,
                repeats,
                products: only,
            };
            let (path, timings) = crate::inspect::run(&request)?;
            println!("median of {repeats} timed runs, batch of {batch} test images:");
            println!("{}", timings.report());
            println!("products: {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            let report = crate::bench::run(&args)?;
            print!("{}", report.table());
            if let Some(path) = &args.json {
                println!("results: {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Spectrum(args) => {
            let report = crate::spectrum::command::run(&args)?;
            print!("{}", report.table());
            for (what, path) in [("results", &args.json), ("density plot", &args.plot)] {
                if let Some(path) = path {
                    println!("{what}: {}", path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `hftrain train`: exit code 130 for a run stopped by Ctrl-C (as shells report an
/// interrupted program).
fn train_command(request: TrainRequest) -> Result<ExitCode> {
    crate::interrupt::install();
    let outcome = train::run(request)?;
    if outcome.interrupted {
        return Ok(ExitCode::from(130));
    }
    if let Some(last) = outcome.metrics.last() {
        println!(
            "done: test accuracy {:.2}% after {}; run directory {}",
            100.0 * last.test_accuracy,
            crate::words::count(last.epoch, "epoch"),
            outcome.run_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn synthetic_command(
    out: &Path,
    format: SyntheticFormat,
    train_per_class: usize,
    test_per_class: usize,
    seed: u64,
) -> Result<ExitCode> {
    use crate::data::{Format, synthetic::SyntheticSpec};
    let spec = SyntheticSpec {
        train_per_class,
        test_per_class,
        seed,
    };
    let (train, test) = (spec.generate(Split::Train), spec.generate(Split::Test));
    let format = match format {
        SyntheticFormat::Binary => Format::Binary,
        SyntheticFormat::Folder => Format::ImageFolder,
    };
    crate::data::synthetic::write(out, format, &train, &test)?;
    println!(
        "synthetic data set ({format}): {} training and {} test images in {}",
        train.len(),
        test.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `hftrain predict`: exit status 1 when a picture could not be classified (after printing
/// and writing all the others).
fn predict_command(request: &crate::predict::PredictRequest) -> Result<ExitCode> {
    let predictions = crate::predict::run(request)?;
    let mut failed = 0;
    for p in &predictions {
        if p.error.is_some() {
            failed += 1;
            eprintln!("{}", p.line());
        } else {
            println!("{}", p.line());
        }
    }
    if let Some(json) = &request.json {
        println!("predictions: {}", json.display());
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} could not be classified",
            crate::words::count(predictions.len(), "picture")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `hftrain plot RUN`: the run's pictures again, from its CSV files.
fn plot_command(run: &Path) -> Result<ExitCode> {
    let metrics = crate::metrics::read(&run.join("metrics.csv"))?;
    let steps_path = run.join("steps.csv");
    let steps = steps_path
        .exists()
        .then(|| crate::metrics::StepLog::open(&steps_path, usize::MAX));
    let steps = steps.as_ref().map(crate::metrics::StepLog::rows);
    for path in crate::plots::write_all(run, &metrics, steps)? {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn eval_command(
    dir: &Path,
    data: Option<PathBuf>,
    device: Option<DeviceChoice>,
    limit: usize,
    json: Option<PathBuf>,
    show_mistakes: usize,
) -> Result<()> {
    let opened = crate::session::open_checkpoint(dir, data, device, Split::Test, limit)?;
    let options = EvalOptions {
        flip_tta: true,
        mistakes: show_mistakes,
    };
    let result = evaluate_with(
        &opened.network,
        &opened.params,
        &opened.buffers,
        &opened.data,
        opened.config.train.eval_batch_size,
        &Transform::eval(&opened.config.data),
        &opened.device,
        options,
    );
    print!("{}", result.table());
    let json_path = json.unwrap_or_else(|| default_eval_path(dir));
    if let Some(parent) = json_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(&result).expect("an evaluation always serialises");
    write_atomic(&json_path, text.as_bytes())?;
    println!("results: {}", json_path.display());
    let stem = json_path
        .file_stem()
        .map_or("eval".into(), |s| s.to_string_lossy().into_owned());
    let picture = json_path.with_file_name(format!("{stem}-confusion.png"));
    crate::plots::write_confusion(&picture, &result.classes, &result.confusion)?;
    println!("confusion matrix: {}", picture.display());
    if show_mistakes > 0 {
        let grid = json_path.with_file_name(format!("{stem}-mistakes.png"));
        crate::mistakes::write_grid(&grid, &opened.data, &result.classes, &result.mistakes)?;
        println!("mistakes: {}", grid.display());
    }
    Ok(())
}

/// `<run>/eval/<checkpoint name>.json` for a checkpoint inside `<run>/checkpoints/`, else
/// `<checkpoint name>.eval.json` in the current directory.
fn default_eval_path(dir: &Path) -> PathBuf {
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    match real.parent() {
        Some(parent) if parent.file_name().is_some_and(|n| n == "checkpoints") => parent
            .parent()
            .map(|run| run.join("eval").join(format!("{name}.json")))
            .unwrap_or_else(|| PathBuf::from(format!("{name}.eval.json"))),
        _ => PathBuf::from(format!("{name}.eval.json")),
    }
}
