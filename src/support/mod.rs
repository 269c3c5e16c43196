//! Small utilities that know nothing of training: atomic file writing, exact floats in JSON,
//! locks, Ctrl-C, logging, random numbers, numbers in words, the allocator, the kernel cache,
//! and the collector of a config's problems.

pub mod allocator;
pub mod exact_float;
pub mod fsutil;
pub mod interrupt;
pub mod kernel_cache;
pub mod lock;
pub mod logging;
pub mod rng;
pub mod validate;
pub mod words;
