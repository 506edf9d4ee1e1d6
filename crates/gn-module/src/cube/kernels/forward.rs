//! Forward kernels: per-chunk statistics, one combine per group, one elementwise pass.

use cubecl::prelude::*;

use super::{
    activate, chan_combine, cube_welford, group_base, group_vector, lane_welford, rstd_of,
    welford_push,
};

/// Pass 1: cube `CUBE_POS` summarizes chunk `CUBE_POS % chunks` of group `CUBE_POS / chunks`
/// as `(count, mean, M2)` of the shifted values; the group's first cube also stores the
/// shift. Neighbouring units read neighbouring vectors in both layouts.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
pub fn stats_partial_kernel<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    partials: &mut Tensor<f32>,
    shifts: &mut Tensor<f32>,
    batch: usize,
    channels: usize,
    spatial: usize,
    num_groups: usize,
    chunks: usize,
    #[comptime] block: usize,
    #[comptime] channels_last: bool,
    #[define(F)] _dtype: ElemType,
) {
    let lanes = x.vector_size();
    let cube = CUBE_POS;
    if cube >= batch * num_groups * chunks {
        terminate!();
    }
    let row = cube / chunks;
    let chunk = cube % chunks;
    let cpg = channels / num_groups;
    let group_vecs = cpg * spatial / lanes;
    let chunk_len = group_vecs.div_ceil(chunks);
    let start = chunk * chunk_len;
    let end = select(
        start + chunk_len < group_vecs,
        start + chunk_len,
        group_vecs,
    );
    let per_pos = cpg / lanes;
    let pos_stride = channels / lanes;
    let base = group_base(
        row,
        group_vecs,
        spatial,
        num_groups,
        per_pos,
        pos_stride,
        channels_last,
    );
    let shift = f32::cast_from(x[base].extract(0usize));
    let shift_v = Vector::<f32, N>::new(shift);

    let mut count = 0.0f32;
    let mut mean = Vector::<f32, N>::new(0.0f32);
    let mut m2 = Vector::<f32, N>::new(0.0f32);
    let mut j = start + UNIT_POS as usize;
    while j < end {
        let i = group_vector(base, j, per_pos, pos_stride, channels_last);
        let d = Vector::<f32, N>::cast_from(x[i]) - shift_v;
        count += 1.0f32;
        (mean, m2) = welford_push(d, count, mean, m2);
        j += CUBE_DIM as usize;
    }
    let (un, umean, um2) = lane_welford(count, mean, m2);
    let (tn, tmean, tm2) = cube_welford(un, umean, um2, block);
    if UNIT_POS == 0 {
        partials[cube * 3] = tn;
        partials[cube * 3 + 1] = tmean;
        partials[cube * 3 + 2] = tm2;
        if chunk == 0 {
            shifts[row] = shift;
        }
    }
}

/// Pass 2: one cube per group combines the chunk summaries into `mean`, `rstd` and
/// `row_stats = (shift, mean - shift, rstd)`; with `with_coefs`, also the elementwise pass's
/// per-channel coefficients, planes `(shift, a, b)` with `a = rstd * gamma_c` and
/// `b = beta_c - (mean - shift) * a`.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
pub fn stats_finalize_kernel<P: Float>(
    partials: &Tensor<f32>,
    shifts: &Tensor<f32>,
    gamma: &Tensor<P>,
    beta: &Tensor<P>,
    mean: &mut Tensor<f32>,
    rstd: &mut Tensor<f32>,
    row_stats: &mut Tensor<f32>,
    coefs: &mut Tensor<f32>,
    batch: usize,
    channels: usize,
    num_groups: usize,
    chunks: usize,
    epsilon: f32,
    #[comptime] block: usize,
    #[comptime] with_coefs: bool,
    #[define(P)] _dtype: ElemType,
) {
    let row = CUBE_POS;
    if row >= batch * num_groups {
        terminate!();
    }
    let mut count = 0.0f32;
    let mut mu = 0.0f32;
    let mut m2 = 0.0f32;
    let mut k = UNIT_POS as usize;
    while k < chunks {
        let p = (row * chunks + k) * 3;
        let (n, m, q) = chan_combine(count, mu, m2, partials[p], partials[p + 1], partials[p + 2]);
        count = n;
        mu = m;
        m2 = q;
        k += CUBE_DIM as usize;
    }
    let (tn, mean_d, tm2) = cube_welford(count, mu, m2, block);
    let shift = shifts[row];
    let r = rstd_of(tm2, tn, epsilon);
    if UNIT_POS == 0 {
        mean[row] = shift + mean_d;
        rstd[row] = r;
        row_stats[row * 3] = shift;
        row_stats[row * 3 + 1] = mean_d;
        row_stats[row * 3 + 2] = r;
    }
    if with_coefs {
        let plane = batch * channels;
        let cpg = channels / num_groups;
        let n = row / num_groups;
        let g = row % num_groups;
        let mut cl = UNIT_POS as usize;
        while cl < cpg {
            let c = g * cpg + cl;
            let nc = n * channels + c;
            let a = r * f32::cast_from(gamma[c]);
            coefs[nc] = shift;
            coefs[plane + nc] = a;
            coefs[2 * plane + nc] = f32::cast_from(beta[c]) - mean_d * a;
            cl += CUBE_DIM as usize;
        }
    }
}

/// Pass 3, channels-first, one unit per vector: `y = act((x - shift) * a + b)` with the
/// coefficients of the vector's channel `o / spatial_vecs`.
#[cube(launch)]
pub fn normalize_cf_kernel<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    coefs: &Tensor<f32>,
    y: &mut Tensor<Vector<F, N>>,
    num_vecs: usize,
    spatial_vecs: usize,
    plane: usize,
    #[comptime] act: u32,
    #[define(F)] _dtype: ElemType,
) {
    let o = ABSOLUTE_POS;
    if o >= num_vecs {
        terminate!();
    }
    let nc = o / spatial_vecs;
    let shift = Vector::<f32, N>::new(coefs[nc]);
    let a = Vector::<f32, N>::new(coefs[plane + nc]);
    let b = Vector::<f32, N>::new(coefs[2 * plane + nc]);
    let z = (Vector::<f32, N>::cast_from(x[o]) - shift) * a + b;
    y[o] = Vector::cast_from(activate(z, act));
}

/// Pass 3, channels-last, one unit per vector: as [`normalize_cf_kernel`] with a vector of
/// channels, whose coefficients are read as vectors too.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
pub fn normalize_cl_kernel<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    coefs: &Tensor<Vector<f32, N>>,
    y: &mut Tensor<Vector<F, N>>,
    num_vecs: usize,
    channel_vecs: usize,
    image_vecs: usize,
    plane_vecs: usize,
    #[comptime] act: u32,
    #[define(F)] _dtype: ElemType,
) {
    let o = ABSOLUTE_POS;
    if o >= num_vecs {
        terminate!();
    }
    let ci = (o / image_vecs) * channel_vecs + o % channel_vecs;
    let shift = coefs[ci];
    let a = coefs[plane_vecs + ci];
    let b = coefs[2 * plane_vecs + ci];
    let z = (Vector::<f32, N>::cast_from(x[o]) - shift) * a + b;
    y[o] = Vector::cast_from(activate(z, act));
}
