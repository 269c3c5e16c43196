//! Backend choice: wgpu on the real GPU when there is one, Burn's pure-Rust CPU backend
//! (`flex`) otherwise, either of them or wgpu's software adapter on request. What was picked
//! is described in words for the user.
//!
//! wgpu's default adapter request asks for a high-performance GPU and finds nothing on a
//! machine whose only adapter is a software one (Mesa's lavapipe in CI), so the adapter kinds
//! are tried by name: discrete, integrated, virtual GPU, then (only where asked for) the CPU
//! adapter. `auto` does not take the software adapter: on a CPU, `flex` trained 14 to 25
//! times faster than wgpu on lavapipe (BENCHMARKS.md).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use anyhow::{Result, bail};
use burn::tensor::{Device, DeviceKind};
use serde::{Deserialize, Serialize};

/// `device` in a config and `--device` on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DeviceChoice {
    /// wgpu on a hardware GPU; Burn's CPU backend where there is none.
    #[default]
    Auto,
    /// wgpu on the best adapter, GPU first, a software adapter last.
    Wgpu,
    /// wgpu on a CPU (software) adapter only.
    WgpuCpu,
    /// Burn's pure-Rust CPU backend (`cpu` is read as `flex`).
    Flex,
}

impl DeviceChoice {
    pub const NAMES: &'static str = "auto, wgpu, wgpu-cpu, flex";

    /// The name a config writes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Wgpu => "wgpu",
            Self::WgpuCpu => "wgpu-cpu",
            Self::Flex => "flex",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "auto" => Self::Auto,
            "wgpu" => Self::Wgpu,
            "wgpu-cpu" => Self::WgpuCpu,
            "flex" | "cpu" => Self::Flex,
            other => bail!("unknown device {other:?}: expected one of {}", Self::NAMES),
        })
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Self> {
        Self::parse(name)
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::parse(&name).map_err(|_| {
            serde::de::Error::custom(format!(
                "device = {name:?}: expected one of {}",
                Self::NAMES
            ))
        })
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A device ready for tensors, with a description of what it is.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    pub device: Device,
    pub description: String,
    /// Whether its tensors live in the host's memory (flex, a software wgpu adapter), where
    /// `memory::check_fits` can compare a run's needs with what is available.
    pub host_memory: bool,
}

/// Opens the device for `choice`. A wgpu runtime can be initialised once per process, so
/// selections are remembered and a second call returns the same device.
pub fn select(choice: DeviceChoice) -> Result<SelectedDevice> {
    static SELECTED: OnceLock<Mutex<HashMap<DeviceChoice, SelectedDevice>>> = OnceLock::new();
    let cache = SELECTED.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(selected) = cache.get(&choice) {
        return Ok(selected.clone());
    }
    let selected = open(choice)?;
    cache.insert(choice, selected.clone());
    Ok(selected)
}

fn open(choice: DeviceChoice) -> Result<SelectedDevice> {
    let gpus = [
        DeviceKind::DiscreteGpu(0),
        DeviceKind::IntegratedGpu(0),
        DeviceKind::VirtualGpu(0),
    ];
    match choice {
        DeviceChoice::Flex => Ok(flex()),
        DeviceChoice::WgpuCpu => open_wgpu(&[DeviceKind::Cpu]),
        DeviceChoice::Wgpu => open_wgpu(&[gpus.as_slice(), &[DeviceKind::Cpu]].concat()),
        DeviceChoice::Auto => match open_wgpu(&gpus) {
            Ok(selected) => Ok(selected),
            Err(e) => {
                // wgpu's errors list every adapter once per kind tried: a screenful, so
                // only with -v. The description (also in report.md) stays one short line.
                log::info!(
                    "no GPU adapter for wgpu: running on the CPU with flex \
                     (`--device wgpu-cpu` runs wgpu on a software adapter, much slower)"
                );
                log::debug!("wgpu adapters tried: {e:#}");
                let mut selected = flex();
                selected.description = selected
                    .description
                    .replace(')', "; no GPU adapter for wgpu)");
                Ok(selected)
            }
        },
    }
}

fn flex() -> SelectedDevice {
    SelectedDevice {
        device: Device::flex(),
        description: format!(
            "flex (Burn's pure-Rust CPU backend, {} threads)",
            rayon::current_num_threads()
        ),
        host_memory: true,
    }
}

fn open_wgpu(kinds: &[DeviceKind]) -> Result<SelectedDevice> {
    let mut tried = Vec::new();
    for kind in kinds {
        match Device::wgpu_options()
            .device_kind(kind.clone())
            .init_with_setup()
        {
            Ok((device, setup)) => {
                let info = setup.adapter.get_info();
                let description = format!(
                    "wgpu {kind:?}: {} ({:?}, {:?}{})",
                    info.name,
                    info.device_type,
                    info.backend,
                    if info.driver.is_empty() {
                        String::new()
                    } else {
                        format!(", driver {} {}", info.driver, info.driver_info)
                    }
                );
                return Ok(SelectedDevice {
                    device,
                    description,
                    // wgpu's DeviceType is not re-exported by Burn: compared by its name.
                    host_memory: format!("{:?}", info.device_type) == "Cpu",
                });
            }
            Err(e) => tried.push(format!("{kind:?}: {e}")),
        }
    }
    bail!("no wgpu adapter found ({})", tried.join("; "))
}
