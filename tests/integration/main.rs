//! The one integration-test binary (every test binary links all of Burn, so there is one).

mod common;

mod averaging;
mod batch_growth;
mod bench;
mod careless_use;
mod checkpoints;
mod cli;
mod config_errors;
mod curvature;
mod data_binary;
mod data_folder;
mod devices;
mod download;
mod fuzz;
mod hessian_free;
mod kernel_cache;
mod kronecker;
mod networks;
mod optimizer_runs;
mod optimizers;
mod precision;
mod predict;
mod registry;
mod reliability;
mod spectrum;
mod step_log;
mod structure;
mod tensorboard;
mod training;
