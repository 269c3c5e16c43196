//! Device choices: `vulkan-cpu` pins wgpu to the Vulkan API on the software adapter, names
//! the shader compiler it runs, and computes what flex computes.

use burn::prelude::*;

use hftrain::config::StageConfig;
use hftrain::curvature::{Batch, NetworkObjective};
use hftrain::device::{DeviceChoice, select};
use hftrain::model::Network;
use hftrain::params::{from_host, to_host};

use crate::common::relative_error;

#[test]
fn vulkan_cpu_names_its_compiler_and_computes_what_flex_computes() {
    let vulkan = select(DeviceChoice::VulkanCpu)
        .expect("the Vulkan software adapter (lavapipe, package mesa-vulkan-drivers) is installed");
    println!("measured: vulkan-cpu is {}", vulkan.description);
    // A default build runs WGSL on Vulkan; a `vulkan` build SPIR-V (lavapipe of Mesa 22.3
    // crashes on cubecl's SPIR-V matmul: BENCHMARKS.md).
    let compiler = if cfg!(feature = "vulkan") {
        "wgpu<spirv>"
    } else {
        "wgpu<wgsl>"
    };
    assert!(
        vulkan.description.starts_with(compiler) && vulkan.description.contains("Vulkan"),
        "{}",
        vulkan.description
    );
    assert!(
        vulkan.host_memory,
        "a software adapter's tensors live in host memory"
    );

    let flex = select(DeviceChoice::Flex).unwrap().device;
    let model = hftrain::config::ModelConfig {
        stages: vec![StageConfig::new(&["conv 4", "relu", "max-pool", "flatten"])],
        ..Default::default()
    };
    let network = Network::new(&model, 10).unwrap();
    let (params, _) = network.init(3, &flex);
    let n = 4;
    let images: Vec<f32> = (0..n * 3 * 32 * 32)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let labels: Vec<i64> = (0..n as i64).collect();
    let gradient = |device: &Device| {
        let batch = Batch {
            images: Tensor::<4>::from_data(TensorData::new(images.clone(), [n, 3, 32, 32]), device),
            labels: Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [n]), device),
        };
        let objective = NetworkObjective::new(&network, 0.0, 0.0, device);
        let params = from_host(to_host(&params), device);
        to_host(&objective.gradient(&params, &batch, false).gradient)
    };
    let on_vulkan = from_host(gradient(&vulkan.device), &flex);
    let on_flex = from_host(gradient(&flex), &flex);
    let error = relative_error(&on_vulkan, &on_flex);
    println!("measured: vulkan-cpu gradient vs flex: relative error {error:.1e}");
    // Two f32 computations in different orders: a few hundred ulps of the largest terms at most.
    assert!(
        error < 1e-4,
        "vulkan-cpu's gradient is off flex's by {error}"
    );
}

/// wgpu registers its software adapter once per process: `wgpu` (falling back to it where
/// there is no GPU) and `wgpu-cpu` both come up, whichever a process asks for first.
#[test]
fn wgpu_and_wgpu_cpu_both_open_in_one_process() {
    let cpu = select(DeviceChoice::WgpuCpu)
        .expect("the wgpu software adapter (lavapipe, package mesa-vulkan-drivers) is installed");
    let any = select(DeviceChoice::Wgpu).expect("wgpu opens an adapter");
    println!(
        "measured: wgpu-cpu is {}; wgpu is {}",
        cpu.description, any.description
    );
    assert!(cpu.description.contains("Cpu"), "{}", cpu.description);
    if any.description.contains(" Cpu:") {
        // No GPU: both are the one software adapter.
        assert_eq!(any.description, cpu.description);
    }
}
