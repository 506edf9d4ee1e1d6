//! The tensor-level entry to the fused kernels of [`GroupNormBackend`].

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::{Device, Tensor};

use crate::Activation;
use crate::backend::GroupNormBackend;

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

/// Runs the fused forward op (recorded as one autodiff op on autodiff devices).
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
    let gamma = gamma.unwrap_or_else(|| Tensor::ones([num_channels], &device));
    let beta = beta.unwrap_or_else(|| Tensor::zeros([num_channels], &device));
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

/// The fused forward op with its statistics: `(y, mean, rstd)`, `mean` and `rstd` of shape
/// `[N, G]`. For benchmarks and tests; arguments must be valid.
pub fn forward_with_stats<const D: usize>(
    x: Tensor<D>,
    num_groups: usize,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    activation: Activation,
) -> (Tensor<D>, Tensor<2>, Tensor<2>) {
    let (y, mean, rstd) = <Dispatch as GroupNormBackend>::group_norm_forward(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        num_groups,
        epsilon,
        activation.code(),
    );
    (
        Tensor::from_dispatch(y),
        Tensor::from_dispatch(mean),
        Tensor::from_dispatch(rstd),
    )
}
