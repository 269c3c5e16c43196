//! The `[model]` section: the network as stages of layers, each layer one line
//! (`layers/mod.rs` lists them), as a person would sketch it:
//!
//! ```toml
//! [model]
//! logit_scale = 0.125
//!
//! [[model.stages]]
//! layers = ["conv 128", "batch-norm", "relu", "max-pool"]
//! residual = ["conv 128", "batch-norm", "relu", "conv 128", "batch-norm", "relu"]
//! ```
//!
//! A stage runs its `layers`, then, if given, a residual block `x + f(x)` with `f` the
//! `residual` layers. After the last stage hftrain appends the classifier (a linear layer to
//! the data's classes, named `classifier`), then multiplies the logits by `logit_scale`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub stages: Vec<StageConfig>,
    /// Multiplies the logits; a small value (0.125 in the fast CIFAR-10 recipes) keeps early
    /// softmax outputs soft.
    pub logit_scale: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    #[serde(default)]
    pub layers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub residual: Vec<String>,
}

impl StageConfig {
    pub fn new(layers: &[&str]) -> Self {
        Self {
            layers: layers.iter().map(|s| s.to_string()).collect(),
            residual: Vec::new(),
        }
    }

    pub fn with_residual(mut self, residual: &[&str]) -> Self {
        self.residual = residual.iter().map(|s| s.to_string()).collect();
        self
    }
}

impl Default for ModelConfig {
    /// The conv-BN-ReLU network of the fast CIFAR-10 recipes (64-128-256-512 with pooling,
    /// global max-pool).
    fn default() -> Self {
        let block = |channels: usize, pool: bool| {
            let mut layers = vec![
                format!("conv {channels}"),
                "batch-norm".into(),
                "relu".into(),
            ];
            if pool {
                layers.push("max-pool".into());
            }
            StageConfig {
                layers,
                residual: Vec::new(),
            }
        };
        Self {
            stages: vec![
                block(64, false),
                block(128, true),
                block(256, true),
                block(512, true),
                StageConfig::new(&["global-max-pool"]),
            ],
            logit_scale: 0.125,
        }
    }
}

/// For a `[model]` table in the format before stages (`blocks`, `batch_norm`, `head`), the
/// message that says so and gives the same network in stages, to paste in its place.
pub fn legacy_format_message(model: &toml::Table) -> Option<String> {
    let blocks = model.get("blocks")?.as_array()?;
    let batch_norm = model
        .get("batch_norm")
        .and_then(toml::Value::as_bool)
        .unwrap_or(true);
    let head = model
        .get("head")
        .and_then(toml::Value::as_str)
        .unwrap_or("max");
    let mut text = String::from("[model]\n");
    if let Some(scale) = model.get("logit_scale") {
        text += &format!("logit_scale = {scale}\n");
    }
    for block in blocks {
        let channels = block.get("channels").and_then(toml::Value::as_integer)?;
        let pool = block
            .get("pool")
            .and_then(toml::Value::as_bool)
            .unwrap_or(false);
        let mut layers = vec![format!("\"conv {channels}\"")];
        if batch_norm {
            layers.push("\"batch-norm\"".into());
        }
        layers.push("\"relu\"".into());
        if pool {
            layers.push("\"max-pool\"".into());
        }
        text += &format!("\n[[model.stages]]\nlayers = [{}]\n", layers.join(", "));
    }
    let head = match head {
        "avg" => "global-avg-pool",
        "flatten" => "flatten",
        _ => "global-max-pool",
    };
    text += &format!("\n[[model.stages]]\nlayers = [\"{head}\"]\n");
    Some(format!(
        "the [model] section uses `blocks`, which hftrain replaced by `stages` of layers \
         (README, \"Networks\"); the same network in stages, to put in its place:\n\n{text}"
    ))
}
