//! The network and its layers. `layer.rs` is the one layer abstraction, `layers/` holds one
//! file per layer, `config.rs` the `[model]` section, `network.rs` the whole network.

pub mod builder;
pub mod config;
pub mod layer;
pub mod layers;
pub mod loss;
pub mod network;
pub mod spec;

pub use config::{ModelConfig, StageConfig};
pub use layer::{BatchStats, Layer, LayerFactors, Mode, Recorded, Shape};
pub use loss::{correct_count, cross_entropy};
pub use network::{ForwardOutput, Network, Tape};
