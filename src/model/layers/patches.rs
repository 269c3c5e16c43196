//! A convolution as a matrix product: the patches its kernel reads, one row per output
//! position (im2col), times the weight as a matrix. hftrain writes the convolution's vjp and
//! jvp itself, so it can take this road where it is faster than Burn's convolution kernels:
//!
//! - Burn computes a convolution's weight gradient as a convolution batched over the *input
//!   channels*. For an RGB network's first layer that is a batch of 3, and on flex it took
//!   2.3 times the layer's forward pass. As one product of the output's gradient with the
//!   patches it is a fraction of that (BENCHMARKS.md, "Where flex's time goes").
//! - A Gauss-Newton CG solve applies the curvature to one recorded pass about 20 times: the
//!   patches of each layer's input are then made once, and every product's weight gradient
//!   and parameter tangent is one matrix product.
//!
//! The patches hold `kernel^2` copies of the input, so they are made only where they fit a
//! budget. Built from Burn's differentiable tensor ops (`unfold`, `permute`, `matmul`), so
//! the Hessian-vector product's second backprop goes through them.

use std::sync::OnceLock;

use burn::prelude::*;
use burn::tensor::ops::PadMode;

/// The most memory one layer's patches may take (they live as long as its record).
const BUDGET_BYTES: usize = 256 << 20;

/// The most input channels for which the patches pay on first use: Burn's weight gradient
/// batches over the input channels, which leaves too little work per call when there are
/// few of them (3 for images; measured on flex: 3 -> 32 channels 2.3 x faster, 32 -> 64
/// channels no faster).
pub const FEW_CHANNELS: usize = 4;

/// The patches of a recorded input: `[batch * out_h * out_w, in_channels * k * k]`, each row in
/// the weight's `[in, k, k]` order.
pub struct Patches {
    rows: Tensor<2>,
    batch: usize,
    out_hw: [usize; 2],
}

impl Patches {
    /// The patches of `x` under a `kernel` x `kernel` window at `stride`, `padding` zeros on
    /// every side.
    pub fn of(x: &Tensor<4>, kernel: usize, stride: usize, padding: usize) -> Self {
        let [n, c, _, _] = x.dims();
        let x = if padding > 0 {
            let p = padding;
            x.clone().pad((p, p, p, p), PadMode::Constant(0.0))
        } else {
            x.clone()
        };
        // Views of x: [n, c, oh, w, k], then [n, c, oh, ow, k, k]; one copy into rows.
        let windows: Tensor<5> = x.unfold(2, kernel, stride);
        let windows: Tensor<6> = windows.unfold(3, kernel, stride);
        let [_, _, oh, ow, _, _] = windows.dims();
        let rows = windows
            .permute([0, 2, 3, 1, 4, 5])
            .reshape([n * oh * ow, c * kernel * kernel]);
        Self {
            rows,
            batch: n,
            out_hw: [oh, ow],
        }
    }

    /// The rows: `[batch * out_h * out_w, in_channels * k * k]`.
    pub fn rows(&self) -> Tensor<2> {
        self.rows.clone()
    }

    /// Bytes the patches of an `input_dims` input would take in f32.
    pub fn bytes(input_dims: [usize; 4], out_hw: [usize; 2], kernel: usize) -> usize {
        let [n, c, _, _] = input_dims;
        n * out_hw[0] * out_hw[1] * c * kernel * kernel * std::mem::size_of::<f32>()
    }

    /// Whether patches of this size fit the budget and the device is one where they were
    /// measured to pay (Burn's CPU backends; wgpu keeps Burn's tuned kernels until the GPU
    /// campaign measures both). `HFTRAIN_CONV_PATCHES=on|off` overrides the device rule,
    /// for measuring.
    pub fn allowed(bytes: usize, device: &Device) -> bool {
        static OVERRIDE: OnceLock<Option<bool>> = OnceLock::new();
        let forced =
            OVERRIDE.get_or_init(|| match std::env::var("HFTRAIN_CONV_PATCHES").as_deref() {
                Ok("on") => Some(true),
                Ok("off") => Some(false),
                Ok(other) => {
                    log::warn!(
                        "HFTRAIN_CONV_PATCHES={other:?} is neither `on` nor `off`: ignored, so \
                         the device decides (unset it, or set on or off)"
                    );
                    None
                }
                Err(_) => None,
            });
        bytes <= BUDGET_BYTES
            && forced.unwrap_or_else(|| crate::device::keeps_tensors_in_host_memory(device))
    }

    /// The weight gradient `[out, in, k, k]` from the output's gradient `dy`: the sum over
    /// every output position of `dy` times its patch, one matrix product.
    pub fn weight_gradient(&self, dy: Tensor<4>, weight_dims: [usize; 4]) -> Tensor<4> {
        let [n, o, oh, ow] = dy.dims();
        let dy = dy.swap_dims(0, 1).reshape([o, n * oh * ow]);
        dy.matmul(self.rows.clone()).reshape(weight_dims)
    }

    /// The same for the elementwise squares of the patches and of `dy`: the sums of squared
    /// per-position gradients a diagonal preconditioner reads.
    pub fn squared_weight_gradient(&self, dy: Tensor<4>, weight_dims: [usize; 4]) -> Tensor<4> {
        let [n, o, oh, ow] = dy.dims();
        let dy = dy.powi_scalar(2).swap_dims(0, 1).reshape([o, n * oh * ow]);
        dy.matmul(self.rows.clone().powi_scalar(2))
            .reshape(weight_dims)
    }

    /// The convolution of the recorded input with `weight` `[out, in, k, k]` (no bias):
    /// `[batch, out, oh, ow]`, one product per image so that the result comes out in the
    /// `[batch, out, ...]` layout (a permuted one made every later elementwise op on flex
    /// slower than the product saved).
    pub fn convolve(&self, weight: Tensor<4>) -> Tensor<4> {
        let [o, c, kh, kw] = weight.dims();
        let [oh, ow] = self.out_hw;
        let weight: Tensor<3> = weight.reshape([1, o, c * kh * kw]);
        let rows: Tensor<3> = self
            .rows
            .clone()
            .reshape([self.batch, oh * ow, c * kh * kw]);
        weight
            .matmul(rows.swap_dims(1, 2))
            .reshape([self.batch, o, oh, ow])
    }
}
