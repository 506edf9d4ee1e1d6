//! The functional form, [`group_norm`], and its checked variants.

use burn::tensor::{Shape, Tensor};

use crate::backend::{self, ArgSpec};
use crate::config::validate_epsilon;
use crate::{Activation, GroupNormError, composite, fused};

/// Group normalization of `x`: `y = gamma_c * (x - mean_{n,g}) / sqrt(var_{n,g} + epsilon) +
/// beta_c`, with the mean and the population variance taken over each sample's group of
/// `C / num_groups` channels and all spatial positions.
///
/// The same math as PyTorch `torch.nn.functional.group_norm` and ONNX `GroupNormalization`
/// (opset 21). Runs the fused kernel where the backend has one compiled in (Flex, NdArray, the
/// CubeCL backends, and autodiff over them) and the [composite](crate::composite) otherwise;
/// a backend whose fused kernel this build left out is named once per process through
/// `log::warn!`, with the gn-module feature to enable.
///
/// # Shapes
///
/// - `x`: `[N, C, *]` of any rank >= 2 (the axes after the channels are taken together), a
///   float dtype; an input without elements is returned as it is
/// - `gamma`, `beta`: `[C]` in the dtype of `x`, optional (a missing one acts as ones / zeros)
/// - output: the shape and dtype of `x`
///
/// # Panics
///
/// Panics with a [`GroupNormError`] message on invalid arguments; see [`try_group_norm`].
pub fn group_norm<const D: usize>(
    x: Tensor<D>,
    num_groups: usize,
    gamma: Option<Tensor<1>>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
) -> Tensor<D> {
    group_norm_with_activation(x, num_groups, gamma, beta, epsilon, Activation::None)
}

/// [`group_norm`] that returns invalid arguments as an error instead of panicking.
///
/// # Errors
///
/// A [`GroupNormError`] naming the problem when `x` has rank below 2 or is not a float,
/// `num_groups` is zero or does not divide `C`, `epsilon` is not finite and positive, or
/// `gamma` or `beta` is not of length `C` or not of `x`'s dtype.
pub fn try_group_norm<const D: usize>(
    x: Tensor<D>,
    num_groups: usize,
    gamma: Option<Tensor<1>>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
) -> Result<Tensor<D>, GroupNormError> {
    try_group_norm_with_activation(x, num_groups, gamma, beta, epsilon, Activation::None)
}

/// [`group_norm`] followed by `activation`, fused into the same pass forward and backward.
///
/// # Shapes
///
/// As [`group_norm`].
///
/// # Panics
///
/// Panics with a [`GroupNormError`] message on invalid arguments.
pub fn group_norm_with_activation<const D: usize>(
    x: Tensor<D>,
    num_groups: usize,
    gamma: Option<Tensor<1>>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
    activation: Activation,
) -> Tensor<D> {
    try_group_norm_with_activation(x, num_groups, gamma, beta, epsilon, activation)
        .unwrap_or_else(|err| panic!("group_norm: {err}"))
}

/// [`group_norm_with_activation`] that returns invalid arguments as an error.
///
/// # Errors
///
/// Those of [`try_group_norm`].
pub fn try_group_norm_with_activation<const D: usize>(
    x: Tensor<D>,
    num_groups: usize,
    gamma: Option<Tensor<1>>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
    activation: Activation,
) -> Result<Tensor<D>, GroupNormError> {
    check_args(&x, num_groups, gamma.as_ref(), beta.as_ref(), epsilon)?;
    if x.shape().num_elements() == 0 {
        return Ok(x);
    }
    let device = x.device();
    Ok(if fused::available(&device) {
        fused::group_norm(x, num_groups, gamma, beta, epsilon, activation)
    } else {
        fused::warn_composite_fallback(&device);
        composite::group_norm(x, num_groups, gamma, beta, epsilon, activation)
    })
}

/// What [`try_group_norm`] checks, in O(1): the input's rank, dtype and channels against
/// `num_groups`, `epsilon`, and `gamma` and `beta` against the input.
pub(crate) fn check_args<const D: usize>(
    x: &Tensor<D>,
    num_groups: usize,
    gamma: Option<&Tensor<1>>,
    beta: Option<&Tensor<1>>,
    epsilon: f64,
) -> Result<(), GroupNormError> {
    let shape = x.shape();
    let dtype = x.dtype();
    let num_channels = backend::check_input(ArgSpec::new(&shape, dtype), num_groups)?;
    validate_epsilon(epsilon)?;
    for (name, param) in [("gamma", gamma), ("beta", beta)] {
        if let Some(param) = param {
            let param_shape = param.shape();
            let spec = ArgSpec::new(&param_shape, param.dtype());
            backend::check_affine(name, spec, num_channels, dtype)?;
        }
    }
    Ok(())
}

fn check_rank(shape: &Shape) -> Result<(), GroupNormError> {
    if shape.num_dims() < 2 {
        return Err(GroupNormError::RankTooLow {
            shape: shape.to_vec(),
        });
    }
    Ok(())
}

/// Checks that `shape` is `[N, num_channels, *]`.
pub(crate) fn check_input(shape: &Shape, num_channels: usize) -> Result<(), GroupNormError> {
    check_rank(shape)?;
    if shape[1] != num_channels {
        return Err(GroupNormError::ChannelMismatch {
            expected: num_channels,
            got: shape[1],
            shape: shape.to_vec(),
        });
    }
    Ok(())
}
