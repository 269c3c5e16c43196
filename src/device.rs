//! Backend choice: wgpu on the real GPU when there is one, Burn's pure-Rust CPU backend
//! (`flex`) otherwise, either of them or wgpu's software adapter on request. What was picked
//! is described in words for the user.
//!
//! wgpu's default adapter request asks for a high-performance GPU and finds nothing on a
//! machine whose only adapter is a software one (Mesa's lavapipe in CI), so the adapter kinds
//! are tried by name: discrete, integrated, virtual GPU, then (only where asked for) the CPU
//! adapter. `auto` does not take the software adapter: on a CPU, `flex` trained 14 to 25
//! times faster than wgpu on lavapipe (BENCHMARKS.md).
//!
//! Kernels reach the adapter as WGSL, or as SPIR-V where hftrain is built with the `vulkan`
//! feature (Burn's `vulkan`): cubecl then compiles to SPIR-V on every Vulkan adapter whose
//! driver offers what it needs, and that path registers cooperative matrices (tensor cores),
//! f16 and bf16 where the driver has them. One build has one compiler per API, so `wgpu`
//! on a Vulkan adapter is SPIR-V in such a build too; the description names the compiler in
//! use (`wgpu<spirv>` or `wgpu<wgsl>`). `vulkan` and `vulkan-cpu` pin the Vulkan API.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use anyhow::{Result, bail};
use burn::backend::{Backend, Dispatch};
use burn::tensor::wgpu::WgpuBackend;
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
    /// wgpu pinned to the Vulkan API (SPIR-V kernels in a `vulkan` build), GPU first, a
    /// software adapter last.
    Vulkan,
    /// wgpu pinned to Vulkan on a CPU (software) adapter only.
    VulkanCpu,
}

impl DeviceChoice {
    pub const NAMES: &'static str = "auto, wgpu, wgpu-cpu, flex, vulkan, vulkan-cpu";

    /// The name a config writes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Wgpu => "wgpu",
            Self::WgpuCpu => "wgpu-cpu",
            Self::Flex => "flex",
            Self::Vulkan => "vulkan",
            Self::VulkanCpu => "vulkan-cpu",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "auto" => Self::Auto,
            "wgpu" => Self::Wgpu,
            "wgpu-cpu" => Self::WgpuCpu,
            "flex" | "cpu" => Self::Flex,
            "vulkan" => Self::Vulkan,
            "vulkan-cpu" => Self::VulkanCpu,
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
    crate::support::kernel_cache::configure();
    let selected = match open(choice) {
        Ok(selected) => selected,
        // wgpu registers each kind of adapter once per process: where this choice comes
        // down to the software adapter another choice already holds (`wgpu` falling back to
        // the one `wgpu-cpu` opened, or the reverse), it is served that device.
        Err(e) => match cache
            .iter()
            .find(|(other, held)| same_software_adapter(choice, **other, held))
        {
            Some((_, held)) => held.clone(),
            None => return Err(e),
        },
    };
    cache.insert(choice, selected.clone());
    Ok(selected)
}

/// Whether `choice` would open the software adapter that `other` holds as `held`: the same
/// graphics API, and `held` a wgpu device on a CPU adapter.
fn same_software_adapter(choice: DeviceChoice, other: DeviceChoice, held: &SelectedDevice) -> bool {
    use DeviceChoice::*;
    let same_api = matches!(
        (choice, other),
        (Wgpu, WgpuCpu) | (WgpuCpu, Wgpu) | (Vulkan, VulkanCpu) | (VulkanCpu, Vulkan)
    );
    same_api && held.host_memory && held.description.starts_with("wgpu<")
}

fn open(choice: DeviceChoice) -> Result<SelectedDevice> {
    let gpus = [
        DeviceKind::DiscreteGpu(0),
        DeviceKind::IntegratedGpu(0),
        DeviceKind::VirtualGpu(0),
    ];
    let any = [gpus.as_slice(), &[DeviceKind::Cpu]].concat();
    let (auto_api, vulkan) = (WgpuBackend::Auto, WgpuBackend::Vulkan);
    match choice {
        DeviceChoice::Flex => Ok(flex()),
        DeviceChoice::WgpuCpu => open_wgpu(&[DeviceKind::Cpu], auto_api),
        DeviceChoice::Wgpu => open_wgpu(&any, auto_api),
        DeviceChoice::Vulkan => open_wgpu(&any, vulkan),
        DeviceChoice::VulkanCpu => open_wgpu(&[DeviceKind::Cpu], vulkan),
        DeviceChoice::Auto => match open_wgpu(&gpus, auto_api) {
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

fn open_wgpu(kinds: &[DeviceKind], api: WgpuBackend) -> Result<SelectedDevice> {
    let mut tried = Vec::new();
    for kind in kinds {
        let mut options = Device::wgpu_options().device_kind(kind.clone());
        if api != WgpuBackend::Auto {
            options = options.graphics_api(api);
        }
        match options.init_with_setup() {
            Ok((device, setup)) => {
                let info = setup.adapter.get_info();
                let description = format!(
                    "{} {kind:?}: {} ({:?}, {:?}{})",
                    runtime_name(&device),
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
    bail!(
        "no {}adapter found ({})",
        if api == WgpuBackend::Vulkan {
            "Vulkan "
        } else {
            "wgpu "
        },
        tried.join("; ")
    )
}

/// Whether the device is one of Burn's CPU backends (flex, ndarray), whose tensors live in
/// this process's memory: there plain Rust loops can read and write them, and hftrain's own
/// kernels (convolution patches, max-pooling) were measured to beat Burn's.
pub fn keeps_tensors_in_host_memory(device: &Device) -> bool {
    let name = <Dispatch as Backend>::name(device.as_dispatch());
    name.contains("flex") || name.contains("ndarray")
}

/// The runtime's own name for a wgpu device, which names its shader compiler:
/// `wgpu<wgsl>` or `wgpu<spirv>` (inside Burn's fusion wrapper, which is left out).
fn runtime_name(device: &Device) -> String {
    let name = <Dispatch as Backend>::name(device.as_dispatch());
    match name.find("wgpu<") {
        Some(start) => name[start..]
            .split_inclusive('>')
            .next()
            .unwrap_or(&name)
            .to_string(),
        None => name,
    }
}
