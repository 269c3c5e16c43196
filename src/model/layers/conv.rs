//! 2-D convolution: `"conv C [kernel=K] [stride=S] [padding=same|none|P] [bias=true|false]"`.
//! Weight `[C, in, K, K]` as in PyTorch. Defaults: kernel 3, stride 1, padding `same` (K/2,
//! the map keeps its size at stride 1), and a bias unless batch norm follows (its mean
//! subtraction would cancel it).

use std::cell::{Cell, OnceCell};
use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::module::{conv_transpose2d, conv2d, conv2d_weight_backward};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};

use super::patches::{FEW_CHANNELS, Patches};
use crate::model::builder::{Builder, Init};
use crate::model::layer::{
    BatchStats, Gradients, Layer, LayerFactors, Pass, Recorded, Shape, add_tangents, channel_sum,
    kronecker_factors, per_channel, reshape,
};
use crate::model::spec::LayerSpec;

pub const USAGE: &str = "conv C [kernel=3] [stride=1] [padding=same|none|P] [bias=true|false]";

#[derive(Debug, Clone, Copy)]
pub struct Conv {
    weight: usize,
    bias: Option<usize>,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

pub fn build(
    spec: &mut LayerSpec,
    input: Shape,
    b: &mut Builder,
) -> Result<(Arc<dyn Layer>, Shape), String> {
    let out_channels: usize = spec.required("output channels")?;
    let kernel: usize = spec.number("kernel", 3)?;
    let stride: usize = spec.number("stride", 1)?;
    let padding = spec.option("padding");
    let followed_by_batch_norm = b.next_kind.as_deref() == Some("batch-norm");
    let bias = spec.flag("bias", !followed_by_batch_norm)?;
    spec.finish(USAGE)?;
    if !(1..=8192).contains(&out_channels) {
        return Err(format!(
            "{out_channels} output channels: expected 1 to 8192"
        ));
    }
    // Bounded before any arithmetic on them: a kernel wider than the map padded on both
    // sides, or a stride longer than the map, cannot be meant.
    let side = input.height.max(input.width);
    for (name, value, most) in [("kernel", kernel, 2 * side + 1), ("stride", stride, side)] {
        if value == 0 || value > most {
            return Err(format!("{name}={value}: expected 1 to {most} on {input}"));
        }
    }
    let padding = match padding {
        None | Some("same") => {
            if kernel.is_multiple_of(2) {
                return Err(format!(
                    "padding=same needs an odd kernel (got kernel={kernel}); give padding=P"
                ));
            }
            kernel / 2
        }
        Some("none") => 0,
        Some(text) => match text.parse::<usize>() {
            Ok(p) if p < kernel => p,
            Ok(p) => {
                return Err(format!(
                    "padding={p}: expected less than the kernel ({kernel})"
                ));
            }
            Err(_) => return Err(format!("padding={text}: expected same, none or a number")),
        },
    };
    let conv = Conv::declare(b, input, out_channels, kernel, stride, padding, bias)?;
    let output = conv.output_shape(input);
    Ok((Arc::new(conv), output))
}

impl Conv {
    /// Declares the weight (and bias) of a convolution from `input` and checks that the
    /// kernel fits. Also used for a residual block's projection.
    pub fn declare(
        b: &mut Builder,
        input: Shape,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Self, String> {
        let side = input.height.min(input.width) + 2 * padding;
        if kernel > side {
            return Err(format!(
                "a {kernel}x{kernel} kernel does not fit {input} with padding {padding}"
            ));
        }
        let fan_in = input.channels * kernel * kernel;
        let shape = [out_channels, input.channels, kernel, kernel];
        let weight = b.param("weight", &shape, true, Init::Uniform { fan_in });
        let bias = bias.then(|| b.param("bias", &[out_channels], false, Init::Uniform { fan_in }));
        Ok(Self {
            weight,
            bias,
            in_channels: input.channels,
            out_channels,
            kernel,
            stride,
            padding,
        })
    }

    pub fn output_shape(&self, input: Shape) -> Shape {
        let side = |s: usize| (s + 2 * self.padding - self.kernel) / self.stride + 1;
        Shape {
            channels: self.out_channels,
            height: side(input.height),
            width: side(input.width),
        }
    }

    fn options(&self) -> ConvOptions<2> {
        ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], 1)
    }

    fn weight(&self, flat: &[Tensor<1>]) -> Tensor<4> {
        reshape(&flat[self.weight], self.weight_dims())
    }

    fn apply(&self, x: Tensor<4>, params: &[Tensor<1>]) -> Tensor<4> {
        let bias = self.bias.map(|b| params[b].clone());
        conv2d(x, self.weight(params), bias, self.options())
    }

    /// The convolution, through the patches of `x` where they pay at once (and the patches,
    /// which the record keeps for its vjp), else by Burn's kernel. Through
    /// the patches, Burn's autodiff (SGD, Adam) differentiates a matrix product, not the
    /// convolution whose weight gradient is slow for few input channels; the recorded pass and the
    /// plain one compute alike, so rho compares like with like.
    fn forward_keeping_patches(
        &self,
        x: Tensor<4>,
        params: &[Tensor<1>],
    ) -> (Tensor<4>, Option<Patches>) {
        if self.patches_pay_at_once(&x) && self.patches_allowed(&x) {
            let patches = Patches::of(&x, self.kernel, self.stride, self.padding);
            let y = self.add_bias(patches.convolve(self.weight(params)), params);
            return (y, Some(patches));
        }
        (self.apply(x, params), None)
    }

    fn add_bias(&self, y: Tensor<4>, params: &[Tensor<1>]) -> Tensor<4> {
        match self.bias {
            Some(b) => y + per_channel(params[b].clone()),
            None => y,
        }
    }

    /// Few input channels (an RGB network's first layer) and an input no gradient flows back
    /// into: Burn's weight gradient is slow there, and the patches pay from their first use.
    /// (Burn's autodiff takes the gradient of the patches back to a tracked input window by
    /// window, which is slow.)
    fn patches_pay_at_once(&self, x: &Tensor<4>) -> bool {
        self.in_channels <= FEW_CHANNELS && !x.is_tracked()
    }

    /// Whether the patches of `x` fit the budget on its device.
    fn patches_allowed(&self, x: &Tensor<4>) -> bool {
        let dims = x.dims();
        let out = self.output_shape(Shape {
            channels: dims[1],
            height: dims[2],
            width: dims[3],
        });
        Patches::allowed(
            Patches::bytes(dims, [out.height, out.width], self.kernel),
            &x.device(),
        )
    }

    fn weight_dims(&self) -> [usize; 4] {
        let k = self.kernel;
        [self.out_channels, self.in_channels, k, k]
    }

    /// The parameters' gradients from the input `x` (or its patches) and the output's
    /// gradient `dy`.
    fn param_gradients(
        &self,
        x: Tensor<4>,
        patches: Option<&Patches>,
        dy: Tensor<4>,
        params: &[Tensor<1>],
    ) -> (Tensor<4>, Option<Tensor<1>>) {
        let dw = match patches {
            Some(patches) => patches.weight_gradient(dy.clone(), self.weight_dims()),
            // Burn reads only the weight's shape here (its value takes no part).
            None => conv2d_weight_backward(x, self.weight(params), dy.clone(), self.options()),
        };
        (dw, self.bias.map(|_| channel_sum(dy)))
    }
}

impl Layer for Conv {
    fn describe(&self) -> String {
        let k = self.kernel;
        let mut text = format!("conv {k}x{k} {} -> {}", self.in_channels, self.out_channels);
        if self.stride != 1 {
            text += &format!(" stride {}", self.stride);
        }
        if self.padding != k / 2 {
            text += &format!(" padding {}", self.padding);
        }
        if self.bias.is_some() {
            text += " (bias)";
        }
        text
    }

    fn forward(&self, x: Tensor<4>, pass: &mut Pass) -> Tensor<4> {
        self.forward_keeping_patches(x, pass.params).0
    }

    fn record(&self, x: Tensor<4>, params: &[Tensor<1>]) -> (Tensor<4>, Box<dyn Recorded>) {
        let (y, patches) = self.forward_keeping_patches(x.clone(), params);
        let made = OnceCell::new();
        if let Some(patches) = patches {
            let _ = made.set(Some(patches));
        }
        (
            y,
            Box::new(ConvRecord {
                conv: *self,
                input: x,
                patches: made,
                uses: Cell::new(0),
            }),
        )
    }
}

struct ConvRecord {
    conv: Conv,
    input: Tensor<4>,
    /// The input's patches once made (`None` where they do not fit or do not pay here).
    patches: OnceCell<Option<Patches>>,
    /// vjp and jvp calls on this record so far.
    uses: Cell<usize>,
}

impl ConvRecord {
    /// The recorded input's patches, where they pay: made by the recorded pass for a layer
    /// with few input channels (Burn's weight gradient is slow there), from the second use
    /// on otherwise (a CG solve's repeated products on one record; a plain gradient uses a
    /// record once and keeps Burn's kernels). Made once, within the memory budget.
    fn patches(&self) -> Option<&Patches> {
        let uses = self.uses.get() + 1;
        self.uses.set(uses);
        if let Some(made) = self.patches.get() {
            return made.as_ref();
        }
        let c = &self.conv;
        if !c.patches_pay_at_once(&self.input) && uses < 2 {
            return None;
        }
        self.patches
            .get_or_init(|| {
                c.patches_allowed(&self.input)
                    .then(|| Patches::of(&self.input, c.kernel, c.stride, c.padding))
            })
            .as_ref()
    }
}

impl ConvRecord {
    /// KFC's factors (Grosse and Martens 2016): the patches' moment (made here where the
    /// record keeps none) and the output gradients', every output position an observation.
    fn factors(&self, patches: Option<&Patches>, dy: Tensor<4>, with_inputs: bool) -> LayerFactors {
        let c = &self.conv;
        let [n, o, oh, ow] = dy.dims();
        let output_rows = dy.permute([0, 2, 3, 1]).reshape([n * oh * ow, o]);
        let rows = with_inputs.then(|| match patches {
            Some(patches) => patches.rows(),
            None => Patches::of(&self.input, c.kernel, c.stride, c.padding).rows(),
        });
        let (inputs, outputs) = kronecker_factors(rows, output_rows, n, c.bias.is_some());
        LayerFactors {
            weight: c.weight,
            bias: c.bias,
            inputs,
            outputs,
        }
    }
}

impl Recorded for ConvRecord {
    fn vjp(
        &self,
        params: &[Tensor<1>],
        dy: Tensor<4>,
        grads: &mut Gradients,
        need_input: bool,
    ) -> Option<Tensor<4>> {
        let c = &self.conv;
        let patches = self.patches();
        let (dw, db) = c.param_gradients(self.input.clone(), patches, dy.clone(), params);
        grads.put(c.weight, dw);
        if let (Some(index), Some(db)) = (c.bias, db) {
            grads.put(index, db);
        }
        if grads.wants_squares() {
            let squared = |t: Tensor<4>| t.powi_scalar(2);
            let (dw2, db2) = match patches {
                Some(patches) => (
                    patches.squared_weight_gradient(dy.clone(), c.weight_dims()),
                    c.bias.map(|_| channel_sum(squared(dy.clone()))),
                ),
                None => c.param_gradients(
                    squared(self.input.clone()),
                    None,
                    squared(dy.clone()),
                    params,
                ),
            };
            grads.put_square(c.weight, dw2);
            if let (Some(index), Some(db2)) = (c.bias, db2) {
                grads.put_square(index, db2);
            }
        }
        if let Some(with_inputs) = grads.wants_factors() {
            grads.put_factors(self.factors(patches, dy.clone(), with_inputs));
        }
        need_input.then(|| {
            // The transpose of the convolution. With a stride, several input sizes give one
            // output size: `padding_out` restores the recorded one.
            let [_, _, h, w] = self.input.dims();
            let [_, _, oh, ow] = dy.dims();
            let covered =
                |o: usize| ((o - 1) * c.stride + c.kernel) as isize - 2 * c.padding as isize;
            let rest = |size: usize, o: usize| (size as isize - covered(o)) as usize;
            let options = ConvTransposeOptions::new(
                [c.stride; 2],
                [c.padding; 2],
                [rest(h, oh), rest(w, ow)],
                [1, 1],
                1,
            );
            conv_transpose2d(dy, c.weight(params), None, options)
        })
    }

    fn jvp(
        &self,
        params: &[Tensor<1>],
        tangents: &[Tensor<1>],
        dx: Option<Tensor<4>>,
    ) -> Option<Tensor<4>> {
        // Linear in both arguments: conv(x, dW) + db + conv(dx, W).
        let c = &self.conv;
        let from_params = match self.patches() {
            Some(patches) => c.add_bias(patches.convolve(c.weight(tangents)), tangents),
            None => c.apply(self.input.clone(), tangents),
        };
        let from_input = dx.map(|dx| conv2d(dx, c.weight(params), None, c.options()));
        add_tangents(Some(from_params), from_input)
    }

    fn batch_stats(&self, _: &mut Vec<BatchStats>) {}
}
