//! `hftrain bench`: how fast a config's network runs on a device. Every quantity a training
//! run is made of (a forward pass, both gradients, the curvature products, a CG iteration,
//! whole optimizer steps, evaluation) on one batch of random images, each timed after a
//! warm-up call (kernel compilation and autotuning land in that call and are reported
//! apart), as the median of repeats. `scripts/torch_reference.py --bench` times the same
//! quantities in PyTorch under the same names, so that every ratio comes from one machine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::Serialize;

use crate::config::{Config, Precision};
use crate::curvature::{Batch, BatchObjective, CurvatureSampling, NetworkObjective};
use crate::data::{CHANNELS, IMAGE_SIDE};
use crate::device::{DeviceChoice, SelectedDevice};
use crate::model::layer::Gradients;
use crate::model::loss::cross_entropy_gradient;
use crate::model::{Network, correct_count, cross_entropy};
use crate::optim::cg::{self, CgSettings};
use crate::optim::hessian_free::StepTiming;
use crate::optim::sgd::{Sgd, SgdConfig};
use crate::optim::{HessianFreeSettings, Optimizer, OptimizerConfig, StepReport};
use crate::params::from_host;
use crate::params::sync;
use crate::precision::{MixedPrecision, first_order_gradient};
use crate::store::output::{self, Existing};
use crate::support::fsutil::write_atomic;
use crate::support::rng::Rng;

/// The options of `hftrain bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The config whose network (and Hessian-free settings, where it has them) is timed.
    #[arg(long, short, default_value = "configs/cifar10.toml")]
    pub config: PathBuf,
    /// Device: auto, wgpu, wgpu-cpu, flex, vulkan or vulkan-cpu [default: the config's].
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// Images in the batch every quantity is timed on [default: the config's
    /// train.batch_size].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Timed calls of each quantity after the warm-up call; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// CG iterations in the timed solve whose time per iteration is reported.
    #[arg(long, default_value_t = 10)]
    pub cg_iterations: usize,
    /// Time only these quantities (comma-separated names of the table's first column)
    /// [default: all].
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Also write the results as JSON to this file [default: none, only printed].
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Replace the --json file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Also time each layer alone (forward, vjp, jvp), to see where a gradient's time goes.
    #[arg(long)]
    pub layers: bool,
    /// The arithmetic of SGD's and Adam's gradient, as `train.precision` sets it for
    /// training: the first-order quantities (gradient_autodiff, gradient_backprop, sgd_step)
    /// are timed in it; the curvature products stay f32 [default: the config's].
    #[arg(long)]
    pub precision: Option<Precision>,
}

/// One quantity of the bench: its name (the table's first column, `--only`'s value, and the
/// name `scripts/torch_reference.py --bench` times it under), what it is, and how it is timed.
#[derive(Clone, Copy)]
pub struct Quantity {
    pub name: &'static str,
    pub what: &'static str,
    time: fn(&Bench) -> Timing,
}

/// The quantities, in the order they are timed (cheapest first, so that the process's peak
/// memory after each is mostly its own).
pub const QUANTITIES: [Quantity; 9] = [
    Quantity {
        name: "forward",
        what: "forward pass and loss, training mode, no gradient",
        time: time_forward,
    },
    Quantity {
        name: "evaluation",
        what: "forward pass, loss and accuracy, evaluation mode",
        time: time_evaluation,
    },
    Quantity {
        name: "gradient_autodiff",
        what: "loss and gradient by Burn's autodiff (SGD's, Adam's)",
        time: time_gradient_autodiff,
    },
    Quantity {
        name: "gradient_backprop",
        what: "loss and gradient by our backprop (SGD's on the CPU; Hessian-free's less its decay)",
        time: time_gradient_backprop,
    },
    Quantity {
        name: "sgd_step",
        what: "one SGD step: the gradient by train.gradient's route, then Nesterov's update",
        time: time_sgd_step,
    },
    Quantity {
        name: "gauss_newton_vector",
        what: "Gauss-Newton-vector product, forward recorded anew",
        time: time_gauss_newton_vector,
    },
    Quantity {
        name: "hessian_vector",
        what: "Hessian-vector product (double backprop)",
        time: time_hessian_vector,
    },
    Quantity {
        name: "cg_iteration",
        what: "one CG iteration on the Gauss-Newton matrix (per iteration)",
        time: time_cg_iteration,
    },
    Quantity {
        name: "hessian_free_step",
        what: "one Hessian-free step with the config's settings",
        time: time_hessian_free_step,
    },
];

/// One timed quantity.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub name: String,
    pub what: String,
    /// Median seconds of the timed calls.
    pub median_seconds: f64,
    /// All timed calls, in order.
    pub seconds: Vec<f64>,
    /// The warm-up call (compilation and autotuning included).
    pub first_call_seconds: f64,
    /// Images of the batch per median second.
    pub images_per_second: f64,
    /// The process's peak resident memory so far (the memory of a CPU backend's tensors).
    pub process_peak_bytes: Option<u64>,
    /// What the device's allocator holds after the quantity (a GPU's memory), where the
    /// backend reports it.
    pub device_reserved_bytes: Option<u64>,
}

/// Where the median Hessian-free step's time went.
#[derive(Debug, Clone, Serialize)]
pub struct StepBreakdown {
    pub cg_iterations: usize,
    pub curvature_products: usize,
    pub gradient_seconds: f64,
    pub cg_seconds: f64,
    pub backtracking_seconds: f64,
    pub line_search_seconds: f64,
}

/// One layer's share of a recorded forward pass, our backprop and the forward tangent
/// (median seconds; each ends with `Device::sync`, so a lazy backend's work is in it).
#[derive(Debug, Clone, Serialize)]
pub struct LayerTime {
    pub layer: String,
    pub forward_seconds: f64,
    pub vjp_seconds: f64,
    pub jvp_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub config: String,
    pub model: String,
    pub parameters: usize,
    pub device: String,
    pub batch: usize,
    pub curvature_batch: usize,
    pub repeats: usize,
    pub threads: usize,
    /// How `sgd_step` took its gradient (`train.gradient` on this device): "our backprop"
    /// or "Burn's autodiff".
    pub sgd_gradient: String,
    /// The arithmetic of the first-order quantities ("f32", "bf16", "f16").
    pub precision: String,
    pub measurements: Vec<Measurement>,
    pub hessian_free_step: Option<StepBreakdown>,
    /// With `--layers`.
    pub layers: Option<Vec<LayerTime>>,
}

/// Runs the benchmark and writes the JSON where asked.
pub fn run(args: &BenchArgs) -> Result<BenchReport> {
    let config = Config::load(&args.config)?;
    let batch_size = check_args(args, &config)?;
    let selected = crate::session::open_device(args.device.unwrap_or(config.device))?;
    let network = Network::new(&config.model, crate::data::CIFAR10_CLASSES.len())
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("invalid config file {}", args.config.display()))?;
    check_memory(&network, batch_size, selected.host_memory)?;
    let bench = Bench::new(args, &config, &network, batch_size, &selected)?;
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut measurements = Vec::new();
    let mut breakdown = None;
    for quantity in QUANTITIES.iter().filter(|q| wanted(q.name)) {
        log::info!("timing {}", quantity.name);
        let timing = (quantity.time)(&bench);
        if timing.step_breakdown.is_some() {
            breakdown = timing.step_breakdown.clone();
        }
        measurements.push(bench.measurement(quantity, timing));
    }
    let layers = args.layers.then(|| {
        log::info!("timing each layer");
        time_layers(
            &network,
            &bench.params,
            &bench.v,
            &bench.batch,
            config.train.label_smoothing,
            args.repeats,
        )
    });
    let report = BenchReport {
        config: args.config.display().to_string(),
        model: network.summary(),
        parameters: network.params.total(),
        device: selected.description.clone(),
        batch: batch_size,
        curvature_batch: bench.curvature_batch.len(),
        repeats: args.repeats,
        threads: rayon::current_num_threads(),
        precision: bench.precision.to_string(),
        sgd_gradient: if bench.sgd_by_backprop {
            "our backprop".into()
        } else {
            "Burn's autodiff".into()
        },
        measurements,
        hessian_free_step: breakdown,
        layers,
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("a report always serialises");
        write_atomic(path, text.as_bytes())?;
    }
    Ok(report)
}

/// The options that cannot be timed (an unknown `--only` name, an empty batch, no timed
/// call), refused before a device is opened; the batch's size.
fn check_args(args: &BenchArgs, config: &Config) -> Result<usize> {
    for name in &args.only {
        if !QUANTITIES.iter().any(|q| q.name == name) {
            bail!(
                "--only {name}: not a quantity of the bench; expected some of {}",
                QUANTITIES.map(|q| q.name).join(", ")
            );
        }
    }
    let batch_size = args.batch.unwrap_or(config.train.batch_size);
    if batch_size == 0 {
        bail!("--batch 0: expected at least 1 image");
    }
    if args.repeats == 0 {
        bail!("--repeats 0: expected at least 1 timed call");
    }
    if args.cg_iterations == 0 {
        bail!("--cg-iterations 0: expected at least 1 CG iteration in the timed solve");
    }
    if let Some(path) = &args.json {
        output::check(path, "--json", Existing::named(args.force))?;
    }
    Ok(batch_size)
}

/// Refuses a batch that cannot fit, before it is made: on a device in host memory what
/// training it would keep (as `train` checks, `memory::check_batch_fits`); on any device its
/// images, which are made on the host first.
fn check_memory(network: &Network, batch_size: usize, host_memory: bool) -> Result<()> {
    let Some(available) = crate::memory::available() else {
        return Ok(());
    };
    let advice = "lower --batch";
    if host_memory {
        return crate::memory::check_batch_fits(network, batch_size, available, advice);
    }
    let image_bytes = (CHANNELS * IMAGE_SIDE * IMAGE_SIDE * 4) as u64;
    if image_bytes.saturating_mul(batch_size as u64) > available {
        bail!(
            "--batch {batch_size}: its images alone need more than the {} MiB of memory \
             available; {advice}",
            available >> 20
        );
    }
    Ok(())
}

/// What every quantity is timed on: the network at its initial parameters, one batch of
/// random images, and the objective, direction and settings the quantities share.
struct Bench<'a> {
    args: &'a BenchArgs,
    config: &'a Config,
    network: &'a Network,
    device: Device,
    params: Tensor<1>,
    buffers: Tensor<1>,
    batch: Batch,
    curvature_batch: Batch,
    /// The config's Hessian-free settings, or the defaults where it trains with another
    /// optimizer.
    hessian_free: OptimizerConfig,
    sampling: CurvatureSampling,
    objective: NetworkObjective<'a>,
    /// A seeded direction the curvature products multiply.
    v: Tensor<1>,
    sgd_by_backprop: bool,
    precision: Precision,
    mixed: Option<MixedPrecision>,
}

impl<'a> Bench<'a> {
    fn new(
        args: &'a BenchArgs,
        config: &'a Config,
        network: &'a Network,
        batch_size: usize,
        selected: &SelectedDevice,
    ) -> Result<Self> {
        let device = &selected.device;
        let (params, buffers) = network.init(config.seed, device);
        let batch = random_batch(batch_size, config.seed, device);
        let hessian_free = OptimizerConfig::new(
            config
                .optimizer
                .settings::<HessianFreeSettings>()
                .cloned()
                .unwrap_or_default(),
        );
        let sampling = CurvatureSampling::of(&hessian_free);
        let curvature_batch = batch.head(sampling.curvature_batch_size.min(batch_size));
        let objective = NetworkObjective::new(
            network,
            config.train.label_smoothing,
            config.optimizer.weight_decay(),
            device,
        );
        let v = crate::params::seeded_direction(network.params.total(), config.seed, device);
        let sgd_by_backprop = config.train.gradient.uses_backprop(device);
        let precision = args.precision.unwrap_or(config.train.precision);
        let setting = match args.precision {
            Some(_) => "--precision",
            None => "train.precision",
        };
        let mixed = MixedPrecision::on_device(precision, device, &selected.description, setting)?;
        Ok(Self {
            args,
            config,
            network,
            device: device.clone(),
            params,
            buffers,
            batch,
            curvature_batch,
            hessian_free,
            sampling,
            objective,
            v,
            sgd_by_backprop,
            precision,
            mixed,
        })
    }

    fn time(&self, run: impl FnMut()) -> Timing {
        self.time_per(1.0, run)
    }

    /// Times `run`, whose call does `per` units of the quantity (seconds are divided by it):
    /// one warm-up call, then `--repeats` timed calls.
    fn time_per(&self, per: f64, mut run: impl FnMut()) -> Timing {
        let mut call = || {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64() / per
        };
        let first_call_seconds = call();
        let seconds = (0..self.args.repeats).map(|_| call()).collect();
        Timing {
            first_call_seconds,
            seconds,
            step_breakdown: None,
        }
    }

    /// A quantity's row, with the memory held right after it was timed.
    fn measurement(&self, quantity: &Quantity, timing: Timing) -> Measurement {
        let median_seconds = median(&timing.seconds);
        Measurement {
            name: quantity.name.into(),
            what: quantity.what.into(),
            median_seconds,
            seconds: timing.seconds,
            first_call_seconds: timing.first_call_seconds,
            images_per_second: self.batch.len() as f64 / median_seconds,
            process_peak_bytes: crate::memory::process_peak(),
            device_reserved_bytes: self.device.memory_pool_usage().map(|u| u.bytes_reserved),
        }
    }
}

/// One quantity's calls.
struct Timing {
    /// The warm-up call (compilation and autotuning included).
    first_call_seconds: f64,
    /// The timed calls, in order.
    seconds: Vec<f64>,
    /// Where the median Hessian-free step's time went (that quantity only).
    step_breakdown: Option<StepBreakdown>,
}

fn time_forward(b: &Bench) -> Timing {
    b.time(|| sync(&b.objective.value(&b.params, &b.batch)))
}

fn time_evaluation(b: &Bench) -> Timing {
    b.time(|| {
        let logits = b
            .network
            .predict(b.batch.images.clone(), &b.params, &b.buffers);
        let correct = correct_count(logits.clone(), b.batch.labels.clone());
        let loss = cross_entropy(logits, b.batch.labels.clone(), 0.0);
        sync(&loss);
        let _ = correct.into_scalar::<i64>();
    })
}

fn time_gradient_autodiff(b: &Bench) -> Timing {
    b.time(|| {
        let out = first_order_gradient(b.mixed.as_ref(), |arithmetic| {
            crate::curvature::loss_and_gradient(
                b.network,
                &b.params,
                &b.buffers,
                b.batch.images.clone(),
                b.batch.labels.clone(),
                b.config.train.label_smoothing,
                arithmetic,
            )
        });
        sync(&out.gradient);
    })
}

fn time_gradient_backprop(b: &Bench) -> Timing {
    b.time(|| {
        let out = first_order_gradient(b.mixed.as_ref(), |arithmetic| {
            b.objective
                .loss_and_gradient_by_backprop(&b.params, &b.batch, arithmetic)
        });
        sync(&out.gradient);
    })
}

fn time_sgd_step(b: &Bench) -> Timing {
    let sgd_config = b
        .config
        .optimizer
        .settings::<SgdConfig>()
        .cloned()
        .unwrap_or_default();
    let mut sgd = Sgd::new(
        &sgd_config,
        b.objective.decay_mask.clone(),
        b.params.dims()[0],
    );
    let sampling = CurvatureSampling::of(&b.config.optimizer);
    b.time(|| {
        let on_batch = BatchObjective::new(&b.objective, &b.buffers, b.batch.clone(), sampling)
            .first_order_by_backprop(b.sgd_by_backprop)
            .in_precision(b.mixed.as_ref());
        let step = sgd
            .step(&on_batch, &b.params, sgd_config.lr)
            .expect("an SGD step cannot fail");
        sync(&step.params);
    })
}

fn time_gauss_newton_vector(b: &Bench) -> Timing {
    b.time(|| sync(&b.objective.gauss_newton(&b.params, &b.batch).product(&b.v)))
}

fn time_hessian_vector(b: &Bench) -> Timing {
    b.time(|| sync(&b.objective.hessian_vector(&b.params, &b.batch, &b.v)))
}

fn time_cg_iteration(b: &Bench) -> Timing {
    let settings = CgSettings {
        max_iterations: b.args.cg_iterations,
        // Neither stopping rule may end the solve early: every call does the same number of
        // iterations.
        tolerance: 0.0,
        residual_tolerance: 0.0,
        ..CgSettings::default()
    };
    let gradient = b.objective.gradient(&b.params, &b.batch, false).gradient;
    let iterations = settings.max_iterations as f64;
    b.time_per(iterations, || {
        let operator = b
            .objective
            .curvature(b.sampling.kind, &b.params, &b.curvature_batch);
        let result = cg::solve(operator.as_ref(), 1.0, &gradient, None, None, &settings);
        sync(&result.solution);
    })
}

fn time_hessian_free_step(b: &Bench) -> Timing {
    let mut timings = Vec::new();
    let mut timing = b.time(|| {
        // A new optimizer each call, so that every call starts from the same damping and no
        // warm start: the same work each time.
        let mut optimizer = b
            .hessian_free
            .build(b.objective.decay_mask.clone(), b.network.params.total());
        let on_batch = BatchObjective::new(&b.objective, &b.buffers, b.batch.clone(), b.sampling);
        let step = optimizer
            .step(&on_batch, &b.params, 0.0)
            .expect("a Hessian-free step from a finite start cannot fail");
        sync(&step.params);
        if let Some(report) = step.info.details::<StepReport>() {
            timings.push((report.cg_iterations, report.timing));
        }
    });
    // The warm-up call's step is left out, as from the medians.
    timing.step_breakdown = median_breakdown(timings.get(1..).unwrap_or(&[]));
    timing
}

/// `batch` images with entries uniform in [-2, 2) (about the range of normalised pixels)
/// and labels spread over the classes, drawn from `seed`: the time of a step does not depend
/// on what the images show.
fn random_batch(batch: usize, seed: u64, device: &Device) -> Batch {
    let mut rng = Rng::derive(seed, &[0xBE4C]);
    let values: Vec<f32> = (0..batch * CHANNELS * IMAGE_SIDE * IMAGE_SIDE)
        .map(|_| (rng.next_f64() * 4.0 - 2.0) as f32)
        .collect();
    let images = from_host(values, device).reshape([batch, CHANNELS, IMAGE_SIDE, IMAGE_SIDE]);
    let classes = crate::data::CIFAR10_CLASSES.len() as u64;
    let labels: Vec<i64> = (0..batch)
        .map(|_| (rng.next_u64() % classes) as i64)
        .collect();
    let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), device);
    Batch { images, labels }
}

/// Each layer alone: its recorded forward pass, its vjp (parameter and input gradients) on
/// the loss's gradient, its jvp for the parameter tangent `v`; medians of `repeats` passes
/// after a warm-up pass.
fn time_layers(
    network: &Network,
    params: &Tensor<1>,
    v: &Tensor<1>,
    batch: &Batch,
    label_smoothing: f32,
    repeats: usize,
) -> Vec<LayerTime> {
    let device = batch.images.device();
    let wait = || {
        device
            .sync()
            .expect("the device failed while timing a layer")
    };
    let parts = network.params.split(params);
    let tangents = network.params.split(v);
    let layers = network.layers();
    // seconds[layer][0: forward, 1: vjp, 2: jvp], one entry per timed pass.
    let mut seconds = vec![[Vec::new(), Vec::new(), Vec::new()]; layers.len()];
    for pass in 0..=repeats {
        let keep = pass > 0;
        let mut x = batch.images.clone();
        let mut records = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let clock = Instant::now();
            let (y, record) = layer.record(x, &parts);
            wait();
            if keep {
                seconds[i][0].push(clock.elapsed().as_secs_f64());
            }
            records.push(record);
            x = y;
        }
        let [n, k, _, _] = x.dims();
        let logits = x.reshape([n, k]);
        let mut dy = cross_entropy_gradient(logits, batch.labels.clone(), label_smoothing)
            .reshape([n, k, 1, 1]);
        let mut grads = Gradients::new(network.params.entries().len(), false, n);
        for (i, record) in records.iter().enumerate().rev() {
            let clock = Instant::now();
            let dx = record.vjp(&parts, dy, &mut grads, i > 0);
            wait();
            if keep {
                seconds[i][1].push(clock.elapsed().as_secs_f64());
            }
            match dx {
                Some(dx) => dy = dx,
                None => break,
            }
        }
        let mut dx = None;
        for (i, record) in records.iter().enumerate() {
            let clock = Instant::now();
            dx = record.jvp(&parts, &tangents, dx);
            wait();
            if keep {
                seconds[i][2].push(clock.elapsed().as_secs_f64());
            }
        }
    }
    layers
        .iter()
        .zip(seconds)
        .map(|(layer, [forward, vjp, jvp])| LayerTime {
            layer: layer.describe(),
            forward_seconds: median(&forward),
            vjp_seconds: median(&vjp),
            jvp_seconds: median(&jvp),
        })
        .collect()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The step whose total is the median of the timed calls.
fn median_breakdown(timings: &[(usize, StepTiming)]) -> Option<StepBreakdown> {
    let mut sorted = timings.to_vec();
    sorted.sort_by(|a, b| a.1.total.total_cmp(&b.1.total));
    let (cg_iterations, t) = *sorted.get(sorted.len().checked_sub(1)? / 2)?;
    Some(StepBreakdown {
        cg_iterations,
        curvature_products: t.products,
        gradient_seconds: t.gradient,
        cg_seconds: t.cg,
        backtracking_seconds: t.backtracking,
        line_search_seconds: t.line_search,
    })
}

impl BenchReport {
    /// The table on screen.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{}\non {}\nbatch {} (curvature products of the Hessian-free step on {}), \
             median of {} timed calls after one warm-up call; SGD steps by {}; first-order \
             gradients in {}\n\n",
            self.model,
            self.device,
            self.batch,
            self.curvature_batch,
            self.repeats,
            self.sgd_gradient,
            self.precision,
        );
        out += &format!(
            "{:<20} {:>12} {:>12} {:>12} {:>12} {:>12}\n",
            "quantity", "median", "images/s", "first call", "peak RSS", "device mem"
        );
        let mib = |b: Option<u64>| b.map_or("-".into(), |b| format!("{} MiB", b >> 20));
        for m in &self.measurements {
            out += &format!(
                "{:<20} {:>12} {:>12.1} {:>12} {:>12} {:>12}\n",
                m.name,
                milliseconds(m.median_seconds),
                m.images_per_second,
                milliseconds(m.first_call_seconds),
                mib(m.process_peak_bytes),
                mib(m.device_reserved_bytes),
            );
        }
        if let Some(b) = &self.hessian_free_step {
            out += &format!(
                "\nHessian-free step (the median one): {} CG iterations, {} curvature products; \
                 gradient {}, CG {}, backtracking {}, line search {}\n",
                b.cg_iterations,
                b.curvature_products,
                milliseconds(b.gradient_seconds),
                milliseconds(b.cg_seconds),
                milliseconds(b.backtracking_seconds),
                milliseconds(b.line_search_seconds),
            );
        }
        if let Some(layers) = &self.layers {
            let total: f64 = layers
                .iter()
                .map(|l| l.forward_seconds + l.vjp_seconds)
                .sum();
            out += &format!(
                "\neach layer alone (medians; share: of forward + vjp over all layers, {})\n{:<44} {:>11} {:>11} {:>11} {:>6}\n",
                milliseconds(total),
                "layer",
                "forward",
                "vjp",
                "jvp",
                "share"
            );
            for l in layers {
                out += &format!(
                    "{:<44} {:>11} {:>11} {:>11} {:>5.1}%\n",
                    l.layer.chars().take(44).collect::<String>(),
                    milliseconds(l.forward_seconds),
                    milliseconds(l.vjp_seconds),
                    milliseconds(l.jvp_seconds),
                    100.0 * (l.forward_seconds + l.vjp_seconds) / total
                );
            }
        }
        out
    }
}

fn milliseconds(seconds: f64) -> String {
    if seconds >= 10.0 {
        format!("{seconds:.1} s")
    } else {
        format!("{:.2} ms", seconds * 1e3)
    }
}

/// `hftrain bench`: the table, then where the JSON is.
pub fn execute(args: &BenchArgs) -> Result<ExitCode> {
    let report = run(args)?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        println!("results: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
