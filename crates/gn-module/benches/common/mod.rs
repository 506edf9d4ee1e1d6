//! What the benches share (this crate's `group_norm` and the repository's `resnet`, which
//! includes this file by path): the devices of the compiled backends, a sync, a timer of
//! queued calls and the standard normal inputs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use burn::tensor::{DType, Device, Distribution, Tensor};

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

/// The time of `iters` calls of `f` queued one after the other, then one sync (criterion's
/// `iter_custom`). On a GPU that is the time of a stream of calls, as in a network's forward,
/// where a sync after every call would add the device's round trip to each; on the CPU
/// backends (whose sync returns at once) it is the time of each call, as `iter` measures.
// Unused by a bench that syncs after every call.
#[allow(dead_code)]
pub fn time_queued<O>(device: &Device, iters: u64, mut f: impl FnMut() -> O) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    sync(device);
    start.elapsed()
}

/// A standard normal tensor of NCHW `shape`, with channels-last strides if `channels_last`.
#[allow(dead_code)] // the resnet bench includes this file and does not use it
pub fn input(shape: [usize; 4], channels_last: bool, device: &Device, dtype: DType) -> Tensor<4> {
    let normal = Distribution::Normal(0.0, 1.0);
    if channels_last {
        let [n, c, h, w] = shape;
        Tensor::<4>::random([n, h, w, c], normal, (device, dtype)).permute([0, 3, 1, 2])
    } else {
        Tensor::<4>::random(shape, normal, (device, dtype))
    }
}
