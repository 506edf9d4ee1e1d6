//! The backend extension: one fused forward op and one fused backward op, implemented per
//! backend (Flex and NdArray in [`crate::cpu`], CubeCL in [`crate::cube`], autodiff in
//! [`crate::autodiff`]).

// burn-ndarray is deprecated upstream; it stays supported here because users still run it.
#![allow(deprecated)]

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, backend_extension};
use burn::tensor::DType;

/// Group normalization as backend ops.
///
/// Shapes: `x` and `grad` are `[N, C, *]` (rank >= 2, any strides); `gamma` and `beta` are
/// `[C]`; `mean` and `rstd` are `[N, G]` in [`stats_dtype`] of `x`. `activation` is the code of
/// [`Activation`](crate::Activation) (0 none, 1 ReLU, 2 SiLU).
///
/// Callers pass valid arguments (see [`try_group_norm`](crate::try_group_norm)); `gamma` and
/// `beta` are always given (ones and zeros for a layer without affine parameters).
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
    /// `y` has the shape and dtype of `x` (and, on the fused kernels, its memory order).
    #[fusion(meta = crate::backend::forward_meta)]
    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        num_groups: usize,
        epsilon: f64,
        activation: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// The gradients `(dx, dgamma, dbeta)` of the forward op given the output gradient `grad`.
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

#[cfg(feature = "cube")]
pub(crate) fn forward_meta(
    x: &burn::backend::fusion::custom::TensorSpec,
    _gamma: &burn::backend::fusion::custom::TensorSpec,
    _beta: &burn::backend::fusion::custom::TensorSpec,
    num_groups: &usize,
    _epsilon: &f64,
    _activation: &u32,
) -> (
    burn::backend::fusion::custom::TensorSpec,
    burn::backend::fusion::custom::TensorSpec,
    burn::backend::fusion::custom::TensorSpec,
) {
    use burn::backend::fusion::custom::TensorSpec;
    let stats = TensorSpec::new([x.shape[0], *num_groups].into(), stats_dtype(x.dtype));
    (x.clone(), stats.clone(), stats)
}

#[cfg(feature = "cube")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_meta(
    _grad: &burn::backend::fusion::custom::TensorSpec,
    x: &burn::backend::fusion::custom::TensorSpec,
    gamma: &burn::backend::fusion::custom::TensorSpec,
    beta: &burn::backend::fusion::custom::TensorSpec,
    _mean: &burn::backend::fusion::custom::TensorSpec,
    _rstd: &burn::backend::fusion::custom::TensorSpec,
    _num_groups: &usize,
    _activation: &u32,
) -> (
    burn::backend::fusion::custom::TensorSpec,
    burn::backend::fusion::custom::TensorSpec,
    burn::backend::fusion::custom::TensorSpec,
) {
    (x.clone(), gamma.clone(), beta.clone())
}
