//! The network: the layers of the config's stages, then the classifier and the logit scale;
//! its parameter and buffer layouts, initialisation, the forward pass, and our own backprop
//! and tangent on a recorded pass.

use std::sync::Arc;

use burn::prelude::*;

use super::builder::{Builder, Init};
use super::config::ModelConfig;
use super::layer::{BatchStats, Gradients, Layer, LayerFactors, Mode, Pass, Recorded, Shape};
use super::layers::linear::Linear;
use super::layers::scale::Scale;
use super::layers::{Residual, Sequence, build_list};
use crate::data::{CHANNELS, IMAGE_SIDE};
use crate::params::{Layout, from_host};
use crate::support::rng::Rng;

#[derive(Debug, Clone)]
pub struct Network {
    body: Sequence,
    /// The same layers one by one (each stage's layers, a residual block as one), for
    /// `hftrain bench --layers`.
    flat: Vec<Arc<dyn Layer>>,
    /// Trainable parameters.
    pub params: Layout,
    /// Batch-norm running statistics (not trained; updated from batch statistics).
    pub buffers: Layout,
    param_inits: Vec<Init>,
    buffer_inits: Vec<Init>,
    pub num_classes: usize,
    /// Values per image the layers with parameters output (see `memory.rs`).
    pub kept_per_image: usize,
}

/// A recorded training-mode forward pass: the logits and what every layer's vjp and jvp need.
pub struct Tape {
    pub logits: Tensor<2>,
    record: Box<dyn Recorded>,
}

/// What a forward pass produced.
pub struct ForwardOutput {
    pub logits: Tensor<2>,
    pub stats: Vec<BatchStats>,
}

/// The network's `[n, classes, 1, 1]` output as `[n, classes]`.
fn logits(y: Tensor<4>) -> Tensor<2> {
    let [n, k, _, _] = y.dims();
    y.reshape([n, k])
}

impl Network {
    /// Builds the network of `config` for `num_classes` classes, or says which line of the
    /// config is wrong and why.
    pub fn new(config: &ModelConfig, num_classes: usize) -> Result<Self, String> {
        let mut b = Builder::default();
        let mut shape = Shape {
            channels: CHANNELS,
            height: IMAGE_SIDE,
            width: IMAGE_SIDE,
        };
        let mut layers: Vec<Arc<dyn Layer>> = Vec::new();
        let mut flat: Vec<Arc<dyn Layer>> = Vec::new();
        for (s, stage) in config.stages.iter().enumerate() {
            if stage.layers.is_empty() && stage.residual.is_empty() {
                return Err(format!(
                    "model.stages[{s}] is empty: give it layers (and optionally a residual)"
                ));
            }
            let field = format!("model.stages[{s}]");
            let (sequence, output) = b.scoped(format!("stages.{s}.layers"), |b| {
                build_list(&stage.layers, &format!("{field}.layers"), shape, b)
            })?;
            if !sequence.layers.is_empty() {
                flat.extend(sequence.layers.iter().cloned());
                layers.push(Arc::new(sequence));
            }
            shape = output;
            if !stage.residual.is_empty() {
                let (branch, output) = b.scoped(format!("stages.{s}.residual"), |b| {
                    build_list(&stage.residual, &format!("{field}.residual"), shape, b)
                })?;
                let block = b
                    .scoped(format!("stages.{s}"), |b| {
                        Residual::new(branch, shape, output, b)
                    })
                    .map_err(|e| format!("{field}.residual: {e}"))?;
                let block: Arc<dyn Layer> = Arc::new(block);
                flat.push(block.clone());
                layers.push(block);
                shape = output;
            }
        }
        if !shape.is_vector() {
            return Err(format!(
                "model.stages: the last stage ends with {shape}; end it with \"flatten\" or a \
                 global pool (\"global-max-pool\", \"global-avg-pool\") for the classifier"
            ));
        }
        let scale = config.logit_scale;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(format!(
                "model.logit_scale = {scale}: expected a positive number"
            ));
        }
        let classifier = b.scoped("classifier", |b| {
            Linear::declare(b, shape, num_classes, true)
        })?;
        let mut tail: Vec<Arc<dyn Layer>> = vec![Arc::new(classifier)];
        if scale != 1.0 {
            tail.push(Arc::new(Scale(scale)));
        }
        flat.extend(tail.iter().cloned());
        layers.extend(tail);
        Ok(Self {
            body: Sequence { layers },
            flat,
            params: b.params,
            buffers: b.buffers,
            param_inits: b.param_inits,
            buffer_inits: b.buffer_inits,
            num_classes,
            kept_per_image: b.kept_per_image,
        })
    }

    /// Initial parameters and buffers as each layer declared them, drawn on the host from
    /// `seed` (one stream per parameter tensor) so that every backend starts from the same
    /// weights.
    pub fn init(&self, seed: u64, device: &Device) -> (Tensor<1>, Tensor<1>) {
        let fill = |layout: &Layout, inits: &[Init], stream: u64| {
            let mut values = vec![0f32; layout.total()];
            for (index, (entry, init)) in layout.entries().iter().zip(inits).enumerate() {
                let slot = &mut values[entry.offset..entry.offset + entry.len()];
                match *init {
                    Init::Constant(c) => slot.fill(c),
                    Init::Uniform { fan_in } => {
                        let bound = 1.0 / (fan_in as f64).sqrt();
                        let mut rng = Rng::derive(seed, &[stream, index as u64]);
                        for v in slot.iter_mut() {
                            *v = ((rng.next_f64() * 2.0 - 1.0) * bound) as f32;
                        }
                    }
                }
            }
            from_host(values, device)
        };
        (
            fill(&self.params, &self.param_inits, 0x1A17),
            fill(&self.buffers, &self.buffer_inits, 0xB0FF),
        )
    }

    /// Forward pass from split parameter and buffer vectors (see `Layout::split`).
    pub fn forward(
        &self,
        images: Tensor<4>,
        params: &[Tensor<1>],
        buffers: &[Tensor<1>],
        mode: Mode,
    ) -> ForwardOutput {
        let mut pass = Pass {
            params,
            buffers,
            mode,
            stats: Vec::new(),
        };
        let y = self.body.forward(images, &mut pass);
        ForwardOutput {
            logits: logits(y),
            stats: pass.stats,
        }
    }

    /// Training-mode forward pass that records each layer for `backprop` and `tangent`.
    pub fn forward_recorded(&self, images: Tensor<4>, params: &[Tensor<1>]) -> Tape {
        let (y, record) = self.body.record(images, params);
        Tape {
            logits: logits(y),
            record,
        }
    }

    /// Our own backprop: the gradient of the loss with respect to every parameter tensor (in
    /// layout order) from the gradient with respect to the logits, by the layers' `vjp`.
    /// With `squared`, also the per-position sums of squared gradients (see
    /// `Gradients::wants_squares`), at the mean-loss scale.
    pub fn backprop(
        &self,
        tape: &Tape,
        params: &[Tensor<1>],
        d_logits: Tensor<2>,
        squared: bool,
    ) -> (Vec<Tensor<1>>, Option<Vec<Tensor<1>>>) {
        let [n, k] = d_logits.dims();
        let mut grads = Gradients::new(self.params.entries().len(), squared, n);
        // The images have no parameters behind them: no input gradient.
        tape.record
            .vjp(params, d_logits.reshape([n, k, 1, 1]), &mut grads, false);
        grads.finish(params)
    }

    /// A backprop of `d_logits` that collects, instead of the gradient, every weight layer's
    /// Kronecker factors (with the inputs' moments where `with_inputs`) and the sums of
    /// squared per-position gradients (`Gradients::put_square`'s scale), in layout order.
    pub fn backprop_factors(
        &self,
        tape: &Tape,
        params: &[Tensor<1>],
        d_logits: Tensor<2>,
        with_inputs: bool,
    ) -> (Vec<LayerFactors>, Vec<Tensor<1>>) {
        let [n, k] = d_logits.dims();
        let mut grads =
            Gradients::new(self.params.entries().len(), true, n).with_factors(with_inputs);
        tape.record
            .vjp(params, d_logits.reshape([n, k, 1, 1]), &mut grads, false);
        let factors = grads.take_factors();
        let (_, squares) = grads.finish(params);
        (factors, squares.expect("the squares were asked for"))
    }

    /// Forward-mode tangent of the logits for parameter tangents `tangents` (split like the
    /// parameters), by the layers' `jvp` on a recorded pass. The images are constants.
    pub fn tangent(&self, tape: &Tape, params: &[Tensor<1>], tangents: &[Tensor<1>]) -> Tensor<2> {
        match tape.record.jvp(params, tangents, None) {
            Some(d) => logits(d),
            None => tape.logits.zeros_like(),
        }
    }

    /// The layers one by one, in order (a residual block as one): what a recorded pass
    /// through them computes is `forward_recorded`'s, layer by layer.
    pub fn layers(&self) -> &[Arc<dyn Layer>] {
        &self.flat
    }

    /// Batch-norm statistics of a recorded pass, for the running-statistics update.
    pub fn recorded_stats(&self, tape: &Tape) -> Vec<BatchStats> {
        let mut stats = Vec::new();
        tape.record.batch_stats(&mut stats);
        stats
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
            let (im, iv) = (s.running_mean, s.running_var);
            // Batch norm's statistics are in the dtype it computes in (f32 under half
            // precision): they join the buffers' (f64 in the tests).
            let dtype = parts[im].dtype();
            let mean = s.mean.clone().detach().inner().cast(dtype);
            let var = s
                .variance
                .clone()
                .detach()
                .inner()
                .cast(dtype)
                .mul_scalar(unbiased);
            parts[im] = parts[im].clone().mul_scalar(1.0 - momentum) + mean.mul_scalar(momentum);
            parts[iv] = parts[iv].clone().mul_scalar(1.0 - momentum) + var.mul_scalar(momentum);
        }
        self.buffers.join(parts)
    }

    /// A multi-line summary: parameter count, then a line per stage's layers, per residual
    /// block, and for the classifier.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "model: {} parameters in {} tensors",
            crate::support::words::group_thousands(self.params.total()),
            self.params.entries().len()
        );
        for layer in &self.body.layers {
            text += &format!("\n  {}", layer.describe());
        }
        text
    }
}
