//! The CubeCL backend's implementation (wgpu, Vulkan, Metal, CUDA, ROCm and burn's CPU
//! runtime): host-side launches of the kernels in [`kernels`].
//!
//! Forward: per-chunk Welford summaries, one combine per group, one elementwise pass. Groups are
//! split into as many chunks as it takes to fill the device, so batch 1-2 (the case GroupNorm
//! exists for) still runs thousands of units. Backward: per-channel sums in chunks, one combine
//! per group, the parameter gradients, one elementwise pass.
//!
//! Inputs keep their layout: a dense tensor in any axis order (NCHW, or the NHWC-strided views
//! CubeCL convolutions return) is read in place and `y` / `dx` get the same strides.

mod kernels;
mod layout;

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::{cast, into_contiguous};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use self::kernels::*;
use self::layout::{View3, dense, empty_like, strided};
use crate::backend::{GroupNormBackend, stats_dtype};

impl GroupNormBackend for CubeBackend {
    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        num_groups: usize,
        epsilon: f64,
        activation: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let stats = stats_dtype(x.dtype);
        let (y, mean, rstd, _row_stats) = forward(x, gamma, beta, num_groups, epsilon, activation);
        (y, to_dtype(mean, stats), to_dtype(rstd, stats))
    }

    fn group_norm_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        _mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        num_groups: usize,
        activation: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        backward(
            grad,
            x,
            gamma,
            beta,
            to_dtype(rstd, DType::F32),
            num_groups,
            activation,
        )
    }
}

fn to_dtype(t: CubeTensor, dtype: DType) -> CubeTensor {
    if t.dtype == dtype { t } else { cast(t, dtype) }
}

/// Units per cube: a power of two up to 256 that the device accepts (on burn's CPU runtime the
/// limit is the core count).
fn block_size(client: &Client) -> u32 {
    let max_units = client
        .properties()
        .hardware
        .max_units_per_cube
        .clamp(1, 256);
    1 << (31 - max_units.leading_zeros())
}

/// How many cubes share one reduction row of `row_len` values when there are `rows` rows:
/// enough for about a thousand cubes in all, but at least 8 values per unit.
fn chunks_per_row(rows: usize, row_len: usize, block: usize) -> usize {
    const TARGET_CUBES: usize = 1024;
    let wanted = TARGET_CUBES.div_ceil(rows.max(1));
    let useful = (row_len / (block * 8)).max(1);
    wanted.min(useful).clamp(1, 4096)
}

fn cubes(client: &Client, count: usize, block: u32) -> CubeCount {
    calculate_cube_count_elemwise(client, count * block as usize, CubeDim::new_1d(block))
}

fn f32_buffer(like: &CubeTensor, len: usize) -> CubeTensor {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::new([len.max(1)]),
        DType::F32,
    )
}

/// The forward kernels; also returns the `(shift, mean - shift, rstd)` per group.
fn forward(
    x: CubeTensor,
    gamma: CubeTensor,
    beta: CubeTensor,
    num_groups: usize,
    epsilon: f64,
    activation: u32,
) -> (CubeTensor, CubeTensor, CubeTensor, CubeTensor) {
    let (x, view) = dense(x);
    let (gamma, beta) = (into_contiguous(gamma), into_contiguous(beta));
    let client = x.client.clone();
    let [n, c, s] = view.shape;
    let rows = n * num_groups;
    let group_len = c / num_groups * s;
    let block = block_size(&client);
    let chunks = chunks_per_row(rows, group_len, block as usize);
    let x_dtype = dtype_to_storage_type(x.dtype);
    let p_dtype = dtype_to_storage_type(gamma.dtype);

    let stats = |x: &CubeTensor| {
        empty_device_contiguous_dtype(
            client.clone(),
            x.device.clone(),
            Shape::new([n, num_groups]),
            DType::F32,
        )
    };
    let (mean, rstd) = (stats(&x), stats(&x));
    let row_stats = f32_buffer(&x, rows * 3);
    let partials = f32_buffer(&x, rows * chunks * 3);
    let x3 = view.bind(&x);

    stats_partial_kernel::launch(
        &client,
        cubes(&client, rows * chunks, block),
        CubeDim::new_1d(block),
        x3.clone().into_tensor_arg(),
        partials.clone().into_tensor_arg(),
        num_groups,
        chunks,
        block as usize,
        view.channels_last(),
        x_dtype,
    );
    stats_finalize_kernel::launch(
        &client,
        cubes(&client, rows, block),
        CubeDim::new_1d(block),
        x3.clone().into_tensor_arg(),
        partials.into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        row_stats.clone().into_tensor_arg(),
        num_groups,
        chunks,
        epsilon as f32,
        block as usize,
        x_dtype,
    );

    let y = empty_like(&x);
    let numel = view.numel();
    let dim = CubeDim::new(&client, numel);
    normalize_kernel::launch(
        &client,
        calculate_cube_count_elemwise(&client, numel, dim),
        dim,
        x3.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        row_stats.clone().into_tensor_arg(),
        view.bind(&y).into_tensor_arg(),
        num_groups,
        activation,
        [x_dtype, p_dtype],
    );
    (y, mean, rstd, row_stats)
}

fn backward(
    grad: CubeTensor,
    x: CubeTensor,
    gamma: CubeTensor,
    beta: CubeTensor,
    rstd: CubeTensor,
    num_groups: usize,
    activation: u32,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let (x, view) = dense(x);
    let (grad, grad_view) = strided(grad);
    let (gamma, beta, rstd) = (
        into_contiguous(gamma),
        into_contiguous(beta),
        into_contiguous(rstd),
    );
    let client = x.client.clone();
    let [n, c, s] = view.shape;
    let block = block_size(&client);
    let x_dtype = dtype_to_storage_type(x.dtype);
    let p_dtype = dtype_to_storage_type(gamma.dtype);
    let x3 = view.bind(&x);
    let dy3 = grad_view.bind(&grad);

    // With an activation, its derivative needs the pre-activation output and so the exact
    // group mean before the sums: recompute the statistics (one more read of x). Without one,
    // the sums carry what the mean needs.
    let row_stats = if activation != 0 {
        forward_stats_only(&x, &view, num_groups, block)
    } else {
        f32_buffer(&x, 1)
    };

    let coefs = f32_buffer(&x, n * c * 3);
    let dim = CubeDim::new(&client, n * c);
    backward_coef_kernel::launch(
        &client,
        calculate_cube_count_elemwise(&client, n * c, dim),
        dim,
        x3.clone().into_tensor_arg(),
        gamma.clone().into_tensor_arg(),
        beta.into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        row_stats.into_tensor_arg(),
        coefs.clone().into_tensor_arg(),
        num_groups,
        activation,
        [x_dtype, p_dtype],
    );

    let chunks = chunks_per_row(n * c, s, block as usize);
    let partials = f32_buffer(&x, n * c * chunks * 3);
    backward_partial_kernel::launch(
        &client,
        cubes(&client, n * c * chunks, block),
        CubeDim::new_1d(block),
        dy3.clone().into_tensor_arg(),
        x3.clone().into_tensor_arg(),
        coefs.clone().into_tensor_arg(),
        partials.clone().into_tensor_arg(),
        chunks,
        block as usize,
        activation,
        x_dtype,
    );

    let sums = f32_buffer(&x, n * c * 2);
    let group_coefs = f32_buffer(&x, n * num_groups * 2);
    backward_group_kernel::launch(
        &client,
        cubes(&client, n * num_groups, block),
        CubeDim::new_1d(block),
        partials.into_tensor_arg(),
        gamma.clone().into_tensor_arg(),
        rstd.into_tensor_arg(),
        sums.clone().into_tensor_arg(),
        group_coefs.clone().into_tensor_arg(),
        c,
        num_groups,
        chunks,
        (c / num_groups * s) as f32,
        block as usize,
        p_dtype,
    );

    let param = || {
        empty_device_contiguous_dtype(
            client.clone(),
            x.device.clone(),
            Shape::new([c]),
            gamma.dtype,
        )
    };
    let (dgamma, dbeta) = (param(), param());
    let dim = CubeDim::new(&client, c);
    backward_param_kernel::launch(
        &client,
        calculate_cube_count_elemwise(&client, c, dim),
        dim,
        sums.into_tensor_arg(),
        dgamma.clone().into_tensor_arg(),
        dbeta.clone().into_tensor_arg(),
        n,
        p_dtype,
    );

    let dx = empty_like(&x);
    let numel = view.numel();
    let dim = CubeDim::new(&client, numel);
    backward_dx_kernel::launch(
        &client,
        calculate_cube_count_elemwise(&client, numel, dim),
        dim,
        dy3.into_tensor_arg(),
        x3.into_tensor_arg(),
        coefs.into_tensor_arg(),
        group_coefs.into_tensor_arg(),
        view.bind(&dx).into_tensor_arg(),
        num_groups,
        activation,
        x_dtype,
    );
    (dx, dgamma, dbeta)
}

/// The forward's statistics passes alone: `(shift, mean - shift, rstd)` per group.
fn forward_stats_only(x: &CubeTensor, view: &View3, num_groups: usize, block: u32) -> CubeTensor {
    let client = x.client.clone();
    let [n, c, s] = view.shape;
    let rows = n * num_groups;
    let chunks = chunks_per_row(rows, c / num_groups * s, block as usize);
    let x_dtype = dtype_to_storage_type(x.dtype);
    let partials = f32_buffer(x, rows * chunks * 3);
    let row_stats = f32_buffer(x, rows * 3);
    let (mean, rstd) = (f32_buffer(x, rows), f32_buffer(x, rows));
    let x3 = view.bind(x);
    stats_partial_kernel::launch(
        &client,
        cubes(&client, rows * chunks, block),
        CubeDim::new_1d(block),
        x3.clone().into_tensor_arg(),
        partials.clone().into_tensor_arg(),
        num_groups,
        chunks,
        block as usize,
        view.channels_last(),
        x_dtype,
    );
    // The epsilon does not matter here: only the shift and the mean are read.
    stats_finalize_kernel::launch(
        &client,
        cubes(&client, rows, block),
        CubeDim::new_1d(block),
        x3.into_tensor_arg(),
        partials.into_tensor_arg(),
        mean.into_tensor_arg(),
        rstd.into_tensor_arg(),
        row_stats.clone().into_tensor_arg(),
        num_groups,
        chunks,
        1.0f32,
        block as usize,
        x_dtype,
    );
    row_stats
}
