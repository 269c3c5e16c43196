//! `hftrain bench`: how fast a config's network runs on a device. Every quantity a training
//! run is made of (a forward pass, both gradients, the curvature products, a CG iteration,
//! whole optimizer steps, evaluation) on one batch of random images, each timed after a
//! warm-up call (kernel compilation and autotuning land in that call and are reported
//! apart), as the median of repeats. `scripts/torch_reference.py --bench` times the same
//! quantities in PyTorch under the same names, so that every ratio comes from one machine.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::Serialize;

use crate::config::{Config, Precision};
use crate::curvature::{Batch, BatchObjective, CurvatureSampling, NetworkObjective};
use crate::data::{CHANNELS, IMAGE_SIDE};
use crate::device::DeviceChoice;
use crate::fsutil::write_atomic;
use crate::inspect::sync;
use crate::model::layer::Gradients;
use crate::model::loss::cross_entropy_gradient;
use crate::model::{Network, correct_count, cross_entropy};
use crate::optim::cg::{self, CgSettings};
use crate::optim::hessian_free::StepTiming;
use crate::optim::sgd::{Sgd, SgdConfig};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::params::from_host;
use crate::precision::{MixedPrecision, first_order_gradient};
use crate::rng::Rng;

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
    /// Also time each layer alone (forward, vjp, jvp), to see where a gradient's time goes.
    #[arg(long)]
    pub layers: bool,
    /// The arithmetic of SGD's and Adam's gradient, as `train.precision` sets it for
    /// training: the first-order quantities (gradient_autodiff, gradient_backprop, sgd_step)
    /// are timed in it; the curvature products stay f32 [default: the config's].
    #[arg(long)]
    pub precision: Option<Precision>,
}

/// The quantities, in the order they are timed (cheapest first, so that the process's peak
/// memory after each is mostly its own), with what each is.
pub const QUANTITIES: [(&str, &str); 9] = [
    (
        "forward",
        "forward pass and loss, training mode, no gradient",
    ),
    (
        "evaluation",
        "forward pass, loss and accuracy, evaluation mode",
    ),
    (
        "gradient_autodiff",
        "loss and gradient by Burn's autodiff (SGD's, Adam's)",
    ),
    (
        "gradient_backprop",
        "loss and gradient by our backprop (SGD's on the CPU; Hessian-free's less its decay)",
    ),
    (
        "sgd_step",
        "one SGD step: the gradient by train.gradient's route, then Nesterov's update",
    ),
    (
        "gauss_newton_vector",
        "Gauss-Newton-vector product, forward recorded anew",
    ),
    ("hessian_vector", "Hessian-vector product (double backprop)"),
    (
        "cg_iteration",
        "one CG iteration on the Gauss-Newton matrix (per iteration)",
    ),
    (
        "hessian_free_step",
        "one Hessian-free step with the config's settings",
    ),
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
    for name in &args.only {
        if !QUANTITIES.iter().any(|(q, _)| q == name) {
            bail!(
                "--only {name}: not a quantity of the bench; expected some of {}",
                QUANTITIES.map(|(q, _)| q).join(", ")
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
    let selected = crate::session::open_device(args.device.unwrap_or(config.device))?;
    let device = &selected.device;
    let network = Network::new(&config.model, crate::data::CIFAR10_CLASSES.len())
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("invalid config file {}", args.config.display()))?;
    let (params, buffers) = network.init(config.seed, device);
    let batch = random_batch(batch_size, config.seed, device);
    let hessian_free = OptimizerConfig::HessianFree(match config.optimizer.hessian_free() {
        Some(settings) => crate::optim::HessianFreeSettings {
            weight_decay: config.optimizer.weight_decay(),
            hessian_free: settings.clone(),
        },
        None => Default::default(),
    });
    let sampling = CurvatureSampling::of(&hessian_free);
    let curvature_batch = batch.head(sampling.curvature_batch_size.min(batch_size));
    let objective = NetworkObjective::new(
        &network,
        config.train.label_smoothing,
        config.optimizer.weight_decay(),
        device,
    );
    let v = crate::inspect::seeded_direction(network.params.total(), config.seed, device);
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let sgd_by_backprop = config.train.gradient.uses_backprop(device);
    let precision = args.precision.unwrap_or(config.train.precision);
    let setting = match args.precision {
        Some(_) => "--precision",
        None => "train.precision",
    };
    let mixed = MixedPrecision::on_device(precision, device, &selected.description, setting)?;
    let mut timer = Timer {
        repeats: args.repeats,
        batch: batch_size,
        device: device.clone(),
        measurements: Vec::new(),
    };
    let mut breakdown = None;
    for (name, _) in QUANTITIES {
        if !wanted(name) {
            continue;
        }
        log::info!("timing {name}");
        match name {
            "forward" => timer.time(name, || sync(&objective.value(&params, &batch))),
            "evaluation" => timer.time(name, || {
                let logits = network.predict(batch.images.clone(), &params, &buffers);
                let correct = correct_count(logits.clone(), batch.labels.clone());
                let loss = cross_entropy(logits, batch.labels.clone(), 0.0);
                sync(&loss);
                let _ = correct.into_scalar::<i64>();
            }),
            "gradient_autodiff" => timer.time(name, || {
                let out = first_order_gradient(mixed.as_ref(), |arithmetic| {
                    crate::curvature::loss_and_gradient(
                        &network,
                        &params,
                        &buffers,
                        batch.images.clone(),
                        batch.labels.clone(),
                        config.train.label_smoothing,
                        arithmetic,
                    )
                });
                sync(&out.gradient);
            }),
            "gradient_backprop" => timer.time(name, || {
                let out = first_order_gradient(mixed.as_ref(), |arithmetic| {
                    objective.loss_and_gradient_by_backprop(&params, &batch, arithmetic)
                });
                sync(&out.gradient);
            }),
            "sgd_step" => {
                let sgd_config = match &config.optimizer {
                    OptimizerConfig::Sgd(c) => c.clone(),
                    _ => SgdConfig::default(),
                };
                let mut sgd = Sgd::new(&sgd_config, objective.decay_mask.clone(), params.dims()[0]);
                let sampling = CurvatureSampling::of(&config.optimizer);
                timer.time(name, || {
                    let on_batch =
                        BatchObjective::new(&objective, &buffers, batch.clone(), sampling)
                            .first_order_by_backprop(sgd_by_backprop)
                            .in_precision(mixed.as_ref());
                    let step = sgd
                        .step(&on_batch, &params, sgd_config.lr)
                        .expect("an SGD step cannot fail");
                    sync(&step.params);
                })
            }
            "gauss_newton_vector" => timer.time(name, || {
                sync(&objective.gauss_newton(&params, &batch).product(&v))
            }),
            "hessian_vector" => timer.time(name, || {
                sync(&objective.hessian_vector(&params, &batch, &v))
            }),
            "cg_iteration" => {
                let settings = CgSettings {
                    max_iterations: args.cg_iterations.max(1),
                    // Neither stopping rule may end the solve early: every call does the
                    // same number of iterations.
                    tolerance: 0.0,
                    residual_tolerance: 0.0,
                    ..CgSettings::default()
                };
                let gradient = objective.gradient(&params, &batch, false).gradient;
                let iterations = settings.max_iterations as f64;
                timer.time_per(name, iterations, || {
                    let operator = objective.curvature(sampling.kind, &params, &curvature_batch);
                    let result =
                        cg::solve(operator.as_ref(), 1.0, &gradient, None, None, &settings);
                    sync(&result.solution);
                })
            }
            "hessian_free_step" => {
                let mut timings = Vec::new();
                timer.time(name, || {
                    // A new optimizer each call, so that every call starts from the same
                    // damping and no warm start: the same work each time.
                    let mut optimizer =
                        hessian_free.build(objective.decay_mask.clone(), network.params.total());
                    let on_batch =
                        BatchObjective::new(&objective, &buffers, batch.clone(), sampling);
                    let step = optimizer
                        .step(&on_batch, &params, 0.0)
                        .expect("a Hessian-free step from a finite start cannot fail");
                    sync(&step.params);
                    if let Some(report) = step.info.report {
                        timings.push((report.cg_iterations, report.timing));
                    }
                });
                // The warm-up call's step is left out, as from the medians.
                breakdown = median_breakdown(timings.get(1..).unwrap_or(&[]));
            }
            other => unreachable!("{other} is in QUANTITIES but has no timing"),
        }
    }
    let layers = args.layers.then(|| {
        log::info!("timing each layer");
        time_layers(
            &network,
            &params,
            &v,
            &batch,
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
        curvature_batch: curvature_batch.len(),
        repeats: args.repeats,
        threads: rayon::current_num_threads(),
        precision: precision.to_string(),
        sgd_gradient: if sgd_by_backprop {
            "our backprop".into()
        } else {
            "Burn's autodiff".into()
        },
        measurements: timer.measurements,
        hessian_free_step: breakdown,
        layers,
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("a report always serialises");
        write_atomic(path, text.as_bytes())?;
    }
    Ok(report)
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

struct Timer {
    repeats: usize,
    batch: usize,
    device: Device,
    measurements: Vec<Measurement>,
}

impl Timer {
    fn time(&mut self, name: &str, run: impl FnMut()) {
        self.time_per(name, 1.0, run)
    }

    /// Times `run`, whose call does `per` units of the quantity (seconds are divided by it).
    fn time_per(&mut self, name: &str, per: f64, mut run: impl FnMut()) {
        let mut call = || {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64() / per
        };
        let first_call_seconds = call();
        let seconds: Vec<f64> = (0..self.repeats).map(|_| call()).collect();
        let median_seconds = median(&seconds);
        let what = QUANTITIES
            .iter()
            .find(|(q, _)| *q == name)
            .map_or("", |(_, what)| what);
        self.measurements.push(Measurement {
            name: name.into(),
            what: what.into(),
            median_seconds,
            seconds,
            first_call_seconds,
            images_per_second: self.batch as f64 / median_seconds,
            process_peak_bytes: crate::memory::process_peak(),
            device_reserved_bytes: self.device.memory_pool_usage().map(|u| u.bytes_reserved),
        });
    }
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
