//! hftrain: a CIFAR-10 trainer on Burn with first-order optimizers and a Hessian-free
//! (truncated Newton) second-order optimizer.

pub mod bn_statistics;
pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod config;
pub mod curvature;
pub mod data;
pub mod device;
pub mod eval;
pub mod export;
pub mod fsutil;
pub mod inspect;
pub mod interrupt;
pub mod lock;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod mistakes;
pub mod model;
pub mod optim;
pub mod params;
pub mod plots;
pub mod predict;
pub mod report;
pub mod rng;
pub mod run_dir;
pub mod safetensors;
pub mod session;
pub mod spectrum;
pub mod tensorboard;
pub mod text;
pub mod train;
pub mod validate;
pub mod words;
