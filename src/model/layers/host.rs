//! Plain Rust loops over the tensors' memory, on the backends whose tensors live in this
//! process's memory (flex, ndarray), for the layer steps where Burn's CPU kernels measured
//! slow (BENCHMARKS.md, "Where flex's time goes"), each a single pass over the memory.
//!
//! - Max-pooling over non-overlapping windows (window = stride, no padding: the only kind
//!   hftrain's `max-pool` and `global-max-pool` have). Flex's `max_pool2d_with_indices` and
//!   the scatter that takes a gradient back through its indices each took about 190 ms for
//!   the small CNN's first pooling at batch 1000 (28.8 million inputs), a quarter of a
//!   gradient. The same arithmetic as flex's kernel: each window's first maximum wins, a NaN
//!   wins over any number (the last NaN of a window), and the choice is kept as the flat
//!   index of the chosen input in its `h * w` plane, as Burn's indices are.
//!
//! Reading a tensor this way is free only where its memory is already in row-major order: a
//! convolution's output on flex is not (it is a view of its matrix product), and reading it
//! copies it. ReLU's recorded pass in one loop (output and derivative) was slower for that
//! reason (164-183 ms against 71-75 ms on the small CNN's first layer at batch 1000).
//!
//! Only for inputs no gradient is tracked through (our own backprop and curvature products,
//! evaluation; Hv's double backprop and Burn's autodiff keep Burn's differentiable ops) and
//! for f32 and f64.

use burn::prelude::*;
use burn::tensor::{DType, Element, TensorData};
use rayon::prelude::*;

/// The value types the loops are written for (`Default` is their zero).
trait Value: Element + Copy + PartialOrd + Default + Send + Sync {}
impl Value for f32 {}
impl Value for f64 {}

/// Whether `x` can go through these loops: not tracked by Burn's autodiff, f32 or f64, on a
/// backend whose tensors are in host memory.
pub fn applies(x: &Tensor<4>) -> bool {
    !x.is_tracked()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && crate::device::keeps_tensors_in_host_memory(&x.device())
}

/// Which input of every window held its maximum: `[n, c, oh, ow]` flat indices into the
/// input's `h * w` planes.
pub struct WindowChoices {
    chosen: Box<[u32]>,
    input_dims: [usize; 4],
    output_dims: [usize; 4],
    dtype: DType,
    device: Device,
}

/// The maximum of each `kernel` window of `x` (the caller checked [`applies`]).
pub fn pool(x: Tensor<4>, kernel: [usize; 2]) -> Tensor<4> {
    pool_keeping_choices(x, kernel).0
}

/// The maximum of each `kernel` window of `x` and where it was (the caller checked
/// [`applies`]).
pub fn pool_keeping_choices(x: Tensor<4>, kernel: [usize; 2]) -> (Tensor<4>, WindowChoices) {
    debug_assert!(applies(&x));
    let (device, dtype, input_dims) = (x.device(), x.dtype(), x.dims());
    let [n, c, h, w] = input_dims;
    let output_dims = [n, c, h / kernel[0], w / kernel[1]];
    let (y, chosen) = match dtype {
        DType::F64 => {
            let (y, chosen) = pool_planes(values::<f64>(&x.into_data()), input_dims, kernel);
            (tensor(y, output_dims, &device, dtype), chosen)
        }
        DType::F32 => {
            let (y, chosen) = pool_planes(values::<f32>(&x.into_data()), input_dims, kernel);
            (tensor(y, output_dims, &device, dtype), chosen)
        }
        dtype => unreachable!("the host loops admit f32 and f64 only, not {dtype:?}"),
    };
    let choices = WindowChoices {
        chosen: chosen.into_boxed_slice(),
        input_dims,
        output_dims,
        dtype,
        device,
    };
    (y, choices)
}

impl WindowChoices {
    /// Whether `t` can go through the loops with these choices.
    pub fn applies_to(&self, t: &Tensor<4>) -> bool {
        applies(t) && t.dtype() == self.dtype
    }

    /// The vjp: each window's gradient `dy` `[n, c, oh, ow]` goes to the input that was its
    /// maximum, zero elsewhere (the caller checked [`Self::applies_to`]).
    pub fn spread(&self, dy: Tensor<4>) -> Tensor<4> {
        debug_assert!(self.applies_to(&dy));
        self.in_own_dtype(
            dy,
            self.input_dims,
            |dy| self.spread_planes(dy),
            |dy| self.spread_planes(dy),
        )
    }

    /// The jvp: each window's chosen input of the tangent `dx` `[n, c, h, w]` (the caller
    /// checked [`Self::applies_to`]).
    pub fn pick(&self, dx: Tensor<4>) -> Tensor<4> {
        debug_assert!(self.applies_to(&dx));
        self.in_own_dtype(
            dx,
            self.output_dims,
            |dx| self.pick_planes(dx),
            |dx| self.pick_planes(dx),
        )
    }

    /// A tensor of `dims` from the values of `t` by the loop for the record's dtype.
    fn in_own_dtype(
        &self,
        t: Tensor<4>,
        dims: [usize; 4],
        f32_loop: impl FnOnce(&[f32]) -> Vec<f32>,
        f64_loop: impl FnOnce(&[f64]) -> Vec<f64>,
    ) -> Tensor<4> {
        let data = t.into_data();
        match self.dtype {
            DType::F64 => tensor(f64_loop(values(&data)), dims, &self.device, self.dtype),
            DType::F32 => tensor(f32_loop(values(&data)), dims, &self.device, self.dtype),
            dtype => unreachable!("the host loops admit f32 and f64 only, not {dtype:?}"),
        }
    }

    /// The choices as Burn's `max_pool2d_with_indices` gives them, for the differentiable
    /// road (a tracked gradient or tangent).
    pub fn indices(&self) -> Tensor<4, Int> {
        let chosen: Vec<i64> = self.chosen.iter().map(|&i| i64::from(i)).collect();
        Tensor::from_data(TensorData::new(chosen, self.output_dims), &self.device)
    }

    fn spread_planes<T: Value>(&self, dy: &[T]) -> Vec<T> {
        let [_, _, h, w] = self.input_dims;
        let [_, _, oh, ow] = self.output_dims;
        let mut dx = vec![T::default(); self.input_dims.iter().product()];
        dx.par_chunks_mut(h * w)
            .zip(dy.par_chunks(oh * ow))
            .zip(self.chosen.par_chunks(oh * ow))
            .for_each(|((plane, dy), chosen)| {
                // Windows do not overlap: each input receives at most one gradient.
                for (&at, &g) in chosen.iter().zip(dy) {
                    plane[at as usize] = g;
                }
            });
        dx
    }

    fn pick_planes<T: Value>(&self, dx: &[T]) -> Vec<T> {
        let [_, _, h, w] = self.input_dims;
        let [_, _, oh, ow] = self.output_dims;
        let mut dy = vec![T::default(); self.output_dims.iter().product()];
        dy.par_chunks_mut(oh * ow)
            .zip(dx.par_chunks(h * w))
            .zip(self.chosen.par_chunks(oh * ow))
            .for_each(|((out, plane), chosen)| {
                for (o, &at) in out.iter_mut().zip(chosen) {
                    *o = plane[at as usize];
                }
            });
        dy
    }
}

/// Each plane's window maxima and the flat index of each one's input.
fn pool_planes<T: Value>(x: &[T], dims: [usize; 4], kernel: [usize; 2]) -> (Vec<T>, Vec<u32>) {
    match kernel {
        // The common window with its size known to the compiler, so that its loops unroll.
        [2, 2] => pool_planes_by(x, dims, Fixed::<2, 2>),
        _ => pool_planes_by(x, dims, kernel),
    }
}

/// A window's size, known when the code is compiled (`Fixed`) or only when it runs.
trait Window: Copy + Send + Sync {
    fn size(self) -> [usize; 2];
}

impl Window for [usize; 2] {
    fn size(self) -> [usize; 2] {
        self
    }
}

#[derive(Clone, Copy)]
struct Fixed<const H: usize, const W: usize>;

impl<const H: usize, const W: usize> Window for Fixed<H, W> {
    fn size(self) -> [usize; 2] {
        [H, W]
    }
}

fn pool_planes_by<T: Value, K: Window>(x: &[T], dims: [usize; 4], window: K) -> (Vec<T>, Vec<u32>) {
    let [n, c, h, w] = dims;
    let [kh, kw] = window.size();
    let (oh, ow) = (h / kh, w / kw);
    assert!(
        h * w <= u32::MAX as usize,
        "a {h}x{w} plane is too large to pool"
    );
    let mut y = vec![T::default(); n * c * oh * ow];
    let mut chosen = vec![0u32; n * c * oh * ow];
    y.par_chunks_mut(oh * ow)
        .zip(chosen.par_chunks_mut(oh * ow))
        .zip(x.par_chunks(h * w))
        .for_each(|((y, chosen), plane)| {
            // Asked here, inside the loop's own code, so that a `Fixed` size is a constant.
            let [kh, kw] = window.size();
            for i in 0..oh {
                for j in 0..ow {
                    let first = i * kh * w + j * kw;
                    let (mut best, mut at) = (plane[first], first);
                    for a in 0..kh {
                        let row = first + a * w;
                        for (b, &v) in plane[row..row + kw].iter().enumerate() {
                            // `v != v`: a NaN, which wins as in Burn's kernel. Without
                            // branches: which input wins is data, not a pattern a branch
                            // predictor learns.
                            #[allow(clippy::eq_op)]
                            let take = (v > best) | (v != v);
                            best = if take { v } else { best };
                            at = if take { row + b } else { at };
                        }
                    }
                    y[i * ow + j] = best;
                    chosen[i * ow + j] = at as u32;
                }
            }
        });
    (y, chosen)
}

/// The values of a tensor read in place (a tensor's memory on flex is aligned for SIMD, so
/// turning it into a `Vec` would copy it).
fn values<T: Value>(data: &TensorData) -> &[T] {
    data.as_slice::<T>()
        .expect("a host tensor of a checked dtype reads as a slice of it")
}

fn tensor<T: Value>(values: Vec<T>, dims: [usize; 4], device: &Device, dtype: DType) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values, dims), (device, dtype))
}
