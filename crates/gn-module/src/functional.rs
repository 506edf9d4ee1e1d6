//! The functional form, [`group_norm`], and its checked variants.

use burn::tensor::{Shape, Tensor};

use crate::config::{validate_epsilon, validate_groups};
use crate::{Activation, GroupNormError, composite, fused};

/// Group normalization of `x`: `y = gamma_c * (x - mean_{n,g}) / sqrt(var_{n,g} + epsilon) +
/// beta_c`, with the mean and the population variance taken over each sample's group of
/// `C / num_groups` channels and all spatial positions.
///
/// The same math as PyTorch `torch.nn.functional.group_norm` and ONNX `GroupNormalization`
/// (opset 21). Runs the fused kernel where the backend has one (Flex, NdArray, the CubeCL
/// backends, and autodiff over them) and the [composite](crate::composite) otherwise.
///
/// # Shapes
///
/// - `x`: `[N, C, *]`, rank 2 to 6 (`N = 0` gives an empty output)
/// - `gamma`, `beta`: `[C]`, optional (a missing one acts as ones / zeros)
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
pub fn try_group_norm_with_activation<const D: usize>(
    x: Tensor<D>,
    num_groups: usize,
    gamma: Option<Tensor<1>>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
    activation: Activation,
) -> Result<Tensor<D>, GroupNormError> {
    let shape = x.shape();
    check_rank(&shape)?;
    let num_channels = shape[1];
    validate_groups(num_groups, num_channels)?;
    validate_epsilon(epsilon)?;
    for (name, param) in [("gamma", &gamma), ("beta", &beta)] {
        if let Some(param) = param {
            let got = param.dims()[0];
            if got != num_channels {
                return Err(GroupNormError::AffineLength {
                    name,
                    expected: num_channels,
                    got,
                });
            }
        }
    }
    if shape.num_elements() == 0 {
        return Ok(x);
    }
    Ok(if fused::available(&x.device()) {
        fused::group_norm(x, num_groups, gamma, beta, epsilon, activation)
    } else {
        composite::group_norm(x, num_groups, gamma, beta, epsilon, activation)
    })
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
