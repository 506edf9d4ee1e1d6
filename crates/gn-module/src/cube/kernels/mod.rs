//! The CubeCL kernels. Statistics and coefficients are f32 whatever the element type `F`
//! (f16, bf16, f32; f64 where the runtime has it); gamma and beta have their own type `P`.
//!
//! Every group is shifted by its first element `k` before any sum (`d = x - k`), as on the CPU,
//! so that inputs whose mean dwarfs their spread keep full precision in f32; per-unit sums use
//! Welford's update and cubes combine them with Chan's formula.
//!
//! `x`, `y`, `dy` and `dx` are dense buffers read and written as vectors of `N` values (16-byte
//! loads where the shape allows), in one of two layouts: channels-first (`[N, C, S]`
//! contiguous; a vector lies within one channel) or channels-last (`[N, S, C]` in memory, the
//! NHWC-strided views CubeCL convolutions return; a vector spans channels of one group). The
//! elementwise passes read per-channel coefficients, so they do no integer division per
//! value, only one or two per vector.
//!
//! Coefficient buffers are planes of `N * C` values: plane `k` of channel `nc = n * C + c`
//! is at `k * N * C + nc`, so that channels-last kernels read a vector of channels at once.

mod backward;
mod forward;
mod single_pass;

pub use backward::*;
pub use forward::*;
pub use single_pass::*;

use cubecl::prelude::*;

/// ReLU and SiLU codes, from their one definition.
pub(crate) const ACT_RELU: u32 = crate::Activation::CODE_RELU;
pub(crate) const ACT_SILU: u32 = crate::Activation::CODE_SILU;

#[cube]
fn activate<N: Size>(z: Vector<f32, N>, #[comptime] act: u32) -> Vector<f32, N> {
    let mut out = z;
    if comptime!(act == ACT_RELU) {
        // `z < 0` is false for NaN, which passes through as in PyTorch.
        let zero = Vector::<f32, N>::new(0.0f32);
        out = select_many(z.less_than(&zero), zero, z);
    }
    if comptime!(act == ACT_SILU) {
        out = z / (Vector::<f32, N>::new(1.0f32) + (-z).exp());
    }
    out
}

/// `dy * act'(z)`.
#[cube]
fn activation_grad<N: Size>(
    dy: Vector<f32, N>,
    z: Vector<f32, N>,
    #[comptime] act: u32,
) -> Vector<f32, N> {
    let mut out = dy;
    if comptime!(act == ACT_RELU) {
        let zero = Vector::<f32, N>::new(0.0f32);
        out = select_many(z.greater_than(&zero), dy, zero);
    }
    if comptime!(act == ACT_SILU) {
        let one = Vector::<f32, N>::new(1.0f32);
        let s = one / (one + (-z).exp());
        out = dy * s * (one + z * (one - s));
    }
    out
}

/// Where group `row` starts, in vectors: channels-first, the group is one run of vectors;
/// channels-last, `per_pos = cpg / lanes` vectors at each position, positions
/// `pos_stride = channels / lanes` vectors apart.
#[cube]
fn group_base(
    row: usize,
    group_vecs: usize,
    spatial: usize,
    num_groups: usize,
    per_pos: usize,
    pos_stride: usize,
    #[comptime] channels_last: bool,
) -> usize {
    let mut base = row * group_vecs;
    if channels_last {
        base = (row / num_groups) * spatial * pos_stride + (row % num_groups) * per_pos;
    }
    base
}

/// The buffer index of the group's vector `j` (see [`group_base`]).
#[cube]
fn group_vector(
    base: usize,
    j: usize,
    per_pos: usize,
    pos_stride: usize,
    #[comptime] channels_last: bool,
) -> usize {
    let mut i = base + j;
    if channels_last {
        i = base + (j / per_pos) * pos_stride + j % per_pos;
    }
    i
}

/// The sum of a vector's lanes.
#[cube]
fn lane_sum<N: Size>(v: Vector<f32, N>) -> f32 {
    let mut total = 0.0f32;
    #[unroll]
    for k in 0..v.vector_size() {
        total += v.extract(k);
    }
    total
}

/// Chan et al.'s combination of two `(count, mean, M2)` summaries.
#[cube]
fn chan_combine(
    n_a: f32,
    mean_a: f32,
    m2_a: f32,
    n_b: f32,
    mean_b: f32,
    m2_b: f32,
) -> (f32, f32, f32) {
    let n = n_a + n_b;
    let w_b = n_b / select(n > 0.0f32, n, 1.0f32);
    let delta = mean_b - mean_a;
    (
        n,
        mean_a + delta * w_b,
        m2_a + m2_b + delta * delta * n_a * w_b,
    )
}

/// Welford's update of per-lane `(mean, M2)` with `d`, the `count`-th value of every lane (one
/// division per vector).
#[cube]
fn welford_push<N: Size>(
    d: Vector<f32, N>,
    count: f32,
    mean: Vector<f32, N>,
    m2: Vector<f32, N>,
) -> (Vector<f32, N>, Vector<f32, N>) {
    let delta = d - mean;
    let mean = mean + delta * Vector::<f32, N>::new(1.0f32 / count);
    (mean, m2 + delta * (d - mean))
}

/// `1 / sqrt(var + epsilon)` of the population variance `m2 / count`; a rounding negative
/// variance is clamped, NaN stays NaN.
#[cube]
fn rstd_of(m2: f32, count: f32, epsilon: f32) -> f32 {
    let var = m2 / count;
    let var = select(var < 0.0f32, 0.0f32, var);
    1.0f32 / (var + epsilon).sqrt()
}

/// One `(count, mean, M2)` from per-lane Welford summaries that all hold `count` values.
#[cube]
fn lane_welford<N: Size>(count: f32, mean: Vector<f32, N>, m2: Vector<f32, N>) -> (f32, f32, f32) {
    let lanes = mean.vector_size();
    let mu = lane_sum(mean) / f32::cast_from(lanes);
    let mut q = 0.0f32;
    #[unroll]
    for k in 0..lanes {
        let dm = mean.extract(k) - mu;
        q += m2.extract(k) + count * dm * dm;
    }
    (count * f32::cast_from(lanes), mu, q)
}

/// Combines one Welford summary per unit into the cube's (returned to every unit).
/// `block` is `CUBE_DIM`, a power of two.
#[cube]
fn cube_welford(count: f32, mean: f32, m2: f32, #[comptime] block: usize) -> (f32, f32, f32) {
    let mut shared = Shared::<[f32]>::new_slice(3 * block);
    let u = UNIT_POS as usize;
    shared[3 * u] = count;
    shared[3 * u + 1] = mean;
    shared[3 * u + 2] = m2;
    sync_cube();
    let mut active = CUBE_DIM;
    while active > 1 {
        active /= 2;
        if UNIT_POS < active {
            let a = 3 * (UNIT_POS as usize);
            let b = 3 * ((UNIT_POS + active) as usize);
            let (n, m, q) = chan_combine(
                shared[a],
                shared[a + 1],
                shared[a + 2],
                shared[b],
                shared[b + 1],
                shared[b + 2],
            );
            shared[a] = n;
            shared[a + 1] = m;
            shared[a + 2] = q;
        }
        sync_cube();
    }
    (shared[0], shared[1], shared[2])
}

/// Sums three values over the cube (returned to every unit).
#[cube]
fn cube_sum3(x: f32, y: f32, z: f32, #[comptime] block: usize) -> (f32, f32, f32) {
    let mut shared = Shared::<[f32]>::new_slice(3 * block);
    let u = UNIT_POS as usize;
    shared[3 * u] = x;
    shared[3 * u + 1] = y;
    shared[3 * u + 2] = z;
    sync_cube();
    let mut active = CUBE_DIM;
    while active > 1 {
        active /= 2;
        if UNIT_POS < active {
            let a = 3 * (UNIT_POS as usize);
            let b = 3 * ((UNIT_POS + active) as usize);
            let (vx, vy, vz) = (shared[b], shared[b + 1], shared[b + 2]);
            shared[a] += vx;
            shared[a + 1] += vy;
            shared[a + 2] += vz;
        }
        sync_cube();
    }
    (shared[0], shared[1], shared[2])
}
