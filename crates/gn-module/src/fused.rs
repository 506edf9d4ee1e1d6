//! The tensor-level entry to the fused kernels of [`GroupNormBackend`], and which backends have
//! them in this build.

use core::sync::atomic::{AtomicBool, Ordering};

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::{Device, Tensor};

use crate::backend::{ArgSpec, GroupNormBackend, check_forward_args};
use crate::{Activation, GroupNormError};

/// Whether `device`'s backend (under autodiff or not) has a fused kernel compiled in.
pub(crate) fn available(device: &Device) -> bool {
    #[allow(unreachable_patterns)]
    match device.clone().inner().as_dispatch() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        #[cfg(feature = "ndarray")]
        DispatchDevice::NdArray(_) => true,
        #[cfg(feature = "cube")]
        DispatchDevice::Cube(_) => true,
        _ => false,
    }
}

/// The `Debug` text of `device`'s burn dispatch device, without autodiff: `Flex(..)`,
/// `NdArray(..)`, `Cube(Wgpu(..))`, ...
fn device_debug(device: &Device) -> String {
    format!("{:?}", device.clone().inner().as_dispatch())
}

/// The gn-module feature that compiles a fused kernel for the backend of a device whose burn
/// `DispatchDevice` (without autodiff) prints as `device_debug` with `{:?}`; `None` for a
/// backend gn-module has no kernel for (LibTorch, Remote, ...).
///
/// A device's variant exists whenever burn has the backend's feature, which a burn user can
/// enable without enabling gn-module's: hence the text rather than the (then unnameable)
/// variant. The CubeCL runtimes without a gn-module feature of their own (ROCm, burn's CPU
/// runtime) take `cube`, which compiles the kernels for every CubeCL runtime burn has.
#[doc(hidden)]
pub fn feature_for_backend(device_debug: &str) -> Option<&'static str> {
    let (backend, rest) = split_variant(device_debug);
    match backend {
        "Flex" => Some("flex"),
        "NdArray" => Some("ndarray"),
        "Cube" => Some(match split_variant(rest).0 {
            "Cuda" => "cuda",
            "Wgpu" => "wgpu",
            "Metal" => "metal",
            _ => "cube",
        }),
        _ => None,
    }
}

/// The backend named by a device's `Debug` text (see [`feature_for_backend`]): its variant,
/// with the runtime for CubeCL devices (`"NdArray"`, `"Cube(Wgpu)"`).
#[doc(hidden)]
pub fn backend_name(device_debug: &str) -> String {
    let (backend, rest) = split_variant(device_debug);
    let runtime = split_variant(rest).0;
    if backend == "Cube" && !runtime.is_empty() {
        format!("Cube({runtime})")
    } else {
        backend.to_string()
    }
}

/// `"Name(inner)"` (or `"Name { .. }"`, `"Name"`) as `("Name", "inner)")`.
fn split_variant(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    let end = text
        .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
        .unwrap_or(text.len());
    let rest = text[end..].trim_start();
    (&text[..end], rest.strip_prefix('(').unwrap_or(rest))
}

/// The gn-module features [`feature_for_backend`] names, each warned about once.
const FEATURES: [&str; 6] = ["flex", "ndarray", "cuda", "wgpu", "metal", "cube"];

/// Called where dispatch falls back to the composite on `device`: if gn-module has a fused
/// kernel for its backend that this build left out, says (through `log::warn!`, once per
/// process and feature) which gn-module feature to enable.
pub(crate) fn warn_composite_fallback(device: &Device) {
    static WARNED: [AtomicBool; FEATURES.len()] = [const { AtomicBool::new(false) }; 6];
    let debug = device_debug(device);
    let Some(feature) = feature_for_backend(&debug) else {
        return;
    };
    let index = FEATURES
        .iter()
        .position(|f| *f == feature)
        .expect("feature_for_backend names one of FEATURES");
    if WARNED[index].swap(true, Ordering::Relaxed) {
        return;
    }
    log::warn!(
        "gn-module: GroupNorm on the {} backend runs as a composite of tensor ops, several \
         times slower than gn-module's fused kernel for it, which this build left out: enable \
         gn-module's `{feature}` feature (gn-module = {{ features = [\"{feature}\"] }}). \
         Logged once per process.",
        backend_name(&debug)
    );
}

/// Runs the fused forward op (recorded as one autodiff op on autodiff devices). The arguments
/// have been checked by the caller.
pub(crate) fn group_norm<const D: usize>(
    x: Tensor<D>,
    num_groups: usize,
    gamma: Option<Tensor<1>>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
    activation: Activation,
) -> Tensor<D> {
    let device = x.device();
    let num_channels = x.dims()[1];
    let dtype = x.dtype();
    let gamma = gamma.unwrap_or_else(|| Tensor::ones([num_channels], (&device, dtype)));
    let beta = beta.unwrap_or_else(|| Tensor::zeros([num_channels], (&device, dtype)));
    let (y, _mean, _rstd) = <Dispatch as GroupNormBackend>::group_norm_forward(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        num_groups,
        epsilon,
        activation.code(),
    );
    Tensor::from_dispatch(y)
}

/// The fused forward op with its statistics, for benchmarks and tests: `(y, mean, rstd)`.
///
/// # Shapes
///
/// - `x`: `[N, C, *]`, rank >= 2, at least one element, a float dtype
/// - `gamma`, `beta`: `[C]`, the dtype of `x`
/// - `y`: the shape and dtype of `x`
/// - `mean`, `rstd`: `[N, G]` in [`stats_dtype`](crate::backend::stats_dtype) of `x`'s dtype
///   (`rstd = 1 / sqrt(var + epsilon)`)
///
/// # Errors
///
/// Those of [`check_forward_args`] (rank, dtype, groups, an empty `x`, epsilon, `gamma` and
/// `beta` not `[C]` in `x`'s dtype), and [`GroupNormError::NoFusedKernel`] when `x`'s backend
/// has no fused kernel in this build.
pub fn forward_with_stats<const D: usize>(
    x: Tensor<D>,
    num_groups: usize,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    activation: Activation,
) -> Result<(Tensor<D>, Tensor<2>, Tensor<2>), GroupNormError> {
    let shapes = [x.shape(), gamma.shape(), beta.shape()];
    check_forward_args(
        ArgSpec::new(&shapes[0], x.dtype()),
        ArgSpec::new(&shapes[1], gamma.dtype()),
        ArgSpec::new(&shapes[2], beta.dtype()),
        num_groups,
        epsilon,
        activation.code(),
    )?;
    let device = x.device();
    if !available(&device) {
        let debug = device_debug(&device);
        return Err(GroupNormError::NoFusedKernel {
            backend: backend_name(&debug),
            feature: feature_for_backend(&debug),
        });
    }
    let (y, mean, rstd) = <Dispatch as GroupNormBackend>::group_norm_forward(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        num_groups,
        epsilon,
        activation.code(),
    );
    Ok((
        Tensor::from_dispatch(y),
        Tensor::from_dispatch(mean),
        Tensor::from_dispatch(rstd),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_for_backends() {
        for (debug, feature, name) in [
            ("Flex(FlexDevice)", Some("flex"), "Flex"),
            ("NdArray(Cpu)", Some("ndarray"), "NdArray"),
            (
                "Cube(Cuda(CudaDevice { index: 0 }))",
                Some("cuda"),
                "Cube(Cuda)",
            ),
            ("Cube(Wgpu(DefaultDevice))", Some("wgpu"), "Cube(Wgpu)"),
            ("Cube(Metal(MetalDevice))", Some("metal"), "Cube(Metal)"),
            (
                "Cube(Hip(AmdDevice { index: 0 }))",
                Some("cube"),
                "Cube(Hip)",
            ),
            ("Cube(Cpu(CpuDevice))", Some("cube"), "Cube(Cpu)"),
            ("LibTorch(Cpu)", None, "LibTorch"),
            (
                "Remote(RemoteDevice { address: \"ws://x\" })",
                None,
                "Remote",
            ),
            ("Capture(CaptureDevice)", None, "Capture"),
            ("", None, ""),
        ] {
            assert_eq!(feature_for_backend(debug), feature, "{debug}");
            assert!(feature.is_none_or(|f| FEATURES.contains(&f)), "{debug}");
            assert_eq!(backend_name(debug), name, "{debug}");
        }
    }

    /// The mapping reads the text burn really prints for the devices of this build.
    #[test]
    #[allow(deprecated)] // burn-ndarray is deprecated upstream; still supported.
    fn features_for_this_builds_devices() {
        #[cfg(feature = "flex")]
        assert_eq!(
            feature_for_backend(&device_debug(&Device::flex().autodiff())),
            Some("flex")
        );
        #[cfg(feature = "ndarray")]
        assert_eq!(
            feature_for_backend(&device_debug(&Device::ndarray())),
            Some("ndarray")
        );
    }
}
