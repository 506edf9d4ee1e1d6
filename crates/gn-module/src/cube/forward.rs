//! Host side of the forward: the statistics passes, the normalize pass, and the one-launch
//! forward for small groups.

use burn::backend::cubecl::dtype_to_storage_type;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::kernels::*;
use super::layout::{View3, empty_like, standard};
use super::{
    block_size, chunks_per_row, cubes, elementwise, f32_buffer, fitted_block, stats_buffer,
    vector_size,
};

/// The statistics passes: `(mean, rstd, row_stats)` with `row_stats = (shift, mean - shift,
/// rstd)` per group, and with `coefs` given, the normalize pass's coefficient planes.
#[allow(clippy::too_many_arguments)]
pub(super) fn statistics(
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
pub(super) fn forward(
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
