//! `hftrain export`: a checkpoint's trained network as a safetensors file in PyTorch's
//! `state_dict` form (names, layouts, batch-norm running statistics and
//! `num_batches_tracked`), with what rebuilding it needs in the file's metadata: the
//! network's `[model]` section, the input normalisation and the class names.
//! `scripts/load_export.py` rebuilds it in PyTorch.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use crate::params::Layout;
use crate::store::checkpoint::Checkpoint;
use crate::store::output::{self, Existing};
use crate::store::safetensors::SafeTensors;

/// `hftrain export`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Checkpoint directory, e.g. runs/cifar10/checkpoints/latest.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The file to write, e.g. model.safetensors.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

pub const FORMAT: &str = "hftrain export v1";

/// What was written.
#[derive(Debug, Clone)]
pub struct Exported {
    pub path: PathBuf,
    pub tensors: usize,
    pub parameters: usize,
}

fn add_layout(file: &mut SafeTensors, layout: &Layout, values: &[f32]) {
    for e in layout.entries() {
        file.add_f32(
            e.name.clone(),
            &e.shape,
            &values[e.offset..e.offset + e.len()],
        );
    }
}

/// Writes the export of the checkpoint at `dir` to `out` (a new file, or with `force` an
/// existing one; `store::output` says what is never replaced).
pub fn run(dir: &Path, out: &Path, force: bool) -> Result<Exported> {
    output::check(out, "--out", Existing::named(force))?;
    let ckpt = Checkpoint::load(dir)?;
    let classes = if ckpt.classes.is_empty() {
        crate::data::CIFAR10_CLASSES.map(String::from).to_vec()
    } else {
        ckpt.classes.clone()
    };
    let mut file = SafeTensors::default();
    add_layout(&mut file, &ckpt.params_layout, &ckpt.params);
    add_layout(&mut file, &ckpt.buffers_layout, &ckpt.buffers);
    // PyTorch's batch norm keeps a step count beside its statistics; `load_state_dict`
    // wants it. (It matters only to a momentum of None, which hftrain does not use.)
    let mut tensors = ckpt.params_layout.entries().len() + ckpt.buffers_layout.entries().len();
    for e in ckpt.buffers_layout.entries() {
        if let Some(layer) = e.name.strip_suffix(".running_mean") {
            file.add_i64(
                format!("{layer}.num_batches_tracked"),
                &[],
                &[ckpt.position.global_step as i64],
            );
            tensors += 1;
        }
    }
    let model = toml::to_string(&ckpt.config.model).expect("a model config serialises");
    file.add_metadata("format", FORMAT);
    file.add_metadata("model", model);
    file.add_metadata("mean", serde_json::json!(ckpt.config.data.mean).to_string());
    file.add_metadata("std", serde_json::json!(ckpt.config.data.std).to_string());
    file.add_metadata("classes", serde_json::json!(classes).to_string());
    file.add_metadata(
        "input",
        "NCHW float32 RGB 32x32, pixels in [0, 1] normalised as (x - mean) / std; the network \
         in eval mode (batch norm with its running statistics); outputs are logits",
    );
    file.add_metadata("checkpoint", dir.display().to_string());
    file.add_metadata("epoch", ckpt.position.epoch.to_string());
    file.add_metadata("hftrain_version", env!("CARGO_PKG_VERSION"));
    file.write(out)?;
    Ok(Exported {
        path: out.to_path_buf(),
        tensors,
        parameters: ckpt.params.len(),
    })
}

/// `hftrain export`: what was written, and how to load it.
pub fn execute(args: &ExportArgs) -> Result<ExitCode> {
    let exported = run(&args.checkpoint, &args.out, args.force)?;
    println!(
        "exported {} ({}) to {}; rebuild it in PyTorch with scripts/load_export.py",
        crate::support::words::count(exported.tensors, "tensor"),
        crate::support::words::count(exported.parameters, "parameter"),
        exported.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
