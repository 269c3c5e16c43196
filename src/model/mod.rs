//! The network: a list of layers built from the config, its parameter and buffer layouts,
//! initialisation, the forward pass and the loss.

pub mod jvp;
pub mod layers;
pub mod loss;
pub mod record;
pub mod vjp;

use burn::prelude::*;

use crate::config::{HeadKind, ModelConfig};
use crate::data::{CHANNELS, IMAGE_SIDE};
use crate::params::{Layout, from_host};
use crate::rng::Rng;
pub use layers::{Activation, BatchStats, Layer, Mode};
pub use loss::{correct_count, cross_entropy};
pub use record::LayerRecord;

#[derive(Debug, Clone)]
pub struct Network {
    pub layers: Vec<Layer>,
    /// Trainable parameters.
    pub params: Layout,
    /// Batch-norm running statistics (not trained; updated from batch statistics).
    pub buffers: Layout,
    pub num_classes: usize,
}

/// A recorded training-mode forward pass (see `record.rs`): the logits and, per layer, what
/// its vjp and jvp need.
pub struct Tape {
    pub logits: Tensor<2>,
    pub records: Vec<LayerRecord>,
}

/// What a forward pass produced.
pub struct ForwardOutput {
    pub logits: Tensor<2>,
    pub stats: Vec<BatchStats>,
}

impl Network {
    pub fn new(config: &ModelConfig, num_classes: usize) -> Self {
        let mut params = Layout::default();
        let mut buffers = Layout::default();
        let mut layers = Vec::new();
        let mut channels = CHANNELS;
        let mut side = IMAGE_SIDE;
        for (i, block) in config.blocks.iter().enumerate() {
            let prefix = format!("blocks.{i}");
            let out = block.channels;
            let weight = params.push(
                format!("{prefix}.conv.weight"),
                &[out, channels, 3, 3],
                true,
            );
            // A bias before batch norm is cancelled by the mean subtraction.
            let bias = (!config.batch_norm)
                .then(|| params.push(format!("{prefix}.conv.bias"), &[out], false));
            layers.push(Layer::Conv {
                weight,
                bias,
                in_channels: channels,
                out_channels: out,
            });
            if config.batch_norm {
                layers.push(Layer::BatchNorm {
                    gamma: params.push(format!("{prefix}.bn.weight"), &[out], false),
                    beta: params.push(format!("{prefix}.bn.bias"), &[out], false),
                    running_mean: buffers.push(format!("{prefix}.bn.running_mean"), &[out], false),
                    running_var: buffers.push(format!("{prefix}.bn.running_var"), &[out], false),
                    channels: out,
                });
            }
            layers.push(Layer::Relu);
            if block.pool {
                layers.push(Layer::MaxPool);
                side /= 2;
            }
            channels = out;
        }
        let features = match config.head {
            HeadKind::Max => {
                layers.push(Layer::GlobalMaxPool);
                channels
            }
            HeadKind::Avg => {
                layers.push(Layer::GlobalAvgPool);
                channels
            }
            HeadKind::Flatten => {
                layers.push(Layer::Flatten);
                channels * side * side
            }
        };
        layers.push(Layer::Linear {
            weight: params.push("classifier.weight", &[num_classes, features], true),
            bias: params.push("classifier.bias", &[num_classes], false),
            in_features: features,
            out_features: num_classes,
        });
        if config.logit_scale != 1.0 {
            layers.push(Layer::Scale(config.logit_scale));
        }
        Self {
            layers,
            params,
            buffers,
            num_classes,
        }
    }

    /// Initial parameters and buffers, drawn on the host from `seed` so that every backend
    /// starts from the same weights: PyTorch's defaults (uniform in +-1/sqrt(fan_in) for
    /// convolution and linear weights and biases; batch norm scale 1, shift 0, running mean 0,
    /// running variance 1).
    pub fn init(&self, seed: u64, device: &Device) -> (Tensor<1>, Tensor<1>) {
        let mut values = vec![0f32; self.params.total()];
        for (index, entry) in self.params.entries().iter().enumerate() {
            let slot = &mut values[entry.offset..entry.offset + entry.len()];
            if entry.name.ends_with(".bn.weight") {
                slot.fill(1.0);
            } else if entry.name.ends_with(".bn.bias") {
                slot.fill(0.0);
            } else {
                let fan_in = self.fan_in(index);
                let bound = 1.0 / (fan_in as f64).sqrt();
                let mut rng = Rng::derive(seed, &[0x1A17, index as u64]);
                for v in slot.iter_mut() {
                    *v = ((rng.next_f64() * 2.0 - 1.0) * bound) as f32;
                }
            }
        }
        let mut buffers = vec![0f32; self.buffers.total()];
        for entry in self.buffers.entries() {
            if entry.name.ends_with("running_var") {
                buffers[entry.offset..entry.offset + entry.len()].fill(1.0);
            }
        }
        (from_host(values, device), from_host(buffers, device))
    }

    /// Fan-in of the layer that owns parameter `index` (for initialisation).
    fn fan_in(&self, index: usize) -> usize {
        for layer in &self.layers {
            match *layer {
                Layer::Conv {
                    weight,
                    bias,
                    in_channels,
                    ..
                } if weight == index || bias == Some(index) => return in_channels * 9,
                Layer::Linear {
                    weight,
                    bias,
                    in_features,
                    ..
                } if weight == index || bias == index => return in_features,
                _ => {}
            }
        }
        unreachable!("parameter {index} belongs to no convolution or linear layer")
    }

    /// Forward pass from split parameter and buffer vectors (see `Layout::split`).
    pub fn forward(
        &self,
        images: Tensor<4>,
        params: &[Tensor<1>],
        buffers: &[Tensor<1>],
        mode: Mode,
    ) -> ForwardOutput {
        let mut stats = Vec::new();
        let mut x = Activation::Map(images);
        for layer in &self.layers {
            x = layer.forward(x, params, buffers, mode, &mut stats);
        }
        ForwardOutput {
            logits: x.flat(),
            stats,
        }
    }

    /// Training-mode forward pass that records each layer for `backprop` and `tangent`.
    pub fn forward_recorded(&self, images: Tensor<4>, params: &[Tensor<1>]) -> Tape {
        let mut x = Activation::Map(images);
        let mut records = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (y, record) = layer.forward_recorded(x, params);
            records.push(record);
            x = y;
        }
        Tape {
            logits: x.flat(),
            records,
        }
    }

    /// Our own backprop: the gradient of the loss with respect to every parameter tensor (in
    /// layout order) from the gradient with respect to the logits, by the layers' `vjp`.
    /// With `squared`, also the per-position sums of squared gradients (see
    /// `Layer::param_gradients`), scaled by the batch size to the mean-loss scale.
    pub fn backprop(
        &self,
        tape: &Tape,
        params: &[Tensor<1>],
        d_logits: Tensor<2>,
        squared: bool,
    ) -> (Vec<Tensor<1>>, Option<Vec<Tensor<1>>>) {
        let mut grads: Vec<Option<Tensor<1>>> = vec![None; self.params.entries().len()];
        let mut squares: Vec<Option<Tensor<1>>> = vec![None; grads.len()];
        let batch = d_logits.dims()[0] as f64;
        let mut dy = Activation::Flat(d_logits);
        for (i, (layer, record)) in self.layers.iter().zip(&tape.records).enumerate().rev() {
            if squared {
                for (index, sq) in layer.param_gradients(record, params, dy.clone(), true) {
                    squares[index] = Some(sq.mul_scalar(batch));
                }
            }
            let (dx, layer_grads) = layer.vjp(record, params, dy, i > 0);
            for (index, g) in layer_grads {
                grads[index] = Some(g);
            }
            match dx {
                Some(dx) => dy = dx,
                None => break,
            }
        }
        let fill = |parts: Vec<Option<Tensor<1>>>| -> Vec<Tensor<1>> {
            parts
                .into_iter()
                .zip(params)
                .map(|(g, p)| g.unwrap_or_else(|| p.zeros_like()))
                .collect()
        };
        let squares = squared.then(|| fill(squares));
        (fill(grads), squares)
    }

    /// Forward-mode tangent of the logits for parameter tangents `tangents` (split like the
    /// parameters), by the layers' `jvp` on a recorded pass. The images are constants.
    pub fn tangent(&self, tape: &Tape, params: &[Tensor<1>], tangents: &[Tensor<1>]) -> Tensor<2> {
        let mut dx: Option<Activation> = None;
        for (layer, record) in self.layers.iter().zip(&tape.records) {
            dx = layer.jvp(record, params, tangents, dx);
        }
        match dx {
            Some(d) => d.flat(),
            None => tape.logits.zeros_like(),
        }
    }

    /// Batch-norm statistics of a recorded pass, for the running-statistics update.
    pub fn recorded_stats(&self, tape: &Tape) -> Vec<BatchStats> {
        self.layers
            .iter()
            .zip(&tape.records)
            .filter_map(|(layer, record)| match (layer, &record.aux) {
                (
                    Layer::BatchNorm {
                        running_mean,
                        running_var,
                        ..
                    },
                    record::Aux::BatchNorm { mean, variance, .. },
                ) => {
                    let [n, _, h, w] = record.input.clone().map().dims();
                    Some(BatchStats {
                        running_mean: *running_mean,
                        running_var: *running_var,
                        mean: mean.clone(),
                        variance: variance.clone(),
                        count: n * h * w,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// Logits in evaluation mode from flat vectors.
    pub fn predict(&self, images: Tensor<4>, params: &Tensor<1>, buffers: &Tensor<1>) -> Tensor<2> {
        let p = self.params.split(params);
        let b = self.buffers.split(buffers);
        self.forward(images, &p, &b, Mode::Eval).logits
    }

    /// The buffers after one step's running-statistics update
    /// (PyTorch's rule: `running = (1 - m) running + m batch`, variance unbiased).
    pub fn update_buffers(
        &self,
        buffers: Tensor<1>,
        stats: &[BatchStats],
        momentum: f32,
    ) -> Tensor<1> {
        if stats.is_empty() {
            return buffers;
        }
        let mut parts = self.buffers.split(&buffers);
        for s in stats {
            let unbiased = s.count as f32 / (s.count.max(2) - 1) as f32;
            let mean = s.mean.clone().detach().inner();
            let var = s.variance.clone().detach().inner().mul_scalar(unbiased);
            let (im, iv) = (s.running_mean, s.running_var);
            parts[im] = parts[im].clone().mul_scalar(1.0 - momentum) + mean.mul_scalar(momentum);
            parts[iv] = parts[iv].clone().mul_scalar(1.0 - momentum) + var.mul_scalar(momentum);
        }
        self.buffers.join(parts)
    }

    /// A multi-line summary: layers, parameter count.
    pub fn summary(&self) -> String {
        let layers: Vec<String> = self.layers.iter().map(Layer::describe).collect();
        format!(
            "model: {} layers, {} parameters in {} tensors\n  {}",
            self.layers.len(),
            self.params.total(),
            self.params.entries().len(),
            layers.join(" | ")
        )
    }
}
