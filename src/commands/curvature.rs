//! `hftrain curvature`: the loss, gradient, Hessian-vector and Gauss-Newton-vector products
//! of a checkpoint on the first test images and a seeded direction, written as safetensors
//! (PyTorch names and layouts) so that anyone can check them with another framework, with
//! the time each product takes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::prelude::*;

use crate::config::Config;
use crate::curvature::{Batch, NetworkObjective};
use crate::data::batcher::{HostBatch, Transform};
use crate::data::{CHANNELS, IMAGE_SIDE, Split};
use crate::model::Network;
use crate::params::{Layout, seeded_direction, sync, to_host};
use crate::store::output::{self, Existing};
use crate::store::safetensors::SafeTensors;

/// Which products to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Products {
    All,
    /// Load the checkpoint and the batch only (the baseline of a memory measurement).
    None,
    Gradient,
    Hessian,
    GaussNewton,
}

/// `hftrain curvature`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct CurvatureArgs {
    /// Checkpoint directory, e.g. runs/cifar10/checkpoints/latest.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Number of test images (the first ones of the test split).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Seed of the direction v (entries uniform in [-1, 1)).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file [default: curvature-<checkpoint>-n<batch>-seed<seed>.safetensors].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the --out file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Data directory [default: the checkpoint config's `data.dir`].
    #[arg(long, env = "HFTRAIN_DATA")]
    pub data: Option<PathBuf>,
    /// Device: auto, wgpu, wgpu-cpu, flex, vulkan or vulkan-cpu [default: the checkpoint config's].
    #[arg(long)]
    pub device: Option<crate::device::DeviceChoice>,
    /// Timed runs of each product after one warm-up; the median is printed.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Compute only one product (to measure its peak memory alone).
    #[arg(long = "only", value_enum, default_value_t = Products::All)]
    pub products: Products,
}

/// Median wall time of each product, in seconds (None where not computed).
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub gradient: Option<f64>,
    /// The same gradient by Burn's autodiff (what SGD and Adam use), for reference.
    pub autodiff_gradient: Option<f64>,
    pub hessian_vector: Option<f64>,
    /// The recorded forward pass a CG solve makes once, and one product on it.
    pub gauss_newton_record: Option<f64>,
    pub gauss_newton_vector: Option<f64>,
}

fn median_seconds(repeats: usize, mut run: impl FnMut()) -> f64 {
    run(); // warm-up: kernel compilation and autotuning
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn add_split(file: &mut SafeTensors, prefix: &str, layout: &Layout, flat: &Tensor<1>) {
    let values = to_host(flat);
    for e in layout.entries() {
        file.add_f32(
            format!("{prefix}.{}", e.name),
            &e.shape,
            &values[e.offset..e.offset + e.len()],
        );
    }
}

pub fn run(request: &CurvatureArgs) -> Result<(PathBuf, Timings)> {
    if request.repeats == 0 {
        bail!("--repeats 0: expected at least 1 timed run of each product");
    }
    let path = output_path(request)?;
    let opened = crate::session::open_checkpoint(
        &request.checkpoint,
        request.data.clone(),
        request.device,
        Split::Test,
        0,
    )?;
    let (config, network, device, test) = (
        &opened.config,
        &opened.network,
        &opened.device,
        &opened.data,
    );
    if request.batch == 0 || request.batch > test.len() {
        bail!(
            "--batch {}: expected 1 to {} (the test images found)",
            request.batch,
            test.len()
        );
    }
    let indices: Vec<usize> = (0..request.batch).collect();
    let host = HostBatch::assemble(test, &indices, &Transform::eval(&config.data), None);
    let (images, labels) = host.to_device(device);
    let batch = Batch { images, labels };
    // Products of the data loss alone: weight decay would add `weight_decay * v` on the
    // decayed tensors, which needs no checking.
    let objective = NetworkObjective::new(network, config.train.label_smoothing, 0.0, device);
    let v = seeded_direction(network.params.total(), request.seed, device);
    let want = |p: Products| request.products == Products::All || request.products == p;

    let mut file = SafeTensors::default();
    let mut timings = Timings::default();
    add_split(&mut file, "params", &network.params, &opened.params);
    add_split(&mut file, "v", &network.params, &v);
    file.add_f32(
        "images",
        &[request.batch, CHANNELS, IMAGE_SIDE, IMAGE_SIDE],
        &host.pixels,
    );
    file.add_i64("labels", &[request.batch], &host.labels);
    if want(Products::Gradient) {
        let out = objective.gradient(&opened.params, &batch, false);
        file.add_f32("loss", &[1], &[out.loss.clone().into_scalar::<f32>()]);
        add_split(&mut file, "grad", &network.params, &out.gradient);
        timings.gradient = Some(median_seconds(request.repeats, || {
            sync(&objective.gradient(&opened.params, &batch, false).gradient)
        }));
        timings.autodiff_gradient = Some(median_seconds(request.repeats, || {
            let out = crate::curvature::loss_and_gradient(
                network,
                &opened.params,
                &opened.buffers,
                batch.images.clone(),
                batch.labels.clone(),
                config.train.label_smoothing,
                crate::precision::Arithmetic::FULL,
            );
            sync(&out.gradient)
        }));
    }
    if want(Products::Hessian) {
        add_split(
            &mut file,
            "hv",
            &network.params,
            &objective.hessian_vector(&opened.params, &batch, &v),
        );
        timings.hessian_vector = Some(median_seconds(request.repeats, || {
            sync(&objective.hessian_vector(&opened.params, &batch, &v))
        }));
    }
    if want(Products::GaussNewton) {
        let gn = objective.gauss_newton(&opened.params, &batch);
        add_split(&mut file, "gv", &network.params, &gn.product(&v));
        timings.gauss_newton_vector =
            Some(median_seconds(request.repeats, || sync(&gn.product(&v))));
        timings.gauss_newton_record = Some(
            median_seconds(request.repeats, || {
                let gn = objective.gauss_newton(&opened.params, &batch);
                sync(&gn.product(&v.zeros_like()))
            }) - timings.gauss_newton_vector.unwrap_or(0.0),
        );
    }
    describe(&mut file, request, config, network);
    file.write(&path)?;
    Ok((path, timings))
}

/// The `--out` file, or curvature's default, checked before the work: the default name is
/// curvature's own, one named only with --force.
fn output_path(request: &CurvatureArgs) -> Result<PathBuf> {
    let (path, existing) = match &request.out {
        Some(out) => (out.clone(), Existing::named(request.force)),
        None => (
            default_path(&request.checkpoint, request.batch, request.seed),
            Existing::Replace,
        ),
    };
    output::check(&path, "--out", existing)?;
    Ok(path)
}

/// The file's metadata: what the tensors are, and the run they come from.
fn describe(file: &mut SafeTensors, request: &CurvatureArgs, config: &Config, network: &Network) {
    file.add_metadata("format", "hftrain curvature products v1");
    file.add_metadata(
        "definition",
        "loss = mean softmax cross-entropy (label smoothing below) of the network in training \
         mode (batch norm with batch statistics) on `images`, `labels`; grad, hv = H v and \
         gv = J^T H_L J v are with respect to the parameters, without weight decay; tensor \
         names and layouts are PyTorch's (conv weight [out, in, 3, 3], linear weight [out, in]); \
         images are normalised NCHW",
    );
    file.add_metadata("label_smoothing", config.train.label_smoothing.to_string());
    file.add_metadata("seed", request.seed.to_string());
    file.add_metadata("checkpoint", request.checkpoint.display().to_string());
    file.add_metadata("model", network.summary());
    file.add_metadata("config", config.to_toml());
}

/// `curvature-<checkpoint>-n<batch>-seed<seed>.safetensors` in the current directory.
fn default_path(checkpoint: &Path, batch: usize, seed: u64) -> PathBuf {
    let real = std::fs::canonicalize(checkpoint).unwrap_or_else(|_| checkpoint.to_path_buf());
    let name = real
        .file_name()
        .map_or("checkpoint".into(), |n| n.to_string_lossy().into_owned());
    PathBuf::from(format!("curvature-{name}-n{batch}-seed{seed}.safetensors"))
}

impl Timings {
    /// The timings as lines, with the ratios to one gradient.
    pub fn report(&self) -> String {
        let ms = |s: f64| format!("{:10.2} ms", s * 1e3);
        let ratio = |s: f64| {
            self.gradient
                .map_or(String::new(), |g| format!("  ({:.2} x gradient)", s / g))
        };
        let mut lines = Vec::new();
        if let Some(g) = self.gradient {
            lines.push(format!(
                "  gradient (loss + our backprop)          {}",
                ms(g)
            ));
        }
        if let Some(a) = self.autodiff_gradient {
            lines.push(format!(
                "  gradient by Burn's autodiff (SGD's)     {}{}",
                ms(a),
                ratio(a)
            ));
        }
        if let Some(h) = self.hessian_vector {
            lines.push(format!(
                "  Hessian-vector (double backprop)        {}{}",
                ms(h),
                ratio(h)
            ));
        }
        if let Some(r) = self.gauss_newton_record {
            lines.push(format!(
                "  Gauss-Newton record (once per CG solve) {}{}",
                ms(r),
                ratio(r)
            ));
        }
        if let Some(p) = self.gauss_newton_vector {
            lines.push(format!(
                "  Gauss-Newton-vector product             {}{}",
                ms(p),
                ratio(p)
            ));
        }
        lines.join("\n")
    }
}

/// `hftrain curvature`: the file, then each product's median time.
pub fn execute(args: &CurvatureArgs) -> Result<ExitCode> {
    let (path, timings) = run(args)?;
    println!(
        "median of {} timed runs, batch of {} test images:",
        args.repeats, args.batch
    );
    println!("{}", timings.report());
    println!("products: {}", path.display());
    Ok(ExitCode::SUCCESS)
}
