//! Building a network: each layer declares its parameters and buffers here (name, shape,
//! whether weight decay applies, how it starts), under the PyTorch-style name of where it
//! sits (`stages.1.residual.0.weight`), and the builder follows the activation's shape.

use crate::params::Layout;

/// How a parameter or buffer starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Uniform in +-1/sqrt(fan_in): PyTorch's default for convolution and linear weights
    /// (Kaiming uniform with a = sqrt(5)) and biases.
    Uniform {
        fan_in: usize,
    },
    Constant(f32),
}

#[derive(Debug, Default)]
pub struct Builder {
    pub params: Layout,
    pub buffers: Layout,
    pub param_inits: Vec<Init>,
    pub buffer_inits: Vec<Init>,
    /// Values per image that the layers output, each once (a lower bound on what a training
    /// step keeps for its backward pass; see `memory.rs`).
    pub kept_per_image: usize,
    /// The kind of the next layer in the same list (`conv` drops its bias before batch norm,
    /// whose mean subtraction would cancel it).
    pub next_kind: Option<String>,
    prefix: Vec<String>,
}

impl Builder {
    fn name(&self, last: &str) -> String {
        let mut parts = self.prefix.clone();
        parts.push(last.to_string());
        parts.join(".")
    }

    /// Declares a trainable parameter of the current layer; returns its index in the layout.
    pub fn param(&mut self, name: &str, shape: &[usize], decay: bool, init: Init) -> usize {
        self.param_inits.push(init);
        self.params.push(self.name(name), shape, decay)
    }

    /// Declares a buffer (updated by the layer's statistics, not trained).
    pub fn buffer(&mut self, name: &str, shape: &[usize], init: Init) -> usize {
        self.buffer_inits.push(init);
        self.buffers.push(self.name(name), shape, false)
    }

    /// Runs `f` with `segment` appended to the names of what it declares.
    pub fn scoped<T>(&mut self, segment: impl ToString, f: impl FnOnce(&mut Self) -> T) -> T {
        self.prefix.push(segment.to_string());
        let out = f(self);
        self.prefix.pop();
        out
    }
}
