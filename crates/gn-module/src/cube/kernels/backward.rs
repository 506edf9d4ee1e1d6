//! Backward kernels: per-channel coefficients, per-channel sums in chunks, one combine per
//! group, the parameter gradients, one elementwise pass.
//!
//! `coefs` holds five planes per channel: `(shift, a, b)` as in the forward (`b` only with an
//! activation), then the group's `dx = a dz + cx d + c0` coefficients `(cx, c0)`.

use cubecl::prelude::*;

use super::{activation_grad, cube_sum3, lane_sum};

/// Pass 0, one unit per `(n, c)`: planes `(shift, a, b)`. `x` is the `[N, C, S]` view with
/// element strides (only each group's first value is read). Without an activation `b` is not
/// needed (and `row_stats` is not read).
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
pub fn backward_coef_kernel<F: Float, P: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<P>,
    beta: &Tensor<P>,
    rstd: &Tensor<f32>,
    row_stats: &Tensor<f32>,
    coefs: &mut Tensor<f32>,
    num_groups: usize,
    #[comptime] act: u32,
    #[define(F, P)] _dtypes: [ElemType; 2],
) {
    let channels = x.shape(1);
    let plane = x.shape(0) * channels;
    let nc = ABSOLUTE_POS;
    if nc >= plane {
        terminate!();
    }
    let n = nc / channels;
    let c = nc % channels;
    let cpg = channels / num_groups;
    let row = n * num_groups + c / cpg;
    let a = rstd[row] * f32::cast_from(gamma[c]);
    coefs[nc] = f32::cast_from(x[n * x.stride(0) + (c / cpg) * cpg * x.stride(1)]);
    coefs[plane + nc] = a;
    let mut b = 0.0f32;
    if comptime!(act != 0) {
        b = f32::cast_from(beta[c]) - row_stats[row * 3 + 1] * a;
    }
    coefs[2 * plane + nc] = b;
}

/// Pass 1, channels-first: cube `CUBE_POS` sums chunk `CUBE_POS % chunks` of channel
/// `nc = CUBE_POS / chunks`: `(Σ dz d, Σ dz, Σ d)` with `d = x - shift`,
/// `dz = dy * act'(d * a + b)`. `dy` has `x`'s layout.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
pub fn backward_partial_cf_kernel<F: Float, N: Size>(
    dy: &Tensor<Vector<F, N>>,
    x: &Tensor<Vector<F, N>>,
    coefs: &Tensor<f32>,
    partials: &mut Tensor<f32>,
    plane: usize,
    spatial_vecs: usize,
    chunks: usize,
    #[comptime] block: usize,
    #[comptime] act: u32,
    #[define(F)] _dtype: ElemType,
) {
    let cube = CUBE_POS;
    if cube >= plane * chunks {
        terminate!();
    }
    let nc = cube / chunks;
    let chunk = cube % chunks;
    let shift = Vector::<f32, N>::new(coefs[nc]);
    let a = Vector::<f32, N>::new(coefs[plane + nc]);
    let b = Vector::<f32, N>::new(coefs[2 * plane + nc]);
    let chunk_len = spatial_vecs.div_ceil(chunks);
    let start = chunk * chunk_len;
    let end = select(
        start + chunk_len < spatial_vecs,
        start + chunk_len,
        spatial_vecs,
    );
    let base = nc * spatial_vecs;

    let mut p = Vector::<f32, N>::new(0.0f32);
    let mut q = Vector::<f32, N>::new(0.0f32);
    let mut t = Vector::<f32, N>::new(0.0f32);
    let mut s = start + UNIT_POS as usize;
    while s < end {
        let i = base + s;
        let d = Vector::<f32, N>::cast_from(x[i]) - shift;
        let dz = activation_grad(Vector::<f32, N>::cast_from(dy[i]), d * a + b, act);
        p += dz * d;
        q += dz;
        t += d;
        s += CUBE_DIM as usize;
    }
    let (tp, tq, tt) = cube_sum3(lane_sum(p), lane_sum(q), lane_sum(t), block);
    if UNIT_POS == 0 {
        partials[cube * 3] = tp;
        partials[cube * 3 + 1] = tq;
        partials[cube * 3 + 2] = tt;
    }
}

/// Pass 1, channels-last: one unit per `(n, vector of channels, chunk of positions)`, units
/// of neighbouring channel vectors side by side so that a position's channels are read
/// together. Writes the same partial sums as [`backward_partial_cf_kernel`].
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
pub fn backward_partial_cl_kernel<F: Float, N: Size>(
    dy: &Tensor<Vector<F, N>>,
    x: &Tensor<Vector<F, N>>,
    coefs: &Tensor<Vector<f32, N>>,
    partials: &mut Tensor<f32>,
    batch: usize,
    channel_vecs: usize,
    spatial: usize,
    chunks: usize,
    #[comptime] act: u32,
    #[define(F)] _dtype: ElemType,
) {
    let lanes = x.vector_size();
    let u = ABSOLUTE_POS;
    if u >= batch * channel_vecs * chunks {
        terminate!();
    }
    let k = u % channel_vecs;
    let rest = u / channel_vecs;
    let chunk = rest % chunks;
    let n = rest / chunks;
    let plane_vecs = batch * channel_vecs;
    let ci = n * channel_vecs + k;
    let shift = coefs[ci];
    let a = coefs[plane_vecs + ci];
    let b = coefs[2 * plane_vecs + ci];
    let chunk_len = spatial.div_ceil(chunks);
    let start = chunk * chunk_len;
    let end = select(start + chunk_len < spatial, start + chunk_len, spatial);

    let mut p = Vector::<f32, N>::new(0.0f32);
    let mut q = Vector::<f32, N>::new(0.0f32);
    let mut t = Vector::<f32, N>::new(0.0f32);
    let mut s = start;
    while s < end {
        let i = (n * spatial + s) * channel_vecs + k;
        let d = Vector::<f32, N>::cast_from(x[i]) - shift;
        let dz = activation_grad(Vector::<f32, N>::cast_from(dy[i]), d * a + b, act);
        p += dz * d;
        q += dz;
        t += d;
        s += 1;
    }
    #[unroll]
    for l in 0..lanes {
        let idx = ((ci * lanes + l) * chunks + chunk) * 3;
        partials[idx] = p.extract(l);
        partials[idx + 1] = q.extract(l);
        partials[idx + 2] = t.extract(l);
    }
}

/// Pass 2, one cube per group: the per-channel totals become
/// `sums = (h_c, Σ dz)` with `h_c = Σ dz x_hat = rstd (Σ dz d - mean_d Σ dz)`, and the group's
/// `dx = a_c dz + cx d + c0` coefficients go to planes 3 and 4 of each of its channels:
/// `cx = -rstd² Σ_c gamma_c h_c / M`, `c0 = -rstd Σ_c gamma_c Σ dz / M - cx mean_d`.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
pub fn backward_group_kernel<P: Float>(
    partials: &Tensor<f32>,
    gamma: &Tensor<P>,
    rstd: &Tensor<f32>,
    sums: &mut Tensor<f32>,
    coefs: &mut Tensor<f32>,
    channels: usize,
    num_groups: usize,
    chunks: usize,
    group_len: f32,
    #[comptime] block: usize,
    #[define(P)] _dtype: ElemType,
) {
    let row = CUBE_POS;
    let plane = rstd.shape(0) * channels;
    if row >= rstd.shape(0) * num_groups {
        terminate!();
    }
    let n = row / num_groups;
    let g = row % num_groups;
    let cpg = channels / num_groups;

    // Per channel totals; the group's Σ d gives its mean.
    let mut total_d = 0.0f32;
    let mut cl = UNIT_POS as usize;
    while cl < cpg {
        let nc = n * channels + g * cpg + cl;
        let mut p = 0.0f32;
        let mut q = 0.0f32;
        for k in 0..chunks {
            let i = (nc * chunks + k) * 3;
            p += partials[i];
            q += partials[i + 1];
            total_d += partials[i + 2];
        }
        sums[nc * 2] = p;
        sums[nc * 2 + 1] = q;
        cl += CUBE_DIM as usize;
    }
    let (sum_d, _u1, _u2) = cube_sum3(total_d, 0.0f32, 0.0f32, block);
    let mean_d = sum_d / group_len;
    let r = rstd[row];

    let mut db = 0.0f32;
    let mut dsh = 0.0f32;
    let mut cl = UNIT_POS as usize;
    while cl < cpg {
        let c = g * cpg + cl;
        let nc = n * channels + c;
        let q = sums[nc * 2 + 1];
        let h = r * (sums[nc * 2] - mean_d * q);
        sums[nc * 2] = h;
        let gam = f32::cast_from(gamma[c]);
        db += gam * q;
        dsh += gam * h;
        cl += CUBE_DIM as usize;
    }
    let (tdb, tdsh, _u3) = cube_sum3(db, dsh, 0.0f32, block);
    let cx = -r * r * tdsh / group_len;
    let c0 = -r * tdb / group_len - cx * mean_d;
    let mut cl = UNIT_POS as usize;
    while cl < cpg {
        let nc = n * channels + g * cpg + cl;
        coefs[3 * plane + nc] = cx;
        coefs[4 * plane + nc] = c0;
        cl += CUBE_DIM as usize;
    }
}

/// Pass 3, one unit per channel: `dgamma_c = Σ_n h_c`, `dbeta_c = Σ_n Σ dz`.
#[cube(launch)]
pub fn backward_param_kernel<P: Float>(
    sums: &Tensor<f32>,
    dgamma: &mut Tensor<P>,
    dbeta: &mut Tensor<P>,
    batch: usize,
    #[define(P)] _dtype: ElemType,
) {
    let channels = dgamma.shape(0);
    let c = ABSOLUTE_POS;
    if c >= channels {
        terminate!();
    }
    let mut dg = 0.0f32;
    let mut db = 0.0f32;
    for n in 0..batch {
        let nc = n * channels + c;
        dg += sums[nc * 2];
        db += sums[nc * 2 + 1];
    }
    dgamma[c] = P::cast_from(dg);
    dbeta[c] = P::cast_from(db);
}

/// `dx = a dz + cx d + c0` for one vector.
#[cube]
fn dx_value<F: Float, N: Size>(
    dy: Vector<F, N>,
    x: Vector<F, N>,
    shift: Vector<f32, N>,
    a: Vector<f32, N>,
    b: Vector<f32, N>,
    cx: Vector<f32, N>,
    c0: Vector<f32, N>,
    #[comptime] act: u32,
) -> Vector<F, N> {
    let d = Vector::<f32, N>::cast_from(x) - shift;
    let dz = activation_grad(Vector::<f32, N>::cast_from(dy), d * a + b, act);
    Vector::cast_from(a * dz + cx * d + c0)
}

/// Pass 4, channels-first, one unit per vector of `dx` (`x`'s layout, as is `dy`).
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
pub fn backward_dx_cf_kernel<F: Float, N: Size>(
    dy: &Tensor<Vector<F, N>>,
    x: &Tensor<Vector<F, N>>,
    coefs: &Tensor<f32>,
    dx: &mut Tensor<Vector<F, N>>,
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
    dx[o] = dx_value::<F, N>(
        dy[o],
        x[o],
        Vector::new(coefs[nc]),
        Vector::new(coefs[plane + nc]),
        Vector::new(coefs[2 * plane + nc]),
        Vector::new(coefs[3 * plane + nc]),
        Vector::new(coefs[4 * plane + nc]),
        act,
    );
}

/// Pass 4, channels-last: as [`backward_dx_cf_kernel`] with a vector of channels.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
pub fn backward_dx_cl_kernel<F: Float, N: Size>(
    dy: &Tensor<Vector<F, N>>,
    x: &Tensor<Vector<F, N>>,
    coefs: &Tensor<Vector<f32, N>>,
    dx: &mut Tensor<Vector<F, N>>,
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
    dx[o] = dx_value::<F, N>(
        dy[o],
        x[o],
        coefs[ci],
        coefs[plane_vecs + ci],
        coefs[2 * plane_vecs + ci],
        coefs[3 * plane_vecs + ci],
        coefs[4 * plane_vecs + ci],
        act,
    );
}
