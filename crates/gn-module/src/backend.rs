//! The backend extension: one fused forward op and one fused backward op, implemented per
//! backend (Flex and NdArray in `crate::cpu`, CubeCL in `crate::cube`, autodiff in
//! `crate::autodiff`), and the checks every implementation runs on its arguments
//! ([`check_forward_args`], [`check_backward_args`]).

// burn-ndarray is deprecated upstream; it stays supported here because users still run it.
#![allow(deprecated)]

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata, backend_extension};
use burn::tensor::DType;

use crate::config::{validate_epsilon, validate_groups};
use crate::{Activation, GroupNormError};

/// Group normalization as backend ops.
///
/// # Shapes
///
/// - `x`, `grad`: `[N, C, *]`, rank >= 2 (any strides), at least one element, a float dtype
/// - `gamma`, `beta`: `[C]`, the dtype of `x` (ones and zeros for a layer without affine
///   parameters: they are always given)
/// - `mean`, `rstd`: `[N, G]`, in [`stats_dtype`] of `x`'s dtype
/// - `num_groups` (`G`): at least 1, dividing `C`
/// - `activation`: the code of an [`Activation`] (0 none, 1 ReLU, 2 SiLU)
///
/// # Panics
///
/// Every implementation checks its arguments first ([`check_forward_args`],
/// [`check_backward_args`]) and panics with the [`GroupNormError`] message when they do not
/// fit the shapes above, before any kernel runs. A backend that does not take a float dtype
/// (NdArray: f32 and f64 only) panics naming it, and so does burn's dispatch for a backend
/// whose implementation this build left out (see the crate features). Use
/// [`try_group_norm`](crate::try_group_norm) or
/// [`fused::forward_with_stats`](crate::fused::forward_with_stats) to get errors as values.
#[backend_extension(
    Autodiff,
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube")
)]
pub trait GroupNormBackend: Backend {
    /// `y = act(gamma * (x - mean) * rstd + beta)`; returns `(y, mean, rstd)`.
    ///
    /// `y` has the shape and dtype of `x` (and, on the fused kernels, its memory order);
    /// `mean` and `rstd` are `[N, G]` in [`stats_dtype`] of `x`'s dtype.
    ///
    /// # Panics
    ///
    /// If [`check_forward_args`] rejects the arguments, with its message.
    #[fusion(meta = crate::backend::forward_meta)]
    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        num_groups: usize,
        epsilon: f64,
        activation: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// The gradients `(dx, dgamma, dbeta)` of the forward op given the output gradient `grad`;
    /// `mean` and `rstd` are the forward's. `dx` has the shape and dtype of `x`, `dgamma` and
    /// `dbeta` those of `gamma`.
    ///
    /// # Panics
    ///
    /// If [`check_backward_args`] rejects the arguments, with its message.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = crate::backend::backward_meta)]
    fn group_norm_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        num_groups: usize,
        activation: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The dtype of the statistics `mean` and `rstd` for an input of `dtype`: f64 for f64 input,
/// f32 otherwise (f16 and bf16 are accumulated in f32).
pub fn stats_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F64 => DType::F64,
        _ => DType::F32,
    }
}

/// The shape and dtype of one tensor argument of a [`GroupNormBackend`] op: what
/// [`check_forward_args`] and [`check_backward_args`] read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArgSpec<'a> {
    /// The tensor's shape.
    pub shape: &'a [usize],
    /// The tensor's dtype.
    pub dtype: DType,
}

impl<'a> ArgSpec<'a> {
    /// The spec of a tensor of `shape` and `dtype`.
    pub fn new(shape: &'a [usize], dtype: DType) -> Self {
        Self { shape, dtype }
    }
}

/// Checks the arguments of [`GroupNormBackend::group_norm_forward`] against what its kernels
/// rely on (see the trait's shapes); O(rank), no tensor data is read.
///
/// # Errors
///
/// In this order: `x` of rank below 2 ([`RankTooLow`](GroupNormError::RankTooLow)) or not a
/// float ([`UnsupportedDType`](GroupNormError::UnsupportedDType)); `num_groups` zero or not
/// dividing `C`; `x` without elements ([`EmptyInput`](GroupNormError::EmptyInput)); `epsilon`
/// not finite and positive; an unknown `activation` code; `gamma` or `beta` not `[C]`
/// ([`AffineLength`](GroupNormError::AffineLength),
/// [`ShapeMismatch`](GroupNormError::ShapeMismatch)) or not of `x`'s dtype
/// ([`DTypeMismatch`](GroupNormError::DTypeMismatch)).
pub fn check_forward_args(
    x: ArgSpec<'_>,
    gamma: ArgSpec<'_>,
    beta: ArgSpec<'_>,
    num_groups: usize,
    epsilon: f64,
    activation: u32,
) -> Result<(), GroupNormError> {
    let c = check_op_input(x, num_groups)?;
    validate_epsilon(epsilon)?;
    check_activation(activation)?;
    check_affine("gamma", gamma, c, x.dtype)?;
    check_affine("beta", beta, c, x.dtype)
}

/// Checks the arguments of [`GroupNormBackend::group_norm_backward`] against what its kernels
/// rely on (see the trait's shapes); O(rank), no tensor data is read.
///
/// # Errors
///
/// Those of [`check_forward_args`] on `x`, `gamma`, `beta`, `num_groups` and `activation`, then
/// `grad` not of `x`'s shape and dtype, and `mean` or `rstd` not `[N, G]` in [`stats_dtype`] of
/// `x`'s dtype ([`ShapeMismatch`](GroupNormError::ShapeMismatch),
/// [`DTypeMismatch`](GroupNormError::DTypeMismatch)).
#[allow(clippy::too_many_arguments)]
pub fn check_backward_args(
    grad: ArgSpec<'_>,
    x: ArgSpec<'_>,
    gamma: ArgSpec<'_>,
    beta: ArgSpec<'_>,
    mean: ArgSpec<'_>,
    rstd: ArgSpec<'_>,
    num_groups: usize,
    activation: u32,
) -> Result<(), GroupNormError> {
    let c = check_op_input(x, num_groups)?;
    check_activation(activation)?;
    check_affine("gamma", gamma, c, x.dtype)?;
    check_affine("beta", beta, c, x.dtype)?;
    check_tensor("grad", grad, x.shape, x.dtype)?;
    let stats = [x.shape[0], num_groups];
    check_tensor("mean", mean, &stats, stats_dtype(x.dtype))?;
    check_tensor("rstd", rstd, &stats, stats_dtype(x.dtype))
}

/// Checks what any entry checks of the input (rank, float dtype, groups) and returns `C`.
pub(crate) fn check_input(x: ArgSpec<'_>, num_groups: usize) -> Result<usize, GroupNormError> {
    if x.shape.len() < 2 {
        return Err(GroupNormError::RankTooLow {
            shape: x.shape.to_vec(),
        });
    }
    if !x.dtype.is_float() {
        return Err(GroupNormError::UnsupportedDType { dtype: x.dtype });
    }
    let c = x.shape[1];
    validate_groups(num_groups, c)?;
    Ok(c)
}

/// [`check_input`], and the input is not empty (the kernels read each group's first value).
fn check_op_input(x: ArgSpec<'_>, num_groups: usize) -> Result<usize, GroupNormError> {
    let c = check_input(x, num_groups)?;
    if x.shape.contains(&0) {
        return Err(GroupNormError::EmptyInput {
            shape: x.shape.to_vec(),
        });
    }
    Ok(c)
}

fn check_activation(code: u32) -> Result<(), GroupNormError> {
    match Activation::from_code(code) {
        Some(_) => Ok(()),
        None => Err(GroupNormError::UnknownActivation(code)),
    }
}

/// `gamma` or `beta`: `[c]` in `dtype`.
pub(crate) fn check_affine(
    name: &'static str,
    param: ArgSpec<'_>,
    c: usize,
    dtype: DType,
) -> Result<(), GroupNormError> {
    match param.shape {
        [len] if *len == c => {}
        [len] => {
            return Err(GroupNormError::AffineLength {
                name,
                expected: c,
                got: *len,
            });
        }
        other => {
            return Err(GroupNormError::ShapeMismatch {
                name,
                expected: vec![c],
                got: other.to_vec(),
            });
        }
    }
    check_dtype(name, param.dtype, dtype)
}

fn check_tensor(
    name: &'static str,
    t: ArgSpec<'_>,
    shape: &[usize],
    dtype: DType,
) -> Result<(), GroupNormError> {
    if t.shape != shape {
        return Err(GroupNormError::ShapeMismatch {
            name,
            expected: shape.to_vec(),
            got: t.shape.to_vec(),
        });
    }
    check_dtype(name, t.dtype, dtype)
}

fn check_dtype(name: &'static str, got: DType, expected: DType) -> Result<(), GroupNormError> {
    if got == expected {
        Ok(())
    } else {
        Err(GroupNormError::DTypeMismatch {
            name,
            expected,
            got,
        })
    }
}

/// [`check_forward_args`] on backend primitives, panicking with its message: the first line
/// of every [`GroupNormBackend::group_norm_forward`] implementation.
#[track_caller]
pub(crate) fn assert_forward_args<T: TensorMetadata>(
    x: &T,
    gamma: &T,
    beta: &T,
    num_groups: usize,
    epsilon: f64,
    activation: u32,
) {
    let shapes = [x, gamma, beta].map(|t| t.shape());
    let spec = |i: usize, t: &T| ArgSpec::new(shapes[i].as_slice(), t.dtype());
    if let Err(err) = check_forward_args(
        spec(0, x),
        spec(1, gamma),
        spec(2, beta),
        num_groups,
        epsilon,
        activation,
    ) {
        forward_panic(err);
    }
}

/// [`check_backward_args`] on backend primitives, panicking with its message: the first line
/// of every [`GroupNormBackend::group_norm_backward`] implementation.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub(crate) fn assert_backward_args<T: TensorMetadata>(
    grad: &T,
    x: &T,
    gamma: &T,
    beta: &T,
    mean: &T,
    rstd: &T,
    num_groups: usize,
    activation: u32,
) {
    let shapes = [grad, x, gamma, beta, mean, rstd].map(|t| t.shape());
    let spec = |i: usize, t: &T| ArgSpec::new(shapes[i].as_slice(), t.dtype());
    if let Err(err) = check_backward_args(
        spec(0, grad),
        spec(1, x),
        spec(2, gamma),
        spec(3, beta),
        spec(4, mean),
        spec(5, rstd),
        num_groups,
        activation,
    ) {
        backward_panic(err);
    }
}

#[track_caller]
fn forward_panic(err: GroupNormError) -> ! {
    panic!("GroupNormBackend::group_norm_forward: {err}")
}

#[track_caller]
fn backward_panic(err: GroupNormError) -> ! {
    panic!("GroupNormBackend::group_norm_backward: {err}")
}

/// The [`ArgSpec`] of a fusion tensor spec.
#[cfg(feature = "cube")]
fn spec(t: &burn::backend::fusion::custom::TensorSpec) -> ArgSpec<'_> {
    ArgSpec::new(t.shape.as_slice(), t.dtype)
}

#[cfg(feature = "cube")]
pub(crate) fn forward_meta(
    x: &burn::backend::fusion::custom::TensorSpec,
    gamma: &burn::backend::fusion::custom::TensorSpec,
    beta: &burn::backend::fusion::custom::TensorSpec,
    num_groups: &usize,
    epsilon: &f64,
    activation: &u32,
) -> (
    burn::backend::fusion::custom::TensorSpec,
    burn::backend::fusion::custom::TensorSpec,
    burn::backend::fusion::custom::TensorSpec,
) {
    use burn::backend::fusion::custom::TensorSpec;
    // Checked when the op is recorded, not only when the fused stream runs it.
    if let Err(err) = check_forward_args(
        spec(x),
        spec(gamma),
        spec(beta),
        *num_groups,
        *epsilon,
        *activation,
    ) {
        forward_panic(err);
    }
    let stats = TensorSpec::new([x.shape[0], *num_groups].into(), stats_dtype(x.dtype));
    (x.clone(), stats.clone(), stats)
}

#[cfg(feature = "cube")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_meta(
    grad: &burn::backend::fusion::custom::TensorSpec,
    x: &burn::backend::fusion::custom::TensorSpec,
    gamma: &burn::backend::fusion::custom::TensorSpec,
    beta: &burn::backend::fusion::custom::TensorSpec,
    mean: &burn::backend::fusion::custom::TensorSpec,
    rstd: &burn::backend::fusion::custom::TensorSpec,
    num_groups: &usize,
    activation: &u32,
) -> (
    burn::backend::fusion::custom::TensorSpec,
    burn::backend::fusion::custom::TensorSpec,
    burn::backend::fusion::custom::TensorSpec,
) {
    // Checked when the op is recorded, not only when the fused stream runs it.
    if let Err(err) = check_backward_args(
        spec(grad),
        spec(x),
        spec(gamma),
        spec(beta),
        spec(mean),
        spec(rstd),
        *num_groups,
        *activation,
    ) {
        backward_panic(err);
    }
    (x.clone(), gamma.clone(), beta.clone())
}
