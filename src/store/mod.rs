//! What a run keeps on disk and reads back: checkpoints, the metrics and step rows, the
//! TensorBoard event file, safetensors files, the run directory that holds them, and the
//! check every command's output path passes (`output`: never into those).

pub mod checkpoint;
pub mod metrics;
pub mod output;
pub mod run_dir;
pub mod safetensors;
pub mod tensorboard;
