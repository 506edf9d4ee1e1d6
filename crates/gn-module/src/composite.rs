//! The portable composite path: group normalization from ordinary tensor ops.
//!
//! It runs on every backend, gets its gradients from burn's autodiff, and is the reference the
//! fused kernels are tested against. It is exact for inputs with a large mean: each group is
//! shifted by one of its own elements before any sum (the shift is exact in floating point for
//! values of similar magnitude), and the variance is the mean of squared deviations from the
//! mean, never `E[x^2] - E[x]^2`.

use burn::tensor::{DType, FloatDType, Tensor};

use crate::Activation;
use crate::functional::check_args;

/// Group normalization with ordinary tensor ops; see [`group_norm`](crate::group_norm) for the
/// math and the shapes.
///
/// This function exists to compare against and as the fallback on backends without a fused
/// kernel; use [`try_group_norm`](crate::try_group_norm) to get invalid arguments as errors.
///
/// # Panics
///
/// Panics with a [`GroupNormError`](crate::GroupNormError) message on the arguments
/// [`try_group_norm`](crate::try_group_norm) rejects.
pub fn group_norm<const D: usize>(
    x: Tensor<D>,
    num_groups: usize,
    gamma: Option<Tensor<1>>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
    activation: Activation,
) -> Tensor<D> {
    if let Err(err) = check_args(&x, num_groups, gamma.as_ref(), beta.as_ref(), epsilon) {
        panic!("composite::group_norm: {err}");
    }
    let shape = x.shape();
    if shape.num_elements() == 0 {
        return x;
    }
    let (n, c) = (shape[0], shape[1]);
    let spatial: usize = shape.iter().skip(2).product();
    let group_len = c / num_groups * spatial;

    let dtype = x.dtype();
    let narrow_float = matches!(dtype, DType::F16 | DType::BF16);
    let mut grouped = x.reshape([n, num_groups, group_len]);
    if narrow_float {
        grouped = grouped.cast(FloatDType::F32);
    }

    // Shift by the group's first element so that the sums below see deviations of the order of
    // the spread, not of the mean.
    let shift = grouped.clone().narrow(2, 0, 1).detach();
    let deviations = grouped - shift;
    let mean = deviations.clone().mean_dim(2);
    let centered = deviations - mean;
    let variance = centered.clone().square().mean_dim(2);
    let mut normalized = centered / variance.add_scalar(epsilon).sqrt();
    if narrow_float {
        normalized = normalized.cast(FloatDType::from(dtype));
    }

    let mut out = normalized.reshape([n, c, spatial]);
    if let Some(gamma) = gamma {
        out = out * gamma.reshape([1, c, 1]);
    }
    if let Some(beta) = beta {
        out = out + beta.reshape([1, c, 1]);
    }
    activation.apply(out.reshape(shape))
}
