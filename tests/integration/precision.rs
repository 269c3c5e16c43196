//! `train.precision`: SGD's and Adam's gradient in bf16 or f16 with f32 master weights, by
//! either route, against the f32 gradient; f16's dynamic loss scale; devices without the
//! arithmetic refused by name.

use burn::prelude::*;
use burn::tensor::DType;

use hftrain::config::{ModelConfig, Precision, StageConfig};
use hftrain::curvature::{LossAndGradient, NetworkObjective, loss_and_gradient};
use hftrain::device::{DeviceChoice, select};
use hftrain::params::from_host;
use hftrain::precision::{AfterGradient, Arithmetic, LossScale, MixedPrecision};

use crate::common::relative_error;
use crate::curvature::{Problem, networks, problem};

/// The first-order gradient of `p` in `arithmetic` by Burn's autodiff or by our backprop.
fn gradient(p: &Problem, by_backprop: bool, arithmetic: Arithmetic) -> LossAndGradient {
    let d = p.params.device();
    if by_backprop {
        let objective = NetworkObjective::new(&p.network, 0.0, 0.0, &d);
        objective.loss_and_gradient_by_backprop(&p.params, &p.batch, arithmetic)
    } else {
        let buffers = from_host(vec![0.0; p.network.buffers.total()], &d);
        loss_and_gradient(
            &p.network,
            &p.params,
            &buffers,
            p.batch.images.clone(),
            p.batch.labels.clone(),
            0.0,
            arithmetic,
        )
    }
}

/// Networks without kinks (GELU, average pooling) with batch norm and a residual block:
/// every value of their gradient moves smoothly with rounding.
fn smooth_networks() -> Vec<(&'static str, ModelConfig)> {
    vec![(
        "conv-bn-gelu, avg-pool, residual, linear",
        ModelConfig {
            stages: vec![
                StageConfig::new(&["conv 8", "batch-norm", "gelu", "avg-pool"]).with_residual(&[
                    "conv 8",
                    "batch-norm",
                    "gelu",
                ]),
                StageConfig::new(&["conv 8 stride=2", "batch-norm", "gelu", "global-avg-pool"]),
                StageConfig::new(&["flatten", "linear 16", "gelu"]),
            ],
            logit_scale: 1.0,
        },
    )]
}

#[test]
fn half_precision_gradients_are_the_f32_gradient_to_half_precision() {
    let d = Device::flex();
    let mut failures = Vec::new();
    // Smooth networks: each value of the gradient is a chain of a few layers' products and
    // sums rounded to the low dtype (flex sums in f32), so its relative error is a few unit
    // roundoffs (bf16 2^-8, f16 2^-11). Networks with kinks (ReLU, max-pooling): where a
    // ReLU's input or two max-pool candidates lie within rounding of each other, the low
    // precision pass takes the other side and whole entries move (measured up to 0.36 on
    // eight random images); the bound there only tells a right gradient from a wrong one,
    // which is off by order 1 or by the loss scale.
    let cases = smooth_networks()
        .into_iter()
        .map(|n| (n, 8.0))
        .chain(networks().into_iter().map(|n| (n, f64::INFINITY)));
    for ((name, model), roundoffs) in cases {
        let p = problem(&model, 5, 8, &d);
        let reference = gradient(&p, false, Arithmetic::FULL);
        let reference_loss = reference.loss.clone().into_scalar::<f64>();
        for (precision, roundoff) in [
            (Precision::Bf16, 2f64.powi(-8)),
            (Precision::F16, 2f64.powi(-11)),
        ] {
            let bound = (roundoffs * roundoff).min(0.5);
            let mixed = MixedPrecision::of(precision).unwrap();
            for by_backprop in [false, true] {
                let route = if by_backprop { "backprop" } else { "autodiff" };
                let out = mixed.gradient(|arithmetic| gradient(&p, by_backprop, arithmetic));
                assert_eq!(out.gradient.dtype(), DType::F32, "{name}: master gradient");
                assert_eq!(out.loss.dtype(), DType::F32, "{name}: the loss is f32's");
                let err = relative_error(&out.gradient, &reference.gradient);
                let loss_gap =
                    (out.loss.into_scalar::<f64>() - reference_loss).abs() / reference_loss.abs();
                println!(
                    "measured: {precision} {route:<8} {name:<52} gradient relative error {err:.1e} ({:.1} roundoffs), loss {loss_gap:.1e}",
                    err / roundoff
                );
                if err >= bound {
                    failures.push(format!("{name} {precision} {route}: gradient off by {err}"));
                }
                // Bit-for-bit f32 would mean nothing was computed in the low dtype.
                assert!(
                    err > 1e-6,
                    "{name} {precision} {route}: the f32 gradient ({err})"
                );
                assert!(
                    loss_gap < 4.0 * roundoff,
                    "{name} {precision} {route}: loss off by {loss_gap}"
                );
                assert_eq!(out.stats.len(), reference.stats.len(), "{name}");
                for (a, b) in out.stats.iter().zip(&reference.stats) {
                    let err = relative_error(&a.mean, &b.mean)
                        .max(relative_error(&a.variance, &b.variance));
                    if err >= bound {
                        failures.push(format!(
                            "{name} {precision} {route}: statistics off by {err}"
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn an_overflowing_f16_gradient_is_taken_again_at_a_lower_loss_scale() {
    let d = Device::flex();
    let (name, model) = &smooth_networks()[0];
    let p = problem(model, 6, 8, &d);
    let reference = gradient(&p, true, Arithmetic::FULL);
    for by_backprop in [true, false] {
        // 2^24 times the logits' gradient (about 0.1 / 8 here) is far past f16's largest
        // value (65504): the first gradients overflow, the loss does not.
        let start = 2f32.powi(24);
        let mixed = MixedPrecision::of(Precision::F16)
            .unwrap()
            .with_loss_scale(start);
        let out = mixed.gradient(|arithmetic| gradient(&p, by_backprop, arithmetic));
        let scale = mixed.loss_scale().unwrap();
        let err = relative_error(&out.gradient, &reference.gradient);
        println!(
            "measured: f16 from loss scale 2^24 on {name} (backprop {by_backprop}): settled at 2^{}, gradient relative error {err:.1e}",
            scale.log2()
        );
        assert!(scale < start, "the scale was not lowered: {scale}");
        assert!(
            scale >= 1.0 && scale.log2().fract() == 0.0,
            "a power of two: {scale}"
        );
        assert_eq!(
            hftrain::precision::finite([&out.loss, &out.gradient]),
            [true, true]
        );
        // What it settled on is the gradient at that scale, computed afresh.
        let again = gradient(
            &p,
            by_backprop,
            Arithmetic {
                low: Some(burn::tensor::FloatDType::F16),
                loss_scale: scale,
            },
        );
        assert_eq!(
            out.gradient.to_data().as_slice::<f32>().unwrap(),
            again.gradient.to_data().as_slice::<f32>().unwrap(),
            "backprop {by_backprop}: the retaken gradient is not the one at its scale"
        );
        // And it is the f32 gradient to f16's precision (the smooth network: 8 roundoffs,
        // as in the test above).
        assert!(err < 8.0 * 2f64.powi(-11), "gradient off by {err}");
    }

    // bf16 has f32's range: no loss scale at all.
    assert_eq!(
        MixedPrecision::of(Precision::Bf16).unwrap().loss_scale(),
        None
    );
    assert!(MixedPrecision::of(Precision::F32).is_none());
}

#[test]
fn the_loss_scale_follows_gradscalers_rule() {
    let mut scale = LossScale::new(LossScale::INITIAL);
    // Halved on each overflow, the gradient taken again.
    assert_eq!(scale.after(false), AfterGradient::Retake);
    assert_eq!(scale.scale, LossScale::INITIAL / 2.0);
    // Doubled after GROWTH_INTERVAL finite gradients in a row, not one sooner; an overflow
    // starts the count again.
    for _ in 0..LossScale::GROWTH_INTERVAL - 2 {
        assert_eq!(scale.after(true), AfterGradient::Use);
    }
    assert_eq!(scale.after(false), AfterGradient::Retake);
    assert_eq!(scale.scale, LossScale::INITIAL / 4.0);
    for _ in 0..LossScale::GROWTH_INTERVAL - 1 {
        scale.after(true);
    }
    assert_eq!(scale.scale, LossScale::INITIAL / 4.0);
    assert_eq!(scale.after(true), AfterGradient::Use);
    assert_eq!(scale.scale, LossScale::INITIAL / 2.0);
    // At scale 1 a non-finite gradient is the run diverging: used, for the loop to report.
    let mut one = LossScale::new(1.0);
    assert_eq!(one.after(false), AfterGradient::Use);
    assert_eq!(one.scale, 1.0);
    // A scale is a power of two (scaling is then exact), from 1 to 2^24.
    for bad in [0.0, 3.0, f32::INFINITY, f32::NAN, 2f32.powi(25)] {
        assert!(
            std::panic::catch_unwind(|| LossScale::new(bad)).is_err(),
            "accepted a loss scale of {bad}"
        );
    }
}

#[test]
fn a_device_without_the_arithmetic_is_refused_by_name() {
    let flex = select(DeviceChoice::Flex).unwrap();
    for precision in [Precision::Bf16, Precision::F16] {
        let mixed = MixedPrecision::on_device(
            precision,
            &flex.device,
            &flex.description,
            "train.precision",
        );
        assert!(mixed.unwrap().is_some(), "flex computes {precision}");
    }
    // WGSL has no bf16 type: wgpu (a GPU, or the software adapter installed wherever the
    // suite runs) cannot compute in it.
    let wgpu = select(DeviceChoice::Wgpu)
        .expect("the Vulkan software adapter (lavapipe, package mesa-vulkan-drivers) is installed");
    let err = MixedPrecision::on_device(
        Precision::Bf16,
        &wgpu.device,
        &wgpu.description,
        "train.precision",
    )
    .unwrap_err()
    .to_string();
    println!("measured: {err}");
    for needle in [
        "train.precision = \"bf16\"",
        &wgpu.description,
        "\"f32\"",
        "--features vulkan",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
}

/// Hessian-free's Gauss-Newton products in bf16 or f16 (`train.precision`): the f32 product
/// to a few unit roundoffs on smooth networks, whatever the scale of the direction (CG's
/// vectors shrink by orders of magnitude over a solve), with f32 in and out.
#[test]
fn half_precision_gauss_newton_products_are_the_f32_product_to_half_precision() {
    let d = Device::flex();
    let mut failures = Vec::new();
    // As for the gradient: smooth networks within a few roundoffs (each value is a chain of
    // a jvp and a vjp through a few layers, summed in f32); networks with kinks only "not
    // wrong" (a ReLU or max-pool choice that rounding flips moves whole entries).
    let cases = smooth_networks()
        .into_iter()
        .map(|n| (n, 8.0))
        .chain(networks().into_iter().map(|n| (n, f64::INFINITY)));
    for ((name, model), roundoffs) in cases {
        let p = problem(&model, 11, 8, &d);
        let objective = NetworkObjective::new(&p.network, 0.0, 5e-4, &d);
        let reference = objective.gauss_newton(&p.params, &p.batch);
        let direction = crate::common::random_tensor::<1>(12, [p.network.params.total()], &d);
        for (precision, roundoff) in [
            (Precision::Bf16, 2f64.powi(-8)),
            (Precision::F16, 2f64.powi(-11)),
        ] {
            let bound = (roundoffs * roundoff).min(0.5);
            let low = precision.low_dtype();
            let operator = objective.gauss_newton_in(&p.params, &p.batch, low);
            // A direction of CG's first iterations and one of its last: f16 alone would
            // flush the second's entries (about 1e-9) to zero.
            for scale in [1.0f32, 1e-9] {
                let v = direction.clone().mul_scalar(scale);
                let out = operator.product(&v);
                assert_eq!(out.dtype(), DType::F32, "{name}: the product is f32's");
                let err = relative_error(&out, &reference.product(&v));
                println!(
                    "measured: {precision} Gv {name:<52} scale {scale:.0e}: relative error {err:.1e} ({:.1} roundoffs)",
                    err / roundoff
                );
                if err >= bound {
                    failures.push(format!("{name} {precision} scale {scale}: Gv off by {err}"));
                }
                assert!(err > 1e-7, "{name} {precision}: the f32 product ({err})");
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
