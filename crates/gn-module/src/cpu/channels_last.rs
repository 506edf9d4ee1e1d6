//! Kernels for channels-last inputs (each position's `C` channel values contiguous, as NHWC):
//! tasks are blocks of positions of one sample; per-channel accumulators run along the rows and
//! are combined per group afterwards, so every pass reads memory in order.

use core::mem::MaybeUninit;

use rayon::prelude::*;

use super::elem::{
    Real, assume_init, read_chunks, read2_chunks, uninit_vec, write_chunks, write2_chunks,
};
use super::rows::{self, ACT_NONE};
use super::{
    Backward, BackwardCoefs, CpuElem, Forward, Order, View, group_stats, multiversion,
    reduce_affine_grads, with_activation,
};

/// Elements per task (rows of `C` values are never split).
const TASK_LEN: usize = 1 << 14;
/// Rows summed in the element's arithmetic type before the sums move to f64.
const FLUSH_ROWS: usize = 64;

/// How the `S` positions of a sample are cut into tasks.
#[derive(Clone, Copy)]
struct Tiling {
    rows_per_task: usize,
    tasks_per_sample: usize,
}

impl Tiling {
    fn new(x: &View<'_, impl Sized>) -> Self {
        let rows_per_task = (TASK_LEN / x.c).max(1);
        Self {
            rows_per_task,
            tasks_per_sample: x.s.div_ceil(rows_per_task),
        }
    }

    /// The positions of task `t` of a sample.
    fn rows(&self, t: usize, s: usize) -> core::ops::Range<usize> {
        let start = t * self.rows_per_task;
        start..(start + self.rows_per_task).min(s)
    }
}

/// Per `(n, c)` shift: the first value of the channel's group in sample `n`.
fn shifts<E: CpuElem>(x: &View<'_, E>, cpg: usize) -> Vec<E::Real> {
    (0..x.n)
        .flat_map(|n| (0..x.c).map(move |c| x.data[x.index(n, c / cpg * cpg, 0)].to_real()))
        .collect()
}

/// Per `(n, g)` `[Σ d, Σ d²]` of the shifted values.
fn group_sums<E: CpuElem>(
    x: &View<'_, E>,
    num_groups: usize,
    shifts: &[E::Real],
    tiling: Tiling,
) -> Vec<[f64; 2]> {
    let cpg = x.c / num_groups;
    let mut partial = vec![[0f64; 2]; x.n * tiling.tasks_per_sample * num_groups];
    partial
        .par_chunks_mut(num_groups)
        .enumerate()
        .for_each(|(task, out)| {
            let n = task / tiling.tasks_per_sample;
            let rows = tiling.rows(task % tiling.tasks_per_sample, x.s);
            stats_task::<E, ACT_NONE>(x, n, rows, &shifts[n * x.c..(n + 1) * x.c], cpg, out);
        });
    // Combine the tasks of each sample in a fixed order (deterministic results).
    let mut sums = vec![[0f64; 2]; x.n * num_groups];
    for (task, part) in partial.chunks(num_groups).enumerate() {
        let n = task / tiling.tasks_per_sample;
        for (acc, p) in sums[n * num_groups..(n + 1) * num_groups]
            .iter_mut()
            .zip(part)
        {
            acc[0] += p[0];
            acc[1] += p[1];
        }
    }
    sums
}

multiversion! {
    /// `[Σ d, Σ d²]` per group over the positions `rows` of sample `n`.
    fn stats_task<E: CpuElem, const ACT: u32>(
        x: &View<'_, E>,
        n: usize,
        rows: core::ops::Range<usize>,
        shifts: &[E::Real],
        cpg: usize,
        out: &mut [[f64; 2]],
    ) {
        let c = x.c;
        let mut s1 = vec![E::Real::ZERO; c];
        let mut s2 = vec![E::Real::ZERO; c];
        let mut t1 = vec![0f64; c];
        let mut t2 = vec![0f64; c];
        for (i, s) in rows.enumerate() {
            add_row_sums(x.position(n, s), shifts, &mut s1, &mut s2);
            if (i + 1) % FLUSH_ROWS == 0 {
                flush(&mut s1, &mut t1);
                flush(&mut s2, &mut t2);
            }
        }
        flush(&mut s1, &mut t1);
        flush(&mut s2, &mut t2);
        for (g, o) in out.iter_mut().enumerate() {
            let range = g * cpg..(g + 1) * cpg;
            *o = [t1[range.clone()].iter().sum(), t2[range].iter().sum()];
        }
    }
}

/// Adds the running sums `acc` into `total` and clears them.
#[inline(always)]
pub(super) fn flush<R: Real>(acc: &mut [R], total: &mut [f64]) {
    for (a, t) in acc.iter_mut().zip(total) {
        *t += a.to_f64();
        *a = R::ZERO;
    }
}

pub(super) fn forward<E: CpuElem>(
    x: &View<'_, E>,
    num_groups: usize,
    gamma: &[f64],
    beta: &[f64],
    epsilon: f64,
    activation: u32,
) -> Forward<E> {
    super::assert_groups(x.c, num_groups, gamma, beta);
    let (c, cpg) = (x.c, x.c / num_groups);
    let tiling = Tiling::new(x);
    let shifts = shifts(x, cpg);
    let sums = group_sums(x, num_groups, &shifts, tiling);
    let group_len = (cpg * x.s) as f64;

    let mut mean = Vec::with_capacity(sums.len());
    let mut rstd = Vec::with_capacity(sums.len());
    // Per (n, c): y = act((x - shift) * a + b).
    let mut a = Vec::with_capacity(x.n * c);
    let mut b = Vec::with_capacity(x.n * c);
    for (ng, &[s1, s2]) in sums.iter().enumerate() {
        let (mean_d, r) = group_stats(s1, s2, group_len, epsilon);
        let (n, g) = (ng / num_groups, ng % num_groups);
        mean.push(shifts[n * c + g * cpg].to_f64() + mean_d);
        rstd.push(r);
        for ch in g * cpg..(g + 1) * cpg {
            let scale = r * gamma[ch];
            a.push(E::Real::from_f64(scale));
            b.push(E::Real::from_f64(beta[ch] - mean_d * scale));
        }
    }

    let mut y = uninit_vec::<E>(x.n * x.s * c);
    y.par_chunks_mut(x.s * c)
        .enumerate()
        .flat_map(|(n, sample)| {
            sample
                .par_chunks_mut(tiling.rows_per_task * c)
                .enumerate()
                .map(move |(t, out)| (n, t, out))
        })
        .for_each(|(n, t, out)| {
            let per_channel = n * c..(n + 1) * c;
            with_activation!(
                activation,
                normalize_task::<E>(
                    x,
                    n,
                    tiling.rows(t, x.s),
                    &shifts[per_channel.clone()],
                    &a[per_channel.clone()],
                    &b[per_channel],
                    out,
                )
            );
        });
    Forward {
        // SAFETY: the tasks cover every position of every sample.
        y: unsafe { assume_init(y) },
        mean,
        rstd,
        order: Order::ChannelsLast,
    }
}

multiversion! {
    /// `out = act((x - shift) * a + b)` over the positions `rows` of sample `n`.
    fn normalize_task<E: CpuElem, const ACT: u32>(
        x: &View<'_, E>,
        n: usize,
        rows: core::ops::Range<usize>,
        shifts: &[E::Real],
        a: &[E::Real],
        b: &[E::Real],
        out: &mut [MaybeUninit<E>],
    ) {
        for (s, out_row) in rows.zip(out.chunks_mut(x.c)) {
            normalize_row::<E, ACT>(x.position(n, s), shifts, a, b, out_row);
        }
    }
}

/// Whether a position row of `E` goes through the SIMD column kernels: f16 and bf16 (converted
/// in registers) and SiLU (its exp in vectors); other f32 rows vectorize as they are.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn in_registers<E: CpuElem, const ACT: u32>() -> bool {
    (E::native(&[]).is_none() || ACT == rows::ACT_SILU) && super::simd::lanes_apply::<E>()
}

/// `values` as f32, for an element type the SIMD kernels take (whose arithmetic type is f32);
/// panics for any other (a check resolved at compile time), so the pointer reads f32.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn f32_ptr<R: Real>(values: &[R]) -> *const f32 {
    assert_eq!(core::any::TypeId::of::<R>(), core::any::TypeId::of::<f32>());
    values.as_ptr().cast()
}

/// [`f32_ptr`], writable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn f32_mut<R: Real>(values: &mut [R]) -> *mut f32 {
    assert_eq!(core::any::TypeId::of::<R>(), core::any::TypeId::of::<f32>());
    values.as_mut_ptr().cast()
}

/// `s1 += x - shift` and `s2 += (x - shift)²` per channel over one position row (`shifts`,
/// `s1` and `s2` hold the row's channels).
#[inline(always)]
#[allow(unused_assignments)] // `off` is dead after the single native chunk.
pub(super) fn add_row_sums<E: CpuElem>(
    row: &[E],
    shifts: &[E::Real],
    s1: &mut [E::Real],
    s2: &mut [E::Real],
) {
    #[cfg(target_arch = "x86_64")]
    if in_registers::<E, { rows::ACT_NONE }>() {
        let n = row.len();
        assert!(shifts.len() >= n && s1.len() >= n && s2.len() >= n);
        let (s1, s2) = (f32_mut(s1), f32_mut(s2));
        super::simd::with_lanes!(E, |L| {
            // SAFETY: E is L (with_lanes) and the CPU has AVX2, FMA and F16C (in_registers:
            // lanes_apply); every slice holds n values (asserted), the sums are exclusively
            // borrowed.
            unsafe {
                super::simd::add_col_sums::<L>(row.as_ptr().cast(), f32_ptr(shifts), s1, s2, n)
            }
        });
        return;
    }
    let mut off = 0;
    read_chunks!(E, row, |chunk| {
        let end = off + chunk.len();
        for (((a1, a2), &v), &k) in s1[off..end]
            .iter_mut()
            .zip(&mut s2[off..end])
            .zip(chunk)
            .zip(&shifts[off..end])
        {
            let d = v - k;
            *a1 += d;
            *a2 += d * d;
        }
        off = end;
    });
}

/// `out = act((x - shift) * a + b)` per channel over one position row (the slices hold the
/// row's channels).
#[inline(always)]
#[allow(unused_assignments)] // `off` is dead after the single native chunk.
pub(super) fn normalize_row<E: CpuElem, const ACT: u32>(
    row: &[E],
    shifts: &[E::Real],
    a: &[E::Real],
    b: &[E::Real],
    out: &mut [MaybeUninit<E>],
) {
    #[cfg(target_arch = "x86_64")]
    if in_registers::<E, ACT>() {
        let n = row.len();
        assert!(shifts.len() >= n && a.len() >= n && b.len() >= n && out.len() == n);
        let coefs = [f32_ptr(shifts), f32_ptr(a), f32_ptr(b)];
        let dst = out.as_mut_ptr();
        super::simd::with_lanes!(E, |L| {
            // SAFETY: E is L (with_lanes) and the CPU has AVX2, FMA and F16C (in_registers:
            // lanes_apply); the inputs hold n values (asserted) and `out`, exclusively
            // borrowed, n slots.
            unsafe {
                super::simd::normalize_cols::<L, ACT>(row.as_ptr().cast(), dst.cast(), n, coefs)
            }
        });
        return;
    }
    let mut off = 0;
    write_chunks!(E, row, out, |src, dst| {
        let end = off + src.len();
        for ((((y, &v), &k), &a), &b) in dst
            .iter_mut()
            .zip(src)
            .zip(&shifts[off..end])
            .zip(&a[off..end])
            .zip(&b[off..end])
        {
            y.write(rows::activate::<E::Real, ACT>((v - k) * a + b));
        }
        off = end;
    });
}

pub(super) fn backward<E: CpuElem>(
    x: &View<'_, E>,
    dy: &View<'_, E>,
    num_groups: usize,
    rstd: &[f64],
    gamma: &[f64],
    beta: &[f64],
    activation: u32,
) -> Backward<E> {
    super::assert_groups(x.c, num_groups, gamma, beta);
    let (c, cpg) = (x.c, x.c / num_groups);
    let tiling = Tiling::new(x);
    let shifts = shifts(x, cpg);
    let group_len = (cpg * x.s) as f64;

    // The activation's derivative needs the pre-activation output, hence the group means,
    // before the sums.
    let mut mean_d = vec![0f64; x.n * num_groups];
    let mut a = vec![E::Real::ZERO; x.n * c];
    let mut b = vec![E::Real::ZERO; x.n * c];
    let fill_coefs = |mean_d: &[f64], a: &mut [E::Real], b: &mut [E::Real]| {
        for (ng, &m) in mean_d.iter().enumerate() {
            let g = ng % num_groups;
            for ch in g * cpg..(g + 1) * cpg {
                let scale = rstd[ng] * gamma[ch];
                let i = ng / num_groups * c + ch;
                a[i] = E::Real::from_f64(scale);
                b[i] = E::Real::from_f64(beta[ch] - m * scale);
            }
        }
    };
    if activation != ACT_NONE {
        let sums = group_sums(x, num_groups, &shifts, tiling);
        for (m, s) in mean_d.iter_mut().zip(&sums) {
            *m = s[0] / group_len;
        }
    }
    fill_coefs(&mean_d, &mut a, &mut b);

    // Per task and channel: [Σ dz d, Σ dz, Σ d].
    let mut partial = vec![[0f64; 3]; x.n * tiling.tasks_per_sample * c];
    partial
        .par_chunks_mut(c)
        .enumerate()
        .for_each(|(task, out)| {
            let n = task / tiling.tasks_per_sample;
            let per_channel = n * c..(n + 1) * c;
            with_activation!(
                activation,
                backward_sums_task::<E>(
                    x,
                    dy,
                    n,
                    tiling.rows(task % tiling.tasks_per_sample, x.s),
                    &shifts[per_channel.clone()],
                    &a[per_channel.clone()],
                    &b[per_channel],
                    out,
                )
            );
        });
    let mut sums = vec![[0f64; 2]; x.n * c];
    let mut totals = vec![0f64; x.n * num_groups];
    for (task, part) in partial.chunks(c).enumerate() {
        let n = task / tiling.tasks_per_sample;
        for (ch, p) in part.iter().enumerate() {
            let acc = &mut sums[n * c + ch];
            acc[0] += p[0];
            acc[1] += p[1];
            totals[n * num_groups + ch / cpg] += p[2];
        }
    }
    if activation == ACT_NONE {
        for (m, t) in mean_d.iter_mut().zip(&totals) {
            *m = t / group_len;
        }
    }

    // Per (n, c): dx = a dz + cx d + c0.
    let mut cx = vec![E::Real::ZERO; x.n * c];
    let mut c0 = vec![E::Real::ZERO; x.n * c];
    for (ng, group_sums) in sums.chunks_mut(cpg).enumerate() {
        let g = ng % num_groups;
        let channels = g * cpg..(g + 1) * cpg;
        let coefs = BackwardCoefs::from_sums(
            group_sums,
            &gamma[channels],
            mean_d[ng],
            rstd[ng],
            group_len,
        );
        let i = ng * cpg;
        cx[i..i + cpg].fill(E::Real::from_f64(coefs.cx));
        c0[i..i + cpg].fill(E::Real::from_f64(coefs.c0));
    }
    let mut dx = uninit_vec::<E>(x.n * x.s * c);
    dx.par_chunks_mut(x.s * c)
        .enumerate()
        .flat_map(|(n, sample)| {
            sample
                .par_chunks_mut(tiling.rows_per_task * c)
                .enumerate()
                .map(move |(t, out)| (n, t, out))
        })
        .for_each(|(n, t, out)| {
            let pc = n * c..(n + 1) * c;
            let coefs = [
                &a[pc.clone()],
                &b[pc.clone()],
                &cx[pc.clone()],
                &c0[pc.clone()],
            ];
            with_activation!(
                activation,
                backward_apply_task::<E>(x, dy, n, tiling.rows(t, x.s), &shifts[pc], coefs, out,)
            );
        });
    let (dgamma, dbeta) = reduce_affine_grads(&sums, c);
    Backward {
        // SAFETY: the tasks cover every position of every sample.
        dx: unsafe { assume_init(dx) },
        dgamma,
        dbeta,
        order: Order::ChannelsLast,
    }
}

multiversion! {
    #[allow(unused_assignments)] // `off` is dead after the single native chunk.
    /// Per channel `[Σ dz d, Σ dz, Σ d]` over the positions `rows` of sample `n`.
    fn backward_sums_task<E: CpuElem, const ACT: u32>(
        x: &View<'_, E>,
        dy: &View<'_, E>,
        n: usize,
        rows: core::ops::Range<usize>,
        shifts: &[E::Real],
        a: &[E::Real],
        b: &[E::Real],
        out: &mut [[f64; 3]],
    ) {
        let c = x.c;
        let mut p = vec![E::Real::ZERO; c];
        let mut q = vec![E::Real::ZERO; c];
        let mut t = vec![E::Real::ZERO; c];
        let mut totals = [vec![0f64; c], vec![0f64; c], vec![0f64; c]];
        for (i, s) in rows.enumerate() {
            // Elsewhere than on x86-64 the row kernels below do it all.
            #[cfg(target_arch = "x86_64")]
            let done = in_registers::<E, ACT>();
            #[cfg(not(target_arch = "x86_64"))]
            let done = false;
            #[cfg(target_arch = "x86_64")]
            if done {
                let (xr, gr) = (x.position(n, s), dy.position(n, s));
                assert!(xr.len() == c && gr.len() == c);
                assert!([shifts, a, b].iter().all(|v| v.len() == c));
                let sums = [f32_mut(&mut p), f32_mut(&mut q), f32_mut(&mut t)];
                let coefs = [f32_ptr(shifts), f32_ptr(a), f32_ptr(b)];
                super::simd::with_lanes!(E, |L| {
                    // SAFETY: E is L (with_lanes), the CPU has AVX2, FMA and F16C
                    // (in_registers: lanes_apply); every slice holds c values (asserted), the
                    // sums are this task's.
                    unsafe {
                        let (xp, gp) = (xr.as_ptr().cast::<L>(), gr.as_ptr().cast::<L>());
                        super::simd::backward_col_sums::<L, ACT>(xp, gp, c, coefs, sums)
                    }
                });
            }
            if !done {
                let mut off = 0;
                read2_chunks!(E, x.position(n, s), dy.position(n, s), |xv, gv| {
                    let end = off + xv.len();
                    for j in off..end {
                        let d = xv[j - off] - shifts[j];
                        let dz =
                            rows::activate_grad::<E::Real, ACT>(d * a[j] + b[j], gv[j - off]);
                        p[j] += dz * d;
                        q[j] += dz;
                        t[j] += d;
                    }
                    off = end;
                });
            }
            if (i + 1) % FLUSH_ROWS == 0 {
                flush(&mut p, &mut totals[0]);
                flush(&mut q, &mut totals[1]);
                flush(&mut t, &mut totals[2]);
            }
        }
        flush(&mut p, &mut totals[0]);
        flush(&mut q, &mut totals[1]);
        flush(&mut t, &mut totals[2]);
        for (j, o) in out.iter_mut().enumerate() {
            *o = [totals[0][j], totals[1][j], totals[2][j]];
        }
    }
}

multiversion! {
    #[allow(unused_assignments)] // `off` is dead after the single native chunk.
    /// `dx = a dz + cx (x - shift) + c0` over the positions `rows` of sample `n`; `coefs` holds
    /// the per-channel `[a, b, cx, c0]`.
    fn backward_apply_task<E: CpuElem, const ACT: u32>(
        x: &View<'_, E>,
        dy: &View<'_, E>,
        n: usize,
        rows: core::ops::Range<usize>,
        shifts: &[E::Real],
        coefs: [&[E::Real]; 4],
        out: &mut [MaybeUninit<E>],
    ) {
        let c = x.c;
        let [a, b, cx, c0] = coefs;
        for (s, out_row) in rows.zip(out.chunks_mut(c)) {
            #[cfg(target_arch = "x86_64")]
            if in_registers::<E, ACT>() {
                let (xr, gr) = (x.position(n, s), dy.position(n, s));
                assert!(xr.len() == c && gr.len() == c && out_row.len() == c);
                assert!([shifts, a, b, cx, c0].iter().all(|v| v.len() == c));
                let coefs = [shifts, a, b, cx, c0].map(f32_ptr);
                let dst = out_row.as_mut_ptr();
                super::simd::with_lanes!(E, |L| {
                    // SAFETY: E is L (with_lanes), the CPU has AVX2, FMA and F16C
                    // (in_registers: lanes_apply); every slice holds c values (asserted),
                    // `out_row` is this task's.
                    unsafe {
                        let (xp, gp) = (xr.as_ptr().cast::<L>(), gr.as_ptr().cast::<L>());
                        super::simd::backward_apply_cols::<L, ACT>(xp, gp, dst.cast(), c, coefs)
                    }
                });
                continue;
            }
            let mut off = 0;
            write2_chunks!(E, x.position(n, s), dy.position(n, s), out_row, |xv, gv, dst| {
                let end = off + xv.len();
                for j in off..end {
                    let d = xv[j - off] - shifts[j];
                    let dz = rows::activate_grad::<E::Real, ACT>(d * a[j] + b[j], gv[j - off]);
                    dst[j - off].write(a[j] * dz + cx[j] * d + c0[j]);
                }
                off = end;
            });
        }
    }
}
