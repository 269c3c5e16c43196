//! Where Burn keeps what it learns about a GPU between runs: the autotune results (which
//! convolution and matmul kernel is fastest for each shape) of cubecl's persistent cache.
//! Without a place of its own, cubecl writes them under the `target/` of whatever Cargo
//! project the current directory is in, or forgets them; a run then spends its first minute
//! tuning again (about 40 s of the first epoch on an H100), and so does every resume.
//!
//! The place: `HFTRAIN_KERNEL_CACHE` if set (`off` keeps nothing), else the user's cache
//! directory, `$XDG_CACHE_HOME/hftrain/kernels` or `~/.cache/hftrain/kernels`. A
//! `cubecl.toml` the user wrote still decides everything else.

use std::ffi::OsString;
use std::path::PathBuf;

/// The environment variable that moves (or, set to `off`, disables) the cache.
pub const VARIABLE: &str = "HFTRAIN_KERNEL_CACHE";

/// The cache directory, or None when the user turned it off or no home is known.
pub fn directory() -> Option<PathBuf> {
    directory_from(
        std::env::var_os(VARIABLE),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// `directory()` from the values of `HFTRAIN_KERNEL_CACHE`, `XDG_CACHE_HOME` and `HOME`
/// (an empty value counts as unset, as shells write an unset variable).
pub fn directory_from(
    setting: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty());
    match set(setting) {
        Some(value) if value == "off" => None,
        Some(value) => Some(PathBuf::from(value)),
        None => {
            let base = set(xdg_cache_home)
                .map(PathBuf::from)
                .or_else(|| set(home).map(|h| PathBuf::from(h).join(".cache")))?;
            Some(base.join("hftrain").join("kernels"))
        }
    }
}

/// Points cubecl's persistent cache at `directory()`, before any device is opened (cubecl
/// reads its configuration once). Later calls, and calls after cubecl has read its
/// configuration, change nothing.
#[cfg(feature = "persistence")]
pub fn configure() {
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        match directory() {
            Some(dir) => config.environment.path = CacheConfig::Directory(dir),
            None => config.autotune.disable_cache = true,
        }
        if !CubeClRuntimeConfig::try_set(config) {
            log::debug!("cubecl's configuration was read before hftrain could set its cache");
        }
    });
}

/// Without the `persistence` feature cubecl keeps nothing on disk.
#[cfg(not(feature = "persistence"))]
pub fn configure() {}
