//! `hftrain eval`: a checkpoint's test accuracy (also with flip test-time augmentation),
//! per-class accuracy, confusion matrix and most confident mistakes, printed and written as
//! JSON and pictures.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use crate::data::Split;
use crate::data::batcher::Transform;
use crate::device::DeviceChoice;
use crate::evaluation::{EvalOptions, evaluate_with};
use crate::store::output::{self, Existing};
use crate::support::fsutil::write_atomic;

/// `hftrain eval`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Checkpoint directory, e.g. runs/cifar10/checkpoints/latest.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Data directory [default: the checkpoint config's `data.dir`].
    #[arg(long, env = "HFTRAIN_DATA")]
    pub data: Option<PathBuf>,
    /// Device: auto, wgpu, wgpu-cpu, flex, vulkan or vulkan-cpu [default: the checkpoint config's].
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// Evaluate on at most this many test images, balanced over classes [default: all].
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub limit: usize,
    /// Where to write the results as JSON [default: <run>/eval/<checkpoint>.json].
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the N most confident mistakes as a grid image with true and predicted
    /// classes, beside the JSON (<name>-mistakes.png); they are also listed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub show_mistakes: usize,
    /// Replace the --json file (and the pictures beside it) if they exist.
    #[arg(long)]
    pub force: bool,
}

/// Where `eval` writes: the JSON, the confusion matrix and (with --show-mistakes) the grid.
struct Outputs {
    json: PathBuf,
    confusion: PathBuf,
    mistakes: Option<PathBuf>,
}

impl Outputs {
    /// The paths, checked before the evaluation (`store::output`): a --json the user named
    /// and the pictures beside it are replaced only with --force; the default place,
    /// `<run>/eval/`, is eval's own.
    fn check(args: &EvalArgs) -> Result<Self> {
        let (json, existing) = match &args.json {
            Some(json) => (json.clone(), Existing::named(args.force)),
            None => (default_eval_path(&args.checkpoint), Existing::Replace),
        };
        let stem = json
            .file_stem()
            .map_or("eval".into(), |s| s.to_string_lossy().into_owned());
        let beside = |suffix: &str| json.with_file_name(format!("{stem}-{suffix}.png"));
        let outputs = Outputs {
            confusion: beside("confusion"),
            mistakes: (args.show_mistakes > 0).then(|| beside("mistakes")),
            json,
        };
        output::check(&outputs.json, "--json", existing)?;
        output::check(&outputs.confusion, "--json", existing)?;
        if let Some(grid) = &outputs.mistakes {
            output::check(grid, "--json", existing)?;
        }
        Ok(outputs)
    }
}

pub fn execute(args: &EvalArgs) -> Result<ExitCode> {
    let dir = &args.checkpoint;
    let outputs = Outputs::check(args)?;
    let opened = crate::session::open_checkpoint(
        dir,
        args.data.clone(),
        args.device,
        Split::Test,
        args.limit,
    )?;
    let options = EvalOptions {
        flip_tta: true,
        mistakes: args.show_mistakes,
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
    let text = serde_json::to_string_pretty(&result).expect("an evaluation always serialises");
    write_atomic(&outputs.json, text.as_bytes())?;
    println!("results: {}", outputs.json.display());
    crate::report::plots::write_confusion(&outputs.confusion, &result.classes, &result.confusion)?;
    println!("confusion matrix: {}", outputs.confusion.display());
    if let Some(grid) = &outputs.mistakes {
        crate::report::mistakes::write_grid(grid, &opened.data, &result.classes, &result.mistakes)?;
        println!("mistakes: {}", grid.display());
    }
    Ok(ExitCode::SUCCESS)
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
