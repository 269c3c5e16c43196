//! The layers' vjp and jvp, our backprop, the exact Hessian-vector product and the
//! Gauss-Newton product, checked where the numbers can be exact: f64 on Burn's CPU backend
//! (in a process of its own, see `common::flex_f64`), and f32 on wgpu against that.

use burn::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;

use hftrain::config::{ModelConfig, StageConfig};
use hftrain::curvature::{Batch, NetworkObjective, loss_and_gradient};
use hftrain::model::builder::Builder;
use hftrain::model::layer::{Gradients, Layer, Recorded, Shape};
use hftrain::model::layers::{LAYERS, Residual, build_list};
use hftrain::model::loss::cross_entropy_hessian_product;
use hftrain::model::spec::LayerSpec;
use hftrain::model::{Mode, Network};
use hftrain::params::{Layout, from_host, to_host};
use hftrain::precision::Arithmetic;

use crate::common::{
    assert_succeeded, flex_f64, random_tensor, relative_error, run_f64_tests_in_child,
};

#[test]
fn f64_tests_pass_in_their_own_process() {
    let measured = run_f64_tests_in_child();
    use std::io::Write;
    let mut err = std::io::stderr();
    for line in measured {
        let _ = writeln!(err, "{line}");
    }
}

// ---- one layer at a time ----

struct LayerCase {
    name: String,
    layer: Arc<dyn Layer>,
    params: Layout,
    input: [usize; 4],
}

fn shape_of(input: [usize; 4]) -> Shape {
    Shape {
        channels: input[1],
        height: input[2],
        width: input[3],
    }
}

/// A layer as a config line builds it, on an input of `input`'s shape.
fn layer_case(line: &str, input: [usize; 4]) -> LayerCase {
    let mut b = Builder::default();
    let (sequence, _) = build_list(&[line.to_string()], "test", shape_of(input), &mut b).unwrap();
    LayerCase {
        name: line.to_string(),
        layer: Arc::new(sequence),
        params: b.params,
        input,
    }
}

/// A residual block around `branch`, with a projection where the branch changes the shape.
fn residual_case(name: &str, branch: &[&str], input: [usize; 4]) -> LayerCase {
    let mut b = Builder::default();
    let lines: Vec<String> = branch.iter().map(|s| s.to_string()).collect();
    let (sequence, output) = build_list(&lines, "test", shape_of(input), &mut b).unwrap();
    let block = Residual::new(sequence, shape_of(input), output, &mut b).unwrap();
    LayerCase {
        name: name.to_string(),
        layer: Arc::new(block),
        params: b.params,
        input,
    }
}

/// Every layer kind of `LAYERS`, as config lines with the options that change its
/// arithmetic (stride, padding, windows that leave rows over), each on an input shape; a
/// new layer kind needs its lines here (`every_layer_kind_has_curvature_cases`).
const LAYER_LINES: &[(&str, [usize; 4])] = &[
    ("conv 3", [2, 2, 5, 5]),
    (
        "conv 3 kernel=5 stride=2 padding=1 bias=false",
        [2, 2, 7, 8],
    ),
    ("conv 4 padding=none", [2, 2, 6, 6]),
    ("batch-norm", [3, 3, 4, 4]),
    ("linear 4", [3, 6, 1, 1]),
    ("linear 4 bias=false", [3, 6, 1, 1]),
    ("relu", [2, 3, 4, 4]),
    ("gelu", [2, 3, 4, 4]),
    ("max-pool", [2, 2, 4, 6]),
    ("max-pool 3", [2, 2, 7, 7]),
    ("avg-pool", [2, 2, 4, 6]),
    ("avg-pool 2", [2, 2, 5, 7]),
    ("global-max-pool", [2, 3, 4, 4]),
    ("global-avg-pool", [2, 3, 4, 4]),
    ("flatten", [2, 3, 2, 2]),
    ("scale 0.5", [2, 2, 3, 3]),
];

/// Every line of `LAYER_LINES` as a layer, and both composites (the sequence wraps every
/// case).
fn layer_cases() -> Vec<LayerCase> {
    let mut cases: Vec<LayerCase> = LAYER_LINES
        .iter()
        .map(|&(line, input)| layer_case(line, input))
        .collect();
    cases.push(residual_case(
        "residual, identity shortcut",
        &["conv 2", "batch-norm", "gelu", "conv 2"],
        [2, 2, 4, 4],
    ));
    cases.push(residual_case(
        "residual, projection shortcut",
        &["conv 4 stride=2", "relu"],
        [2, 2, 6, 6],
    ));
    cases
}

/// The layer kinds the lines of `lines` build.
fn kinds_of<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    lines
        .into_iter()
        .map(|line| LayerSpec::parse(line).unwrap().kind)
        .collect()
}

#[test]
fn every_layer_kind_has_curvature_cases() {
    let registered: BTreeSet<&str> = LAYERS.iter().map(|(kind, _, _)| *kind).collect();
    let cased = kinds_of(LAYER_LINES.iter().map(|(line, _)| *line));
    let missing: Vec<_> = registered.difference(&cased).collect();
    assert!(
        missing.is_empty(),
        "layer kinds without a vjp/jvp case: {missing:?}; add their lines to LAYER_LINES in \
         tests/integration/curvature.rs"
    );
    let unknown: Vec<_> = cased.difference(&registered).collect();
    assert!(
        unknown.is_empty(),
        "cases of unknown layer kinds: {unknown:?}"
    );
    // The check sees a kind that has no case.
    assert!(!kinds_of(["relu", "conv 3"]).contains("gelu"));
}

/// The body of the Python function `def name(` in `script`: its lines up to the next one
/// indented no deeper than the `def`.
fn python_function<'a>(script: &'a str, name: &str) -> &'a str {
    let def = format!("def {name}(");
    let start = script
        .find(&def)
        .unwrap_or_else(|| panic!("no `{def}` in the script"));
    let line_start = script[..start].rfind('\n').map_or(0, |i| i + 1);
    let indent = start - line_start;
    let mut end = script.len();
    let mut at = start + script[start..].find('\n').unwrap_or(script.len() - start);
    while at < script.len() {
        let line = script[at + 1..].split('\n').next().unwrap_or("");
        let depth = line.len() - line.trim_start().len();
        if !line.trim().is_empty() && depth <= indent {
            end = at;
            break;
        }
        at += 1 + line.len();
    }
    &script[start..end]
}

#[test]
fn the_pytorch_reference_knows_every_layer_kind() {
    let script = std::fs::read_to_string(
        crate::common::repository_root().join("scripts/torch_reference.py"),
    )
    .unwrap();
    for function in ["plan_layers", "torch_layer"] {
        let body = python_function(&script, function);
        let missing: Vec<&str> = LAYERS
            .iter()
            .map(|(kind, _, _)| *kind)
            .filter(|kind| !body.contains(&format!("\"{kind}\"")))
            .collect();
        assert!(
            missing.is_empty(),
            "scripts/torch_reference.py's {function} does not handle the layer kinds \
             {missing:?}; add them there as src/model/layers/ computes them"
        );
    }
    // A function's body ends where the next statement as shallow as its `def` begins.
    let sample =
        "def f(x):\n    if x:\n        return \"relu\"\n\n    return 1\n\ndef g():\n    pass\n";
    assert_eq!(
        python_function(sample, "f"),
        "def f(x):\n    if x:\n        return \"relu\"\n\n    return 1\n"
    );
}

fn flat<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n = t.shape().num_elements();
    t.reshape([n])
}

fn layer_output(case: &LayerCase, x: Tensor<4>, params: &[Tensor<1>]) -> Tensor<4> {
    case.layer.record(x, params).0
}

fn random_params(case: &LayerCase, seed: u64, d: &Device) -> Vec<Tensor<1>> {
    case.params
        .entries()
        .iter()
        .enumerate()
        .map(|(j, e)| random_tensor(seed * 10 + j as u64, [e.len()], d))
        .collect()
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_every_layer_vjp_equals_burn_autodiff() {
    let d = flex_f64();
    for (i, case) in layer_cases().into_iter().enumerate() {
        let seed = 100 + i as u64;
        let x = random_tensor(seed, case.input, &d);
        let params = random_params(&case, seed, &d);
        let (y, record) = case.layer.record(x.clone(), &params);
        let dy = random_tensor(seed + 7, y.dims(), &d);
        let mut grads = Gradients::new(params.len(), false, case.input[0]);
        let dx = record.vjp(&params, dy.clone(), &mut grads, true).unwrap();
        let (grads, _) = grads.finish(&params);

        // Burn's autodiff of <forward(x, params), dy>.
        let x_leaf = x.clone().autodiff().require_grad();
        let leaves: Vec<Tensor<1>> = params
            .iter()
            .map(|p| p.clone().autodiff().require_grad())
            .collect();
        let y = layer_output(&case, x_leaf.clone(), &leaves);
        let grads_ad = (flat(y) * flat(dy)).sum().backward();
        let err = relative_error(&flat(dx), &flat(x_leaf.grad(&grads_ad).unwrap()));
        println!(
            "measured: vjp input  {:<48} relative error {err:.1e}",
            case.name
        );
        assert!(err < 1e-12, "{}: input gradient off by {err}", case.name);
        for (index, g) in grads.iter().enumerate() {
            let reference = leaves[index].grad(&grads_ad).unwrap();
            let err = relative_error(g, &reference);
            println!(
                "measured: vjp param  {:<48} relative error {err:.1e}",
                case.name
            );
            assert!(
                err < 1e-12,
                "{}: parameter {index} gradient off by {err}",
                case.name
            );
        }
    }
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_every_layer_jvp_equals_central_differences() {
    let d = flex_f64();
    let eps = 1e-6;
    for (i, case) in layer_cases().into_iter().enumerate() {
        let seed = 200 + i as u64;
        let x = random_tensor(seed, case.input, &d);
        let dx = random_tensor(seed + 1, case.input, &d);
        let params = random_params(&case, seed, &d);
        let tangents = random_params(&case, seed + 50, &d);
        let (_, record) = case.layer.record(x.clone(), &params);
        let jvp = flat(record.jvp(&params, &tangents, Some(dx.clone())).unwrap());
        let shifted = |sign: f64| {
            let p: Vec<Tensor<1>> = params
                .iter()
                .zip(&tangents)
                .map(|(p, t)| p.clone() + t.clone().mul_scalar(sign * eps))
                .collect();
            let x = x.clone() + dx.clone().mul_scalar(sign * eps);
            flat(layer_output(&case, x, &p))
        };
        let fd = (shifted(1.0) - shifted(-1.0)).div_scalar(2.0 * eps);
        let err = relative_error(&jvp, &fd);
        println!(
            "measured: jvp        {:<48} relative error {err:.1e}",
            case.name
        );
        assert!(err < 1e-6, "{}: jvp off by {err}", case.name);
    }
}

/// A convolution as patches times a matrix (hftrain's road where Burn's kernels are slow)
/// computes what Burn's convolution computes: the forward pass, the weight gradient, and
/// the weight gradient of squares (the preconditioner's), with stride and padding.
#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_convolution_by_patches_equals_burn_convolution() {
    use burn::tensor::module::{conv2d, conv2d_weight_backward};
    use burn::tensor::ops::ConvOptions;
    use hftrain::model::layers::patches::Patches;
    let d = flex_f64();
    // (input, out channels, kernel, stride, padding)
    let cases = [
        ([2, 3, 7, 8], 4, 3, 1, 1),
        ([2, 2, 9, 9], 3, 5, 2, 1),
        ([3, 4, 6, 6], 5, 3, 1, 0),
    ];
    for (i, (input, out, k, stride, padding)) in cases.into_iter().enumerate() {
        let seed = 300 + 10 * i as u64;
        let x = random_tensor(seed, input, &d);
        let w = random_tensor(seed + 1, [out, input[1], k, k], &d);
        let options = ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1);
        let y = conv2d(x.clone(), w.clone(), None, options.clone());
        let dy = random_tensor(seed + 2, y.dims(), &d);
        let patches = Patches::of(&x, k, stride, padding);
        let name = format!("{input:?} -> {out}, kernel {k} stride {stride} padding {padding}");

        let err = relative_error(&patches.convolve(w.clone()), &y);
        println!("measured: patches forward      {name:<44} relative error {err:.1e}");
        assert!(err < 1e-12, "{name}: forward off by {err}");

        let reference = conv2d_weight_backward(x.clone(), w.clone(), dy.clone(), options.clone());
        let err = relative_error(&patches.weight_gradient(dy.clone(), w.dims()), &reference);
        println!("measured: patches weight grad  {name:<44} relative error {err:.1e}");
        assert!(err < 1e-12, "{name}: weight gradient off by {err}");

        let squares = conv2d_weight_backward(
            x.clone().powi_scalar(2),
            w.clone(),
            dy.clone().powi_scalar(2),
            options,
        );
        let err = relative_error(&patches.squared_weight_gradient(dy, w.dims()), &squares);
        println!("measured: patches squares      {name:<44} relative error {err:.1e}");
        assert!(err < 1e-12, "{name}: squared weight gradient off by {err}");
    }
}

/// Max-pooling by hftrain's loops over host memory (flex, untracked inputs) gives exactly
/// what Burn's pooling gives: the same maxima, the same window choices (the first maximum
/// of a window; a NaN wins), the same vjp (Burn's own backward) and the same jvp (a gather
/// at Burn's indices). Inputs with many ties (few distinct values, zeros after a ReLU), a
/// NaN, windows that leave rows and columns over, and a global window.
fn check_host_max_pool_against_burn(d: &Device) {
    use burn::tensor::module::{max_pool2d_with_indices, max_pool2d_with_indices_backward};
    use burn::tensor::ops::MaxPoolOptions;
    use hftrain::model::layers::host;
    let values = |t: Tensor<4>| -> Vec<f64> { t.into_data().iter::<f64>().collect() };
    let same = |a: &[f64], b: &[f64]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
    };
    // (input, window, seed)
    let cases = [
        ([2, 3, 7, 8], [2, 2], 500),
        ([2, 2, 7, 7], [3, 3], 510),
        ([3, 2, 6, 4], [2, 2], 520),
        ([2, 3, 5, 6], [5, 6], 530),
    ];
    for (input, kernel, seed) in cases {
        // Five levels: ties in most windows; in every other case the negative ones clipped to
        // zero as a ReLU would, so that whole windows tie at zero.
        let x = random_tensor(seed, input, d)
            .mul_scalar(2.0)
            .round()
            .div_scalar(2.0);
        let x = if seed % 20 == 0 { x.clamp_min(0.0) } else { x };
        let mut host: Vec<f32> = values(x).into_iter().map(|v| v as f32).collect();
        // The first window of the first plane: two NaNs (the last one wins) and a larger
        // number after them (a NaN still wins).
        let width = input[3];
        host[0] = f32::NAN;
        host[1] = f32::NAN;
        host[width] = 5.0;
        let x = from_host(host, d).reshape(input);
        let name = format!("{input:?} window {kernel:?}");
        assert!(host::applies(&x), "{name}: the loops do not apply");

        let options = MaxPoolOptions::new(kernel).with_stride(kernel);
        let (y_burn, indices) = max_pool2d_with_indices(x.clone(), options.clone());
        let (y, choices) = host::pool_keeping_choices(x.clone(), kernel);
        assert!(
            same(&values(y), &values(y_burn.clone())),
            "{name}: maxima differ"
        );
        let ours: Vec<i64> = choices.indices().into_data().iter::<i64>().collect();
        let burns: Vec<i64> = indices.clone().into_data().iter::<i64>().collect();
        assert_eq!(ours, burns, "{name}: window choices differ");

        let dy = random_tensor(seed + 1, y_burn.dims(), d);
        let reference = max_pool2d_with_indices_backward(
            x.clone(),
            kernel,
            kernel,
            [0, 0],
            [1, 1],
            false,
            dy.clone(),
            indices.clone(),
        );
        assert!(
            choices.applies_to(&dy),
            "{name}: the loops do not apply to dy"
        );
        assert!(
            same(&values(choices.spread(dy)), &values(reference)),
            "{name}: vjp differs"
        );

        let dx = random_tensor(seed + 2, input, d);
        let [n, c, h, w] = input;
        let [_, _, oh, ow] = y_burn.dims();
        let reference = dx
            .clone()
            .reshape([n, c, h * w])
            .gather(2, indices.reshape([n, c, oh * ow]))
            .reshape([n, c, oh, ow]);
        assert!(
            same(&values(choices.pick(dx)), &values(reference)),
            "{name}: jvp differs"
        );
        println!("measured: host max-pool {name:<32} equal to Burn's (maxima, choices, vjp, jvp)");
    }

    // A record made by the loops answers a tracked gradient or tangent (as Hv's double
    // backprop would ask) by Burn's differentiable ops at the same choices.
    let case = layer_case("max-pool", [2, 3, 7, 8]);
    let x = random_tensor(550, case.input, d);
    let (y, record) = case.layer.record(x.clone(), &[]);
    let dy = random_tensor(551, y.dims(), d);
    let dx = random_tensor(552, case.input, d);
    let mut grads = Gradients::new(0, false, case.input[0]);
    let untracked = record.vjp(&[], dy.clone(), &mut grads, true).unwrap();
    let tracked = record
        .vjp(&[], dy.autodiff().require_grad(), &mut grads, true)
        .unwrap();
    assert!(tracked.is_tracked(), "the tracked gradient lost its tape");
    assert!(
        same(&values(untracked), &values(tracked.inner())),
        "tracked vjp differs"
    );
    let untracked = record.jvp(&[], &[], Some(dx.clone())).unwrap();
    let tracked = record
        .jvp(&[], &[], Some(dx.autodiff().require_grad()))
        .unwrap();
    assert!(
        same(&values(untracked), &values(tracked.inner())),
        "tracked jvp differs"
    );
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_max_pool_by_host_loops_equals_burn_max_pool() {
    check_host_max_pool_against_burn(&flex_f64());
}

#[test]
fn max_pool_by_host_loops_equals_burn_max_pool_in_f32() {
    check_host_max_pool_against_burn(&Device::flex());
}

/// A recorded convolution answers every vjp and jvp alike however often it is asked: a
/// layer with many input channels runs Burn's kernels on a record's first use and the patches
/// from its second (a CG solve's repeated products), one with few channels on an input no
/// gradient flows into takes the patches from its recorded pass. Two records of one layer,
/// asked in opposite orders, so that each product is made both ways.
#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_conv_record_gives_the_same_products_on_every_use() {
    let d = flex_f64();
    for (i, (line, input)) in [
        ("conv 5 kernel=3 stride=2 padding=1", [2, 6, 9, 9]),
        ("conv 4 kernel=5 padding=1 bias=true", [2, 3, 7, 7]),
    ]
    .into_iter()
    .enumerate()
    {
        let case = layer_case(line, input);
        let seed = 400 + 10 * i as u64;
        let x = random_tensor(seed, input, &d);
        let dx = random_tensor(seed + 1, input, &d);
        let params = random_params(&case, seed, &d);
        let tangents = random_params(&case, seed + 5, &d);
        let dy = random_tensor(seed + 2, case.layer.record(x.clone(), &params).0.dims(), &d);
        let vjp = |record: &dyn Recorded| {
            let mut grads = Gradients::new(params.len(), true, input[0]);
            let dx = record.vjp(&params, dy.clone(), &mut grads, true).unwrap();
            let (grads, squares) = grads.finish(&params);
            let mut all = vec![flat(dx)];
            all.extend(grads);
            all.extend(squares.unwrap());
            all
        };
        let jvp =
            |record: &dyn Recorded| flat(record.jvp(&params, &tangents, Some(dx.clone())).unwrap());
        // vjp first, then jvp; and jvp first, then vjp; then each once more.
        let (_, a) = case.layer.record(x.clone(), &params);
        let (_, b) = case.layer.record(x.clone(), &params);
        let (vjp_first, jvp_second) = (vjp(a.as_ref()), jvp(a.as_ref()));
        let (jvp_first, vjp_second) = (jvp(b.as_ref()), vjp(b.as_ref()));
        let (vjp_third, jvp_third) = (vjp(a.as_ref()), jvp(b.as_ref()));
        let worst = |x: &[Tensor<1>], y: &[Tensor<1>]| {
            x.iter()
                .zip(y)
                .map(|(a, b)| relative_error(a, b))
                .fold(0.0, f64::max)
        };
        let vjp_err = worst(&vjp_second, &vjp_first).max(worst(&vjp_third, &vjp_first));
        let jvp_err =
            relative_error(&jvp_second, &jvp_first).max(relative_error(&jvp_third, &jvp_first));
        println!(
            "measured: record reuse {line:<36} first use against later ones: vjp {vjp_err:.1e}, jvp {jvp_err:.1e}"
        );
        assert!(
            vjp_err < 1e-12,
            "{line}: vjp changed with its use by {vjp_err}"
        );
        assert!(
            jvp_err < 1e-12,
            "{line}: jvp changed with its use by {jvp_err}"
        );
    }
}

// ---- whole networks ----

fn model(stages: Vec<StageConfig>, logit_scale: f32) -> ModelConfig {
    ModelConfig {
        stages,
        logit_scale,
    }
}

/// Networks that together hold every layer kind and both composites (the fourth all but
/// global average pooling in one chain, which a chain cannot hold beside global max-pooling): ReLU and max-pool
/// (kinks), GELU and average pooling (smooth, so the exact Hessian has second-derivative
/// terms the Gauss-Newton matrix leaves out), residual blocks with and without projection,
/// unpadded convolutions, flatten and a hidden linear layer.
pub(crate) fn networks() -> Vec<(&'static str, ModelConfig)> {
    vec![
        (
            "conv-bn-relu, max-pool, residual, global max, scale",
            model(
                vec![
                    StageConfig::new(&["conv 4", "batch-norm", "relu", "max-pool"]).with_residual(
                        &[
                            "conv 4",
                            "batch-norm",
                            "relu",
                            "conv 4",
                            "batch-norm",
                            "relu",
                        ],
                    ),
                    StageConfig::new(&["conv 6", "batch-norm", "relu", "max-pool"]),
                    StageConfig::new(&["global-max-pool"]),
                ],
                0.5,
            ),
        ),
        (
            "gelu, avg-pool, projected residual, global avg",
            model(
                vec![
                    StageConfig::new(&["conv 4", "gelu", "avg-pool"])
                        .with_residual(&["conv 6 stride=2", "gelu"]),
                    // 8x8 in 3x3 windows: rows and columns left over, under double backprop.
                    StageConfig::new(&["avg-pool 3", "global-avg-pool"]),
                ],
                1.0,
            ),
        ),
        (
            "one network with (nearly) every kind in one chain",
            model(
                vec![
                    StageConfig::new(&[
                        "conv 4 kernel=5 stride=2 padding=2",
                        "batch-norm",
                        "gelu",
                        "max-pool",
                    ])
                    .with_residual(&[
                        "conv 4",
                        "batch-norm",
                        "relu",
                        "conv 4",
                    ]),
                    StageConfig::new(&["conv 6 padding=none", "relu", "avg-pool 2"])
                        .with_residual(&["conv 8 stride=2", "gelu"]),
                    StageConfig::new(&[
                        "global-max-pool",
                        "flatten",
                        "linear 5 bias=false",
                        "gelu",
                        "scale 0.5",
                    ]),
                ],
                1.0,
            ),
        ),
        (
            "unpadded convs, flatten, hidden linear",
            model(
                vec![StageConfig::new(&[
                    "conv 3 padding=none",
                    "relu",
                    "max-pool",
                    "conv 4 padding=none",
                    "relu",
                    "max-pool",
                    "flatten",
                    "linear 5",
                    "relu",
                ])],
                1.0,
            ),
        ),
    ]
}

fn softmax_regression() -> ModelConfig {
    model(vec![StageConfig::new(&["flatten"])], 1.0)
}

pub(crate) struct Problem {
    pub(crate) network: Network,
    pub(crate) params: Tensor<1>,
    pub(crate) batch: Batch,
}

pub(crate) fn problem(model: &ModelConfig, seed: u64, n: usize, d: &Device) -> Problem {
    let network = Network::new(model, 10).unwrap();
    let (params, _) = network.init(seed, d);
    let images = random_tensor(seed + 1, [n, 3, 32, 32], d);
    let labels: Vec<i64> = (0..n)
        .map(|i| ((i * 7 + seed as usize) % 10) as i64)
        .collect();
    let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), d);
    Problem {
        network,
        params,
        batch: Batch { images, labels },
    }
}

fn direction(p: &Problem, seed: u64, d: &Device) -> Tensor<1> {
    random_tensor(seed, [p.network.params.total()], d)
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_our_backprop_equals_burn_autodiff_gradient() {
    let d = flex_f64();
    // Without label smoothing the two agree to rounding (measured 1e-15). With it they differ
    // near 1e-9 (measured 9.4e-10), only through the smoothing term's scalars, hence the
    // looser bound there.
    for (smoothing, bound) in [(0.0, 1e-12), (0.1, 1e-8)] {
        for (name, model) in networks() {
            let p = problem(&model, 3, 6, &d);
            let objective = NetworkObjective::new(&p.network, smoothing, 0.0, &d);
            let ours = objective.gradient(&p.params, &p.batch, false);
            let buffers = from_host(vec![0.0; p.network.buffers.total()], &d);
            let reference = loss_and_gradient(
                &p.network,
                &p.params,
                &buffers,
                p.batch.images.clone(),
                p.batch.labels.clone(),
                smoothing,
                Arithmetic::FULL,
            );
            let err = relative_error(&ours.gradient, &reference.gradient);
            let loss_gap = (ours.loss.into_scalar::<f64>()
                - reference.loss.clone().into_scalar::<f64>())
            .abs();
            println!(
                "measured: gradient   {name:<42} smoothing {smoothing}: relative error {err:.1e}, loss gap {loss_gap:.1e}"
            );
            assert!(err < bound, "{name}: gradient off by {err}");
            assert!(loss_gap < 1e-12, "{name}: loss off by {loss_gap}");

            // The same through the first-order route (`train.gradient = "backprop"`), with
            // what the training loop reads besides: the correct count and batch norm's
            // batch statistics, which update its running averages.
            let first_order =
                objective.loss_and_gradient_by_backprop(&p.params, &p.batch, Arithmetic::FULL);
            let err = relative_error(&first_order.gradient, &reference.gradient);
            assert!(err < bound, "{name}: first-order gradient off by {err}");
            let loss_gap = (first_order.loss.into_scalar::<f64>()
                - reference.loss.clone().into_scalar::<f64>())
            .abs();
            assert!(
                loss_gap < 1e-12,
                "{name}: first-order loss off by {loss_gap}"
            );
            assert_eq!(
                first_order.correct.into_scalar::<i64>(),
                reference.correct.clone().into_scalar::<i64>(),
                "{name}: correct count"
            );
            assert_eq!(first_order.stats.len(), reference.stats.len(), "{name}");
            for (a, b) in first_order.stats.iter().zip(&reference.stats) {
                let err =
                    relative_error(&a.mean, &b.mean).max(relative_error(&a.variance, &b.variance));
                assert!(err < 1e-12, "{name}: batch statistics off by {err}");
                assert_eq!(
                    (a.running_mean, a.running_var, a.count),
                    (b.running_mean, b.running_var, b.count)
                );
            }
        }
    }
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_hessian_vector_equals_central_differences_and_is_symmetric() {
    let d = flex_f64();
    // Small: the gradient jumps where a ReLU or a max-pool's argmax switches, and a central
    // difference must not straddle such a kink (f64 keeps the rounding error near 1e-9).
    let eps = 1e-7;
    for (name, model) in networks() {
        let p = problem(&model, 5, 4, &d);
        let objective = NetworkObjective::new(&p.network, 0.1, 5e-4, &d);
        let v = direction(&p, 11, &d);
        let hv = objective.hessian_vector(&p.params, &p.batch, &v);
        let g = |sign: f64| {
            objective
                .gradient(
                    &(p.params.clone() + v.clone().mul_scalar(sign * eps)),
                    &p.batch,
                    false,
                )
                .gradient
        };
        let fd = (g(1.0) - g(-1.0)).div_scalar(2.0 * eps);
        let err = relative_error(&hv, &fd);
        let u = direction(&p, 12, &d);
        let hu = objective.hessian_vector(&p.params, &p.batch, &u);
        let uhv = (u * hv).sum().into_scalar::<f64>();
        let vhu = (v * hu).sum().into_scalar::<f64>();
        let asym = (uhv - vhu).abs() / uhv.abs().max(vhu.abs());
        println!(
            "measured: Hv vs FD   {name:<42} relative error {err:.1e}; u'Hv {uhv:.6e} v'Hu {vhu:.6e} (gap {asym:.1e})"
        );
        assert!(err <= 1e-6, "{name}: Hv off by {err}");
        assert!(asym < 1e-10, "{name}: H is not symmetric: {uhv} vs {vhu}");
    }
}

/// `J^T H_L J v` assembled independently: `J v` by central differences of the logits, then
/// Burn's autodiff for `J^T`.
fn gauss_newton_reference(
    p: &Problem,
    objective: &NetworkObjective,
    v: &Tensor<1>,
    d: &Device,
) -> Tensor<1> {
    let net = &p.network;
    let logits = |params: &Tensor<1>| {
        net.forward(
            p.batch.images.clone(),
            &net.params.split(params),
            &[],
            Mode::Train,
        )
        .logits
    };
    let eps = 1e-6;
    let jv = (logits(&(p.params.clone() + v.clone().mul_scalar(eps)))
        - logits(&(p.params.clone() - v.clone().mul_scalar(eps))))
    .div_scalar(2.0 * eps);
    let probs = burn::tensor::activation::softmax(logits(&p.params), 1);
    let hjv = cross_entropy_hessian_product(&probs, jv);
    let leaves: Vec<Tensor<1>> = net
        .params
        .split(&p.params)
        .into_iter()
        .map(|t| t.autodiff().require_grad())
        .collect();
    let out = net
        .forward(p.batch.images.clone(), &leaves, &[], Mode::Train)
        .logits;
    let grads = (out * hjv).sum().backward();
    let parts = leaves.iter().map(|l| l.grad(&grads).unwrap()).collect();
    net.params.join(parts)
        + v.clone()
            .mul(net.params.decay_mask(d))
            .mul_scalar(objective.weight_decay)
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_gauss_newton_is_jt_hl_j_and_positive_semidefinite() {
    let d = flex_f64();
    for (name, model) in networks() {
        let p = problem(&model, 7, 6, &d);
        let objective = NetworkObjective::new(&p.network, 0.0, 5e-4, &d);
        let gn = objective.gauss_newton(&p.params, &p.batch);
        let v = direction(&p, 21, &d);
        let gv = gn.product(&v);
        let err = relative_error(&gv, &gauss_newton_reference(&p, &objective, &v, &d));
        let mut smallest = f64::INFINITY;
        for k in 0..5 {
            let v = direction(&p, 30 + k, &d);
            let vgv = (v.clone() * gn.product(&v)).sum().into_scalar::<f64>();
            smallest = smallest.min(vgv);
        }
        println!(
            "measured: Gv         {name:<42} vs J^T H_L J v (FD + autodiff) {err:.1e}; min v'Gv over 5 v {smallest:.3e}"
        );
        assert!(err < 1e-6, "{name}: Gv off by {err}");
        assert!(smallest >= 0.0, "{name}: v'Gv = {smallest} < 0");
    }
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_gauss_newton_equals_hessian_for_softmax_regression() {
    let d = flex_f64();
    let p = problem(&softmax_regression(), 9, 8, &d);
    // Label smoothing and weight decay included: neither breaks the equality.
    let objective = NetworkObjective::new(&p.network, 0.1, 1e-3, &d);
    let gn = objective.gauss_newton(&p.params, &p.batch);
    for k in 0..3 {
        let v = direction(&p, 40 + k, &d);
        let err = relative_error(
            &gn.product(&v),
            &objective.hessian_vector(&p.params, &p.batch, &v),
        );
        println!(
            "measured: Gv vs Hv   softmax regression, direction {k}: relative error {err:.1e}"
        );
        assert!(err < 1e-12, "Gv differs from Hv by {err}");
    }
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_wgpu_products_in_f32_match_the_f64_result() {
    let d64 = flex_f64();
    let wgpu = hftrain::device::select(hftrain::device::DeviceChoice::WgpuCpu)
        .expect("the wgpu software adapter (lavapipe, package mesa-vulkan-drivers) is installed")
        .device;
    let (name, model) = networks().remove(0);
    let p64 = problem(&model, 13, 4, &d64);
    let host = |t: &Tensor<1>| to_host(t);
    let params = host(&p64.params);
    let images: Vec<f32> = p64
        .batch
        .images
        .to_data()
        .iter::<f64>()
        .map(|x| x as f32)
        .collect();
    let labels: Vec<i64> = p64.batch.labels.to_data().iter::<i64>().collect();
    let v64 = direction(&p64, 51, &d64);
    let v = host(&v64);

    let network = Network::new(&model, 10).unwrap();
    let n = labels.len();
    let batch = Batch {
        images: Tensor::<4>::from_data(TensorData::new(images, [n, 3, 32, 32]), &wgpu),
        labels: Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &wgpu),
    };
    let params32 = from_host(params, &wgpu);
    let v32 = from_host(v, &wgpu);
    let objective32 = NetworkObjective::new(&network, 0.1, 5e-4, &wgpu);
    let objective64 = NetworkObjective::new(&p64.network, 0.1, 5e-4, &d64);
    let compare = |label: &str, a: Tensor<1>, b: Tensor<1>| {
        let a = from_host(to_host(&a), &d64);
        let err = relative_error(&a, &b);
        println!("measured: wgpu f32   {label} ({name}) vs flex f64: relative error {err:.1e}");
        assert!(err < 1e-4, "{label}: wgpu f32 off the f64 result by {err}");
    };
    compare(
        "gradient",
        objective32.gradient(&params32, &batch, false).gradient,
        objective64
            .gradient(&p64.params, &p64.batch, false)
            .gradient,
    );
    compare(
        "Hv",
        objective32.hessian_vector(&params32, &batch, &v32),
        objective64.hessian_vector(&p64.params, &p64.batch, &v64),
    );
    compare(
        "Gv",
        objective32.gauss_newton(&params32, &batch).product(&v32),
        objective64
            .gauss_newton(&p64.params, &p64.batch)
            .product(&v64),
    );
}

// ---- the inspection command ----

/// A safetensors file's tensors: name -> (shape, values as f64).
pub(crate) type Tensors = std::collections::BTreeMap<String, (Vec<usize>, Vec<f64>)>;

/// Reads a safetensors file's F32/I64 tensors and metadata.
pub(crate) fn read_safetensors(path: &std::path::Path) -> (Tensors, serde_json::Value) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "the header is padded to 8 bytes");
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut tensors = std::collections::BTreeMap::new();
    let mut covered = 0;
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let range: Vec<usize> = info["data_offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let raw = &data[range[0]..range[1]];
        covered += raw.len();
        let values: Vec<f64> = match info["dtype"].as_str().unwrap() {
            "F32" => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            "I64" => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            other => panic!("unexpected dtype {other}"),
        };
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "{name}: shape and byte range agree"
        );
        tensors.insert(name.clone(), (shape, values));
    }
    assert_eq!(
        covered,
        data.len(),
        "the byte ranges cover the data exactly"
    );
    (tensors, header["__metadata__"].clone())
}

#[test]
fn curvature_command_writes_products_another_framework_can_check() {
    let data = crate::common::synthetic_binary();
    let mut config = crate::common::small_config(&data, "flex");
    // A residual network with a projected shortcut: its names and layouts are PyTorch's, as
    // scripts/torch_reference.py builds the model from the same config.
    config.model.stages = vec![
        StageConfig::new(&["conv 8", "batch-norm", "relu", "max-pool"]).with_residual(&[
            "conv 12 stride=2",
            "batch-norm",
            "gelu",
        ]),
        StageConfig::new(&["global-avg-pool"]),
    ];
    config.data.train_limit = 100;
    config.data.test_limit = 50;
    config.train.epochs = 1;
    let dir = crate::common::TempDir::new();
    let run = dir.path().join("run");
    hftrain::train::run(hftrain::train::TrainRequest {
        config: Some(config.clone()),
        out_dir: Some(run.clone()),
        ..Default::default()
    })
    .unwrap();
    let file = dir.path().join("products.safetensors");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args([
            "curvature",
            "--checkpoint",
            run.join("checkpoints/latest").to_str().unwrap(),
            "--batch",
            "8",
            "--seed",
            "3",
        ])
        .args([
            "--out",
            file.to_str().unwrap(),
            "--device",
            "flex",
            "--repeats",
            "1",
            "--data",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_succeeded(&out);
    for line in [
        "gradient",
        "Hessian-vector",
        "Gauss-Newton-vector",
        "x gradient",
    ] {
        assert!(stdout.contains(line), "timings lack {line:?}:\n{stdout}");
    }
    let (tensors, metadata) = read_safetensors(&file);
    assert!(
        metadata["definition"]
            .as_str()
            .unwrap()
            .contains("training mode")
    );
    let network = Network::new(&config.model, 10).unwrap();
    let config_file = dir.path().join("residual.toml");
    std::fs::write(&config_file, config.to_toml()).unwrap();
    let torch_names: Vec<String> = crate::networks::torch_reference_parameters(&config_file)
        .into_iter()
        .filter(|(kind, _, _)| kind == "param")
        .map(|(_, name, _)| name)
        .collect();
    assert!(torch_names.contains(&"stages.0.shortcut.weight".to_string()));
    let file_names: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("params."))
        .map(str::to_string)
        .collect();
    let mut sorted = torch_names.clone();
    sorted.sort();
    assert_eq!(
        file_names, sorted,
        "the file names the PyTorch model's parameters"
    );
    for prefix in ["params", "v", "grad", "hv", "gv"] {
        for e in network.params.entries() {
            let (shape, _) = &tensors[&format!("{prefix}.{}", e.name)];
            assert_eq!(shape, &e.shape, "{prefix}.{} has PyTorch's layout", e.name);
        }
    }
    assert_eq!(tensors["images"].0, vec![8, 3, 32, 32]);
    assert_eq!(tensors["labels"].0, vec![8]);

    // Check the file against Burn's own autodiff on the data it holds.
    let d = Device::flex();
    let join = |prefix: &str| {
        let values: Vec<f32> = network
            .params
            .entries()
            .iter()
            .flat_map(|e| {
                tensors[&format!("{prefix}.{}", e.name)]
                    .1
                    .iter()
                    .map(|&x| x as f32)
            })
            .collect();
        from_host(values, &d)
    };
    let images = from_host(tensors["images"].1.iter().map(|&x| x as f32).collect(), &d)
        .reshape([8, 3, 32, 32]);
    let labels = Tensor::<1, Int>::from_data(
        TensorData::new(
            tensors["labels"]
                .1
                .iter()
                .map(|&x| x as i64)
                .collect::<Vec<_>>(),
            [8],
        ),
        &d,
    );
    let buffers = from_host(vec![0.0; network.buffers.total()], &d);
    let reference = loss_and_gradient(
        &network,
        &join("params"),
        &buffers,
        images,
        labels,
        config.train.label_smoothing,
        Arithmetic::FULL,
    );
    // Two f32 code paths (our backprop in the child, Burn's autodiff here) that sum in
    // different orders: their gap is rounding, growing with the square root of the longest
    // sum (the first convolution's weight gradient, 8 channels x 32 x 32 terms per weight).
    // A wrong gradient is off by order 1.
    let f32_eps = f32::EPSILON as f64;
    let gradient_tolerance = 8.0 * (8.0 * 32.0 * 32.0f64).sqrt() * f32_eps;
    let err = relative_error(&join("grad"), &reference.gradient);
    assert!(
        err < gradient_tolerance,
        "the file's gradient is off Burn's autodiff by {err} (f32 resolves {gradient_tolerance:.1e})"
    );
    let reference_loss = reference.loss.into_scalar::<f64>();
    let loss_gap = (tensors["loss"].1[0] - reference_loss).abs();
    let loss_tolerance = 64.0 * f32_eps * reference_loss.abs().max(1.0);
    assert!(
        loss_gap < loss_tolerance,
        "loss off by {loss_gap} (f32 resolves {loss_tolerance:.1e})"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "measured: curvature file vs Burn's autodiff (f32): gradient {err:.1e} (tolerance \
         {gradient_tolerance:.1e}), loss gap {loss_gap:.1e}"
    );
    let v = join("v");
    assert_eq!(
        to_host(&v),
        to_host(&hftrain::params::seeded_direction(
            network.params.total(),
            3,
            &d
        )),
        "v is the seeded direction"
    );
    let vgv = (v.clone() * join("gv")).sum().into_scalar::<f64>();
    let vhv = (v * join("hv")).sum().into_scalar::<f64>();
    assert!(vgv > 0.0 && vhv.is_finite(), "v'Gv = {vgv}, v'Hv = {vhv}");
}
