//! The network: a list of layers built from the config, its parameter and buffer layouts,
//! initialisation, the forward pass and the loss.

pub mod layers;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::config::{HeadKind, ModelConfig};
use crate::data::{CHANNELS, IMAGE_SIDE};
use crate::params::{Layout, from_host};
use crate::rng::Rng;
pub use layers::{Activation, BatchStats, Layer, Mode};

#[derive(Debug, Clone)]
pub struct Network {
    pub layers: Vec<Layer>,
    /// Trainable parameters.
    pub params: Layout,
    /// Batch-norm running statistics (not trained; updated from batch statistics).
    pub buffers: Layout,
    pub num_classes: usize,
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
            let weight = params.push(format!("{prefix}.conv.weight"), &[out, channels, 3, 3], true);
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

    /// Logits in evaluation mode from flat vectors.
    pub fn predict(&self, images: Tensor<4>, params: &Tensor<1>, buffers: &Tensor<1>) -> Tensor<2> {
        let p = self.params.split(params);
        let b = self.buffers.split(buffers);
        self.forward(images, &p, &b, Mode::Eval).logits
    }

    /// The buffers after one step's running-statistics update
    /// (PyTorch's rule: `running = (1 - m) running + m batch`, variance unbiased).
    pub fn update_buffers(&self, buffers: Tensor<1>, stats: &[BatchStats], momentum: f32) -> Tensor<1> {
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

/// Mean softmax cross-entropy with optional label smoothing, as a one-element tensor.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>, smoothing: f32) -> Tensor<1> {
    let [n, classes] = logits.dims();
    let log_p = log_softmax(logits, 1);
    let picked = log_p.clone().gather(1, labels.reshape([n, 1]));
    let nll = picked.neg().mean();
    if smoothing == 0.0 {
        return nll;
    }
    let uniform = log_p.neg().sum_dim(1).mean().div_scalar(classes as f32);
    nll.mul_scalar(1.0 - smoothing) + uniform.mul_scalar(smoothing)
}

/// Number of correct top-1 predictions, as a one-element Int tensor.
pub fn correct_count(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1, Int> {
    let [n, _] = logits.dims();
    logits
        .argmax(1)
        .reshape([n])
        .equal(labels)
        .int()
        .sum()
}
