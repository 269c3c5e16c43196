//! Every layer a config can name, one file each. Adding a layer: a new file here with its
//! `USAGE` and `build` and a `Layer` implementation (forward, record) whose record implements
//! `Recorded` (vjp, jvp), then one line in `LAYERS`.

pub mod avg_pool;
pub mod batch_norm;
pub mod conv;
pub mod flatten;
pub mod gelu;
pub mod host;
pub mod linear;
pub mod max_pool;
pub mod patches;
pub mod relu;
pub mod residual;
pub mod scale;
pub mod sequence;

use std::sync::Arc;

use super::builder::Builder;
use super::layer::{Layer, Shape};
use super::spec::LayerSpec;
pub use residual::Residual;
pub use sequence::Sequence;

/// Builds a layer from its line in the config, on an input of the given shape: the layer and
/// the shape of its output, or what is wrong with the line.
pub type Build = fn(&mut LayerSpec, Shape, &mut Builder) -> Result<(Arc<dyn Layer>, Shape), String>;

/// (kind, usage, build) of every layer.
pub const LAYERS: &[(&str, &str, Build)] = &[
    ("conv", conv::USAGE, conv::build),
    ("batch-norm", batch_norm::USAGE, batch_norm::build),
    ("relu", relu::USAGE, relu::build),
    ("gelu", gelu::USAGE, gelu::build),
    ("max-pool", max_pool::USAGE, max_pool::build),
    ("avg-pool", avg_pool::USAGE, avg_pool::build),
    (
        "global-max-pool",
        max_pool::GLOBAL_USAGE,
        max_pool::build_global,
    ),
    (
        "global-avg-pool",
        avg_pool::GLOBAL_USAGE,
        avg_pool::build_global,
    ),
    ("flatten", flatten::USAGE, flatten::build),
    ("linear", linear::USAGE, linear::build),
    ("scale", scale::USAGE, scale::build),
];

/// The usage line of every layer, for messages and the README.
pub fn usage() -> String {
    let lines: Vec<String> = LAYERS
        .iter()
        .map(|(_, usage, _)| format!("\"{usage}\""))
        .collect();
    lines.join(", ")
}

/// The layers of one list of the config (`field` names it in messages, e.g.
/// `model.stages[1].layers`), each named by its position under the builder's current name.
pub fn build_list(
    lines: &[String],
    field: &str,
    input: Shape,
    b: &mut Builder,
) -> Result<(Sequence, Shape), String> {
    let mut layers = Vec::with_capacity(lines.len());
    let mut shape = input;
    for (i, line) in lines.iter().enumerate() {
        let problem = |what: String| format!("{field}[{i}] = {line:?}: {what}");
        let mut spec = LayerSpec::parse(line).map_err(problem)?;
        let Some((_, _, build)) = LAYERS.iter().find(|(kind, _, _)| *kind == spec.kind) else {
            let kinds: Vec<&str> = LAYERS.iter().map(|(kind, _, _)| *kind).collect();
            return Err(problem(format!(
                "unknown layer `{}`; the layers are {}",
                spec.kind,
                kinds.join(", ")
            )));
        };
        b.next_kind = lines
            .get(i + 1)
            .and_then(|next| next.split_whitespace().next())
            .map(str::to_string);
        let (layer, output) = b
            .scoped(i, |b| build(&mut spec, shape, b))
            .map_err(problem)?;
        layers.push(layer);
        // Every layer's output, with parameters or not (20,000 `relu` lines keep 20,000
        // activations): the memory bound counts them all.
        b.kept_per_image = b.kept_per_image.saturating_add(output.elements());
        shape = output;
    }
    b.next_kind = None;
    Ok((Sequence { layers }, shape))
}
