//! The CubeCL kernels. Statistics and coefficients are f32 whatever the element type `F`
//! (f16, bf16, f32; f64 where the runtime has it); gamma and beta have their own type `P`.
//!
//! Every group is shifted by its first element `k` before any sum (`d = x - k`), as on the CPU,
//! so that inputs whose mean dwarfs their spread keep full precision in f32; per-unit sums use
//! Welford's update and cubes combine them with Chan's formula.
//!
//! Tensors arrive as rank-3 `[N, C, S]` views (spatial axes collapsed into one stride).

use cubecl::prelude::*;

/// ReLU and SiLU codes (`Activation::code`).
pub(crate) const ACT_RELU: u32 = 1;
pub(crate) const ACT_SILU: u32 = 2;

#[cube]
fn activate(z: f32, #[comptime] act: u32) -> f32 {
    let mut out = z;
    if comptime!(act == ACT_RELU) {
        // `z < 0` is false for NaN, which passes through as in PyTorch.
        out = select(z < 0.0f32, 0.0f32, z);
    }
    if comptime!(act == ACT_SILU) {
        out = z / (1.0f32 + (-z).exp());
    }
    out
}

/// `dy * act'(z)`.
#[cube]
fn activation_grad(dy: f32, z: f32, #[comptime] act: u32) -> f32 {
    let mut out = dy;
    if comptime!(act == ACT_RELU) {
        out = select(z > 0.0f32, dy, 0.0f32);
    }
    if comptime!(act == ACT_SILU) {
        let s = 1.0f32 / (1.0f32 + (-z).exp());
        out = dy * s * (1.0f32 + z * (1.0f32 - s));
    }
    out
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

/// Forward pass 1: cube `CUBE_POS` summarizes chunk `CUBE_POS % chunks` of group
/// `CUBE_POS / chunks` as `(count, mean, M2)` of the shifted values.
///
/// Channels-last inputs walk the group channel-fastest so that neighbouring units read
/// neighbouring addresses.
#[cube(launch)]
pub fn stats_partial_kernel<F: Float>(
    x: &Tensor<F>,
    partials: &mut Tensor<f32>,
    num_groups: usize,
    chunks: usize,
    #[comptime] block: usize,
    #[comptime] channels_last: bool,
    #[define(F)] _dtype: ElemType,
) {
    let channels = x.shape(1);
    let spatial = x.shape(2);
    let cube = CUBE_POS;
    if cube >= x.shape(0) * num_groups * chunks {
        terminate!();
    }
    let row = cube / chunks;
    let chunk = cube % chunks;
    let n = row / num_groups;
    let g = row % num_groups;
    let cpg = channels / num_groups;
    let group_len = cpg * spatial;
    let chunk_len = group_len.div_ceil(chunks);
    let start = chunk * chunk_len;
    let end = select(start + chunk_len < group_len, start + chunk_len, group_len);
    let sc = x.stride(1);
    let ss = x.stride(2);
    let base = n * x.stride(0) + g * cpg * sc;
    let shift = f32::cast_from(x[base]);

    let mut count = 0.0f32;
    let mut mean = 0.0f32;
    let mut m2 = 0.0f32;
    let mut j = start + UNIT_POS as usize;
    while j < end {
        let mut cl = j / spatial;
        let mut s = j % spatial;
        if channels_last {
            cl = j % cpg;
            s = j / cpg;
        }
        let d = f32::cast_from(x[base + cl * sc + s * ss]) - shift;
        count += 1.0f32;
        let delta = d - mean;
        mean += delta / count;
        m2 += delta * (d - mean);
        j += CUBE_DIM as usize;
    }
    let (tn, tmean, tm2) = cube_welford(count, mean, m2, block);
    if UNIT_POS == 0 {
        partials[cube * 3] = tn;
        partials[cube * 3 + 1] = tmean;
        partials[cube * 3 + 2] = tm2;
    }
}

/// Forward pass 2: one cube per group combines the chunk summaries into `mean`, `rstd` and
/// the kernels' own `row_stats = (shift, mean - shift, rstd)`.
#[cube(launch)]
pub fn stats_finalize_kernel<F: Float>(
    x: &Tensor<F>,
    partials: &Tensor<f32>,
    mean: &mut Tensor<f32>,
    rstd: &mut Tensor<f32>,
    row_stats: &mut Tensor<f32>,
    num_groups: usize,
    chunks: usize,
    epsilon: f32,
    #[comptime] block: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS;
    if row >= x.shape(0) * num_groups {
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
    if UNIT_POS == 0 {
        let n = row / num_groups;
        let g = row % num_groups;
        let cpg = x.shape(1) / num_groups;
        let shift = f32::cast_from(x[n * x.stride(0) + g * cpg * x.stride(1)]);
        // The population variance; a rounding negative is clamped, NaN stays NaN.
        let var = tm2 / tn;
        let var = select(var < 0.0f32, 0.0f32, var);
        let r = 1.0f32 / (var + epsilon).sqrt();
        mean[row] = shift + mean_d;
        rstd[row] = r;
        row_stats[row * 3] = shift;
        row_stats[row * 3 + 1] = mean_d;
        row_stats[row * 3 + 2] = r;
    }
}

/// Forward pass 3, one unit per element: `y = act((x - shift) * a + b)` with
/// `a = rstd * gamma_c` and `b = beta_c - (mean - shift) * a`. `x` is dense and `y` has its
/// strides, so the buffer offset is the element.
#[cube(launch)]
pub fn normalize_kernel<F: Float, P: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<P>,
    beta: &Tensor<P>,
    row_stats: &Tensor<f32>,
    y: &mut Tensor<F>,
    num_groups: usize,
    #[comptime] act: u32,
    #[define(F, P)] _dtypes: [ElemType; 2],
) {
    let batch = x.shape(0);
    let channels = x.shape(1);
    let o = ABSOLUTE_POS;
    if o >= batch * channels * x.shape(2) {
        terminate!();
    }
    let n = (o / x.stride(0)) % batch;
    let c = (o / x.stride(1)) % channels;
    let row = n * num_groups + c / (channels / num_groups);
    let shift = row_stats[row * 3];
    let a = row_stats[row * 3 + 2] * f32::cast_from(gamma[c]);
    let b = f32::cast_from(beta[c]) - row_stats[row * 3 + 1] * a;
    let z = (f32::cast_from(x[o]) - shift) * a + b;
    y[o] = F::cast_from(activate(z, act));
}

/// Backward pass 0, one unit per `(n, c)`: `coefs = (shift, a, b)` as in the forward. Without
/// an activation `b` is not needed (and `row_stats` is not read).
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
    let nc = ABSOLUTE_POS;
    if nc >= x.shape(0) * channels {
        terminate!();
    }
    let n = nc / channels;
    let c = nc % channels;
    let cpg = channels / num_groups;
    let row = n * num_groups + c / cpg;
    let a = rstd[row] * f32::cast_from(gamma[c]);
    coefs[nc * 3] = f32::cast_from(x[n * x.stride(0) + (c / cpg) * cpg * x.stride(1)]);
    coefs[nc * 3 + 1] = a;
    let mut b = 0.0f32;
    if comptime!(act != 0) {
        b = f32::cast_from(beta[c]) - row_stats[row * 3 + 1] * a;
    }
    coefs[nc * 3 + 2] = b;
}

/// Backward pass 1: cube `CUBE_POS` sums chunk `CUBE_POS % chunks` of the positions of
/// `(n, c) = CUBE_POS / chunks`: `(Σ dz d, Σ dz, Σ d)` with `d = x - shift`,
/// `dz = dy * act'(d * a + b)`.
#[cube(launch)]
pub fn backward_partial_kernel<F: Float>(
    dy: &Tensor<F>,
    x: &Tensor<F>,
    coefs: &Tensor<f32>,
    partials: &mut Tensor<f32>,
    chunks: usize,
    #[comptime] block: usize,
    #[comptime] act: u32,
    #[define(F)] _dtype: ElemType,
) {
    let channels = x.shape(1);
    let spatial = x.shape(2);
    let cube = CUBE_POS;
    if cube >= x.shape(0) * channels * chunks {
        terminate!();
    }
    let nc = cube / chunks;
    let chunk = cube % chunks;
    let n = nc / channels;
    let c = nc % channels;
    let shift = coefs[nc * 3];
    let a = coefs[nc * 3 + 1];
    let b = coefs[nc * 3 + 2];
    let chunk_len = spatial.div_ceil(chunks);
    let start = chunk * chunk_len;
    let end = select(start + chunk_len < spatial, start + chunk_len, spatial);
    let x_base = n * x.stride(0) + c * x.stride(1);
    let dy_base = n * dy.stride(0) + c * dy.stride(1);
    let xs = x.stride(2);
    let dys = dy.stride(2);

    let mut p = 0.0f32;
    let mut q = 0.0f32;
    let mut t = 0.0f32;
    let mut s = start + UNIT_POS as usize;
    while s < end {
        let d = f32::cast_from(x[x_base + s * xs]) - shift;
        let dz = activation_grad(f32::cast_from(dy[dy_base + s * dys]), d * a + b, act);
        p += dz * d;
        q += dz;
        t += d;
        s += CUBE_DIM as usize;
    }
    let (tp, tq, tt) = cube_sum3(p, q, t, block);
    if UNIT_POS == 0 {
        partials[cube * 3] = tp;
        partials[cube * 3 + 1] = tq;
        partials[cube * 3 + 2] = tt;
    }
}

/// Backward pass 2, one cube per group: the per-channel totals become
/// `sums = (h_c, Σ dz)` with `h_c = Σ dz x_hat = rstd (Σ dz d - mean_d Σ dz)`, and the group's
/// `dx = a_c dz + cx d + c0` coefficients `(cx, c0)`:
/// `cx = -rstd² Σ_c gamma_c h_c / M`, `c0 = -rstd Σ_c gamma_c Σ dz / M - cx mean_d`.
#[cube(launch)]
pub fn backward_group_kernel<P: Float>(
    partials: &Tensor<f32>,
    gamma: &Tensor<P>,
    rstd: &Tensor<f32>,
    sums: &mut Tensor<f32>,
    group_coefs: &mut Tensor<f32>,
    channels: usize,
    num_groups: usize,
    chunks: usize,
    group_len: f32,
    #[comptime] block: usize,
    #[define(P)] _dtype: ElemType,
) {
    let row = CUBE_POS;
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
    if UNIT_POS == 0 {
        let cx = -r * r * tdsh / group_len;
        group_coefs[row * 2] = cx;
        group_coefs[row * 2 + 1] = -r * tdb / group_len - cx * mean_d;
    }
}

/// Backward pass 3, one unit per channel: `dgamma_c = Σ_n h_c`, `dbeta_c = Σ_n Σ dz`.
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

/// Backward pass 4, one unit per element of `dx` (which has `x`'s dense strides):
/// `dx = a dz + cx d + c0`. `dy` is read through its own strides.
#[cube(launch)]
pub fn backward_dx_kernel<F: Float>(
    dy: &Tensor<F>,
    x: &Tensor<F>,
    coefs: &Tensor<f32>,
    group_coefs: &Tensor<f32>,
    dx: &mut Tensor<F>,
    num_groups: usize,
    #[comptime] act: u32,
    #[define(F)] _dtype: ElemType,
) {
    let batch = x.shape(0);
    let channels = x.shape(1);
    let spatial = x.shape(2);
    let o = ABSOLUTE_POS;
    if o >= batch * channels * spatial {
        terminate!();
    }
    let n = (o / x.stride(0)) % batch;
    let c = (o / x.stride(1)) % channels;
    let s = (o / x.stride(2)) % spatial;
    let nc = n * channels + c;
    let row = n * num_groups + c / (channels / num_groups);
    let a = coefs[nc * 3 + 1];
    let d = f32::cast_from(x[o]) - coefs[nc * 3];
    let g = f32::cast_from(dy[n * dy.stride(0) + c * dy.stride(1) + s * dy.stride(2)]);
    let dz = activation_grad(g, d * a + coefs[nc * 3 + 2], act);
    dx[o] = F::cast_from(a * dz + group_coefs[row * 2] * d + group_coefs[row * 2 + 1]);
}
