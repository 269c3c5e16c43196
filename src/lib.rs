//! hftrain: a CIFAR-10 trainer on Burn with first-order optimizers and a Hessian-free
//! (truncated Newton) second-order optimizer.
//!
//! The layers of the crate, each importing only those below it:
//! - `cli` and `commands/`: the command line, one thin module per command; no command
//!   imports another, and nothing below imports a command;
//! - the core: `session` (device, data, opened checkpoints), `train/` (the loop), `optim/`,
//!   `curvature` (the objective on a batch), `spectrum/` (its algorithms), `evaluation`,
//!   `bn_statistics`, `model/`, `data/`, `config/`, `params`, `precision`, `memory`, `device`;
//! - `store/` (checkpoints, metrics rows, TensorBoard, safetensors, run directories) and
//!   `report/` (report.md and pictures): what a run writes about itself;
//! - `support/`: small utilities with no knowledge of training.

pub mod batch_growth;
pub mod bn_statistics;
pub mod cli;
pub mod commands;
pub mod config;
pub mod curvature;
pub mod data;
pub mod device;
pub mod evaluation;
pub mod memory;
pub mod model;
pub mod optim;
pub mod params;
pub mod precision;
pub mod report;
pub mod session;
pub mod spectrum;
pub mod store;
pub mod support;
pub mod train;
