//! The CubeCL backend's implementation (wgpu, Vulkan, Metal, CUDA, ROCm and burn's CPU
//! runtime): host-side launches of the kernels in [`kernels`].
//!
//! Forward: per-chunk Welford summaries, one combine per group, one elementwise pass. Groups are
//! split into as many chunks as it takes to fill the device, so batch 1-2 (the case GroupNorm
//! exists for) still runs thousands of units. Groups small enough for a cube's registers take
//! one launch instead ([`single_pass_kernel`]). Backward: per-channel sums in chunks, one combine
//! per group, the parameter gradients, one elementwise pass.
//!
//! Inputs keep their layout when it is contiguous channels-first (NCHW) or channels-last (the
//! NHWC-strided views CubeCL convolutions return): they are read in place, as vectors, and
//! `y` / `dx` get the same strides. Other layouts are copied to contiguous first, and a
//! gradient whose layout differs from the input's is copied into the input's, so that the
//! elementwise passes read both at the same offsets.

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
use self::layout::{View3, empty_like, standard, standard_pair};
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
        let (y, mean, rstd) = forward(x, gamma, beta, num_groups, epsilon, activation);
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

/// A cube size for `work` items a cube (each unit taking a few): a power of two from 32 (or
/// `max` if less) to `max`. Idle units would still wait at every step of a cube's reduction.
fn fitted_block(work: usize, max: u32) -> u32 {
    (work.max(1).next_power_of_two().min(1 << 16) as u32).clamp(max.min(32), max)
}

/// How many cubes share one reduction row of `row_len` vectors when there are `rows` rows:
/// enough for about a thousand cubes in all, but at least 4 vectors per unit.
fn chunks_per_row(rows: usize, row_len: usize, block: usize) -> usize {
    const TARGET_CUBES: usize = 1024;
    let wanted = TARGET_CUBES.div_ceil(rows.max(1));
    let useful = (row_len / (block * 4)).max(1);
    wanted.min(useful).clamp(1, 4096)
}

/// The widest vector the device loads at once that divides `run` (the values of one channel
/// in channels-first, of one group at one position in channels-last).
fn vector_size(t: &CubeTensor, run: usize) -> usize {
    t.client
        .io_optimized_vector_sizes(t.dtype.size())
        .filter(|&v| run.is_multiple_of(v))
        .max()
        .unwrap_or(1)
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

/// An f32 `[n, num_groups]` buffer for `mean` or `rstd`.
fn stats_buffer(like: &CubeTensor, n: usize, num_groups: usize) -> CubeTensor {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::new([n, num_groups]),
        DType::F32,
    )
}

/// An elementwise launch over `units` units.
fn elementwise(client: &Client, units: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new(client, units);
    (calculate_cube_count_elemwise(client, units, dim), dim)
}

/// The statistics passes: `(mean, rstd, row_stats)` with `row_stats = (shift, mean - shift,
/// rstd)` per group, and with `coefs` given, the normalize pass's coefficient planes.
#[allow(clippy::too_many_arguments)]
fn statistics(
    x: &CubeTensor,
    view: &View3,
    channels_last: bool,
    vs: usize,
    gamma: &CubeTensor,
    beta: &CubeTensor,
    coefs: Option<&CubeTensor>,
    num_groups: usize,
    epsilon: f32,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let client = x.client.clone();
    let [n, c, s] = view.shape;
    let rows = n * num_groups;
    let group_vecs = c / num_groups * s / vs;
    let max_block = block_size(&client);
    let chunks = chunks_per_row(rows, group_vecs, max_block as usize);
    let block = fitted_block(group_vecs.div_ceil(chunks * 4), max_block);
    let finalize_block = fitted_block(chunks.max(c / num_groups), max_block);
    let (mean, rstd) = (
        stats_buffer(x, n, num_groups),
        stats_buffer(x, n, num_groups),
    );
    let row_stats = f32_buffer(x, rows * 3);
    let partials = f32_buffer(x, rows * chunks * 3);
    let shifts = f32_buffer(x, rows);

    stats_partial_kernel::launch(
        &client,
        cubes(&client, rows * chunks, block),
        CubeDim::new_1d(block),
        vs,
        view.bind(x).into_tensor_arg(),
        partials.clone().into_tensor_arg(),
        shifts.clone().into_tensor_arg(),
        n,
        c,
        s,
        num_groups,
        chunks,
        block as usize,
        channels_last,
        dtype_to_storage_type(x.dtype),
    );
    let with_coefs = coefs.is_some();
    let coefs = coefs.cloned().unwrap_or_else(|| f32_buffer(x, 1));
    stats_finalize_kernel::launch(
        &client,
        cubes(&client, rows, finalize_block),
        CubeDim::new_1d(finalize_block),
        partials.into_tensor_arg(),
        shifts.into_tensor_arg(),
        gamma.clone().into_tensor_arg(),
        beta.clone().into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        row_stats.clone().into_tensor_arg(),
        coefs.into_tensor_arg(),
        n,
        c,
        num_groups,
        chunks,
        epsilon,
        finalize_block as usize,
        with_coefs,
        dtype_to_storage_type(gamma.dtype),
    );
    (mean, rstd, row_stats)
}

/// The forward kernels: `(y, mean, rstd)`.
fn forward(
    x: CubeTensor,
    gamma: CubeTensor,
    beta: CubeTensor,
    num_groups: usize,
    epsilon: f64,
    activation: u32,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let (x, view, channels_last) = standard(x);
    let (gamma, beta) = (into_contiguous(gamma), into_contiguous(beta));
    let client = x.client.clone();
    let [n, c, s] = view.shape;
    let vs = vector_size(&x, if channels_last { c / num_groups } else { s });
    let group_vecs = c / num_groups * s / vs;
    let max_block = block_size(&client);
    if group_vecs <= SINGLE_PASS_VECS * max_block as usize {
        return single_pass(
            &x,
            &view,
            channels_last,
            vs,
            &gamma,
            &beta,
            num_groups,
            epsilon as f32,
            activation,
        );
    }
    let coefs = f32_buffer(&x, 3 * n * c);
    let (mean, rstd, _) = statistics(
        &x,
        &view,
        channels_last,
        vs,
        &gamma,
        &beta,
        Some(&coefs),
        num_groups,
        epsilon as f32,
    );

    let y = empty_like(&x);
    let num_vecs = view.numel() / vs;
    let (count, dim) = elementwise(&client, num_vecs);
    let x_dtype = dtype_to_storage_type(x.dtype);
    let (x_arg, y_arg) = (
        view.bind(&x).into_tensor_arg(),
        view.bind(&y).into_tensor_arg(),
    );
    if channels_last {
        normalize_cl_kernel::launch(
            &client,
            count,
            dim,
            vs,
            x_arg,
            coefs.into_tensor_arg(),
            y_arg,
            num_vecs,
            c / vs,
            s * c / vs,
            n * c / vs,
            activation,
            x_dtype,
        );
    } else {
        normalize_cf_kernel::launch(
            &client,
            count,
            dim,
            vs,
            x_arg,
            coefs.into_tensor_arg(),
            y_arg,
            num_vecs,
            s / vs,
            n * c,
            activation,
            x_dtype,
        );
    }
    (y, mean, rstd)
}

/// Groups of at most this many vectors a unit (of a cube of the device's largest size) are
/// normalized in one launch by [`single_pass_kernel`].
const SINGLE_PASS_VECS: usize = 4;

/// The forward in one launch, one cube per group: `(y, mean, rstd)`.
#[allow(clippy::too_many_arguments)]
fn single_pass(
    x: &CubeTensor,
    view: &View3,
    channels_last: bool,
    vs: usize,
    gamma: &CubeTensor,
    beta: &CubeTensor,
    num_groups: usize,
    epsilon: f32,
    activation: u32,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let client = x.client.clone();
    let [n, c, s] = view.shape;
    let rows = n * num_groups;
    let group_vecs = c / num_groups * s / vs;
    let block = fitted_block(group_vecs.div_ceil(SINGLE_PASS_VECS), block_size(&client));
    let per_unit = group_vecs.div_ceil(block as usize);
    let (mean, rstd) = (
        stats_buffer(x, n, num_groups),
        stats_buffer(x, n, num_groups),
    );
    let y = empty_like(x);
    single_pass_kernel::launch(
        &client,
        cubes(&client, rows, block),
        CubeDim::new_1d(block),
        vs,
        view.bind(x).into_tensor_arg(),
        gamma.clone().into_tensor_arg(),
        beta.clone().into_tensor_arg(),
        view.bind(&y).into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        n,
        c,
        s,
        num_groups,
        epsilon,
        block as usize,
        per_unit,
        channels_last,
        activation,
        [
            dtype_to_storage_type(x.dtype),
            dtype_to_storage_type(gamma.dtype),
        ],
    );
    (y, mean, rstd)
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
    let (x, grad, view, channels_last) = standard_pair(x, grad);
    let (gamma, beta, rstd) = (
        into_contiguous(gamma),
        into_contiguous(beta),
        into_contiguous(rstd),
    );
    let client = x.client.clone();
    let [n, c, s] = view.shape;
    let block = block_size(&client);
    let vs = vector_size(&x, if channels_last { c / num_groups } else { s });
    let x_dtype = dtype_to_storage_type(x.dtype);
    let p_dtype = dtype_to_storage_type(gamma.dtype);
    let plane = n * c;

    // With an activation, its derivative needs the pre-activation output and so the exact
    // group mean before the sums: recompute the statistics (one more read of x). Without one,
    // the sums carry what the mean needs. (The epsilon does not matter: only the shift and
    // the mean are read.)
    let row_stats = if activation != 0 {
        let (_, _, row_stats) = statistics(
            &x,
            &view,
            channels_last,
            vs,
            &gamma,
            &beta,
            None,
            num_groups,
            1.0,
        );
        row_stats
    } else {
        f32_buffer(&x, 1)
    };

    let coefs = f32_buffer(&x, 5 * plane);
    let (count, dim) = elementwise(&client, plane);
    backward_coef_kernel::launch(
        &client,
        count,
        dim,
        view.bind(&x).into_tensor_arg(),
        gamma.clone().into_tensor_arg(),
        beta.into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        row_stats.into_tensor_arg(),
        coefs.clone().into_tensor_arg(),
        num_groups,
        activation,
        [x_dtype, p_dtype],
    );

    let x3 = view.bind(&x);
    let dy3 = view.bind(&grad);
    let chunks;
    let partials;
    if channels_last {
        // Enough units to fill a device, at least 16 positions each.
        let columns = n * c / vs;
        chunks = 65536usize.div_ceil(columns).min(s / 16).max(1);
        partials = f32_buffer(&x, plane * chunks * 3);
        let (count, dim) = elementwise(&client, columns * chunks);
        backward_partial_cl_kernel::launch(
            &client,
            count,
            dim,
            vs,
            dy3.clone().into_tensor_arg(),
            x3.clone().into_tensor_arg(),
            coefs.clone().into_tensor_arg(),
            partials.clone().into_tensor_arg(),
            n,
            c / vs,
            s,
            chunks,
            activation,
            x_dtype,
        );
    } else {
        // Short channels get small cubes (a cube's units share one channel).
        chunks = chunks_per_row(plane, s / vs, block as usize);
        let block = fitted_block((s / vs).div_ceil(chunks * 4), block);
        partials = f32_buffer(&x, plane * chunks * 3);
        backward_partial_cf_kernel::launch(
            &client,
            cubes(&client, plane * chunks, block),
            CubeDim::new_1d(block),
            vs,
            dy3.clone().into_tensor_arg(),
            x3.clone().into_tensor_arg(),
            coefs.clone().into_tensor_arg(),
            partials.clone().into_tensor_arg(),
            plane,
            s / vs,
            chunks,
            block as usize,
            activation,
            x_dtype,
        );
    }

    let sums = f32_buffer(&x, plane * 2);
    let group_block = fitted_block(c / num_groups, block);
    backward_group_kernel::launch(
        &client,
        cubes(&client, n * num_groups, group_block),
        CubeDim::new_1d(group_block),
        partials.into_tensor_arg(),
        gamma.clone().into_tensor_arg(),
        rstd.into_tensor_arg(),
        sums.clone().into_tensor_arg(),
        coefs.clone().into_tensor_arg(),
        c,
        num_groups,
        chunks,
        (c / num_groups * s) as f32,
        group_block as usize,
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
    let (count, dim) = elementwise(&client, c);
    backward_param_kernel::launch(
        &client,
        count,
        dim,
        sums.into_tensor_arg(),
        dgamma.clone().into_tensor_arg(),
        dbeta.clone().into_tensor_arg(),
        n,
        p_dtype,
    );

    let dx = empty_like(&x);
    let num_vecs = view.numel() / vs;
    let (count, dim) = elementwise(&client, num_vecs);
    let dx3 = view.bind(&dx);
    if channels_last {
        backward_dx_cl_kernel::launch(
            &client,
            count,
            dim,
            vs,
            dy3.into_tensor_arg(),
            x3.into_tensor_arg(),
            coefs.into_tensor_arg(),
            dx3.into_tensor_arg(),
            num_vecs,
            c / vs,
            s * c / vs,
            plane / vs,
            activation,
            x_dtype,
        );
    } else {
        backward_dx_cf_kernel::launch(
            &client,
            count,
            dim,
            vs,
            dy3.into_tensor_arg(),
            x3.into_tensor_arg(),
            coefs.into_tensor_arg(),
            dx3.into_tensor_arg(),
            num_vecs,
            s / vs,
            plane,
            activation,
            x_dtype,
        );
    }
    (dx, dgamma, dbeta)
}
