//! The CubeCL backend's implementation (wgpu, Vulkan, Metal, CUDA, ROCm and burn's CPU
//! runtime): host-side launches of the kernels in [`kernels`].
//!
//! Forward: per-chunk Welford summaries, one combine per group, one elementwise pass. Groups are
//! split into as many chunks as it takes to fill the device, so batch 1-2 (the case GroupNorm
//! exists for) still runs thousands of units. Groups small enough for a cube's registers take
//! one launch instead ([`kernels::single_pass_kernel`]). Backward: per-channel sums in chunks,
//! one combine per group, the parameter gradients, one elementwise pass.
//!
//! Inputs keep their layout when it is contiguous channels-first (NCHW) or channels-last (the
//! NHWC-strided views CubeCL convolutions return): they are read in place, as vectors, and
//! `y` / `dx` get the same strides. Other layouts are copied to contiguous first, and a
//! gradient whose layout differs from the input's is copied into the input's, so that the
//! elementwise passes read both at the same offsets.

mod backward;
mod forward;
mod kernels;
mod layout;

use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::cast;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use self::backward::backward;
use self::forward::forward;
use crate::backend::{GroupNormBackend, assert_backward_args, assert_forward_args, stats_dtype};
use crate::probe::{self, Kernel, Path};

impl GroupNormBackend for CubeBackend {
    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        num_groups: usize,
        epsilon: f64,
        activation: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        assert_forward_args(&x, &gamma, &beta, num_groups, epsilon, activation);
        probe::hit(Kernel::Cube, Path::Forward);
        let stats = stats_dtype(x.dtype);
        let (y, mean, rstd) = forward(x, gamma, beta, num_groups, epsilon, activation);
        (y, to_dtype(mean, stats), to_dtype(rstd, stats))
    }

    fn group_norm_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        num_groups: usize,
        activation: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        assert_backward_args(
            &grad, &x, &gamma, &beta, &mean, &rstd, num_groups, activation,
        );
        probe::hit(Kernel::Cube, Path::Backward);
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
