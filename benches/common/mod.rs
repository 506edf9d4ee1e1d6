//! What both benches share: the devices of the compiled backends, and a sync.

use burn::tensor::Device;

/// Every backend compiled into the bench, by name.
// The pushes depend on the compiled features.
#[allow(clippy::vec_init_then_push)]
pub fn devices() -> Vec<(&'static str, Device)> {
    let mut devices = Vec::new();
    #[cfg(feature = "flex")]
    devices.push(("flex", Device::flex()));
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    devices.push(("ndarray", Device::ndarray()));
    #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
    devices.push((
        "wgpu",
        Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
    ));
    #[cfg(feature = "cuda")]
    devices.push(("cuda", Device::cuda(0)));
    devices
}

/// Waits for the device's queued work, so that a timed iteration includes it.
pub fn sync(device: &Device) {
    device.sync().expect("device sync");
}
