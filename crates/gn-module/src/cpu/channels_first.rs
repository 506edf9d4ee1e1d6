//! Kernels for channels-first inputs (each channel's `S` spatial values contiguous): one task
//! per `(n, g)` group, whose `C / G` rows stay in cache between the statistics pass and the
//! normalizing pass.

use rayon::prelude::*;

use super::elem::Real;
use super::rows::{self, ACT_NONE};
use super::{
    Backward, BackwardCoefs, CpuElem, Forward, Order, View, group_stats, min_tasks, multiversion,
    reduce_affine_grads, with_activation,
};

pub(super) fn forward<E: CpuElem>(
    x: &View<'_, E>,
    num_groups: usize,
    gamma: &[f64],
    beta: &[f64],
    epsilon: f64,
    activation: u32,
) -> Forward<E> {
    let cpg = x.c / num_groups;
    let group_len = cpg * x.s;
    let mut y = vec![E::default(); x.n * x.c * x.s];
    let mut stats = vec![[0f64; 2]; x.n * num_groups];
    y.par_chunks_mut(group_len)
        .zip(stats.par_iter_mut())
        .with_min_len(min_tasks(group_len))
        .enumerate()
        .for_each(|(task, (out, stat))| {
            let (n, g) = (task / num_groups, task % num_groups);
            *stat = with_activation!(
                activation,
                forward_group::<E>(x, n, g * cpg, cpg, gamma, beta, epsilon, out)
            );
        });
    let (mean, rstd) = stats.into_iter().map(|[m, r]| (m, r)).unzip();
    Forward {
        y,
        mean,
        rstd,
        order: Order::ChannelsFirst,
    }
}

multiversion! {
    /// Normalizes the group of channels `c0..c0 + cpg` of sample `n` into `out`; returns
    /// `[mean, rstd]`.
    fn forward_group<E: CpuElem, const ACT: u32>(
        x: &View<'_, E>,
        n: usize,
        c0: usize,
        cpg: usize,
        gamma: &[f64],
        beta: &[f64],
        epsilon: f64,
        out: &mut [E],
    ) -> [f64; 2] {
        let s = x.s;
        let first = x.index(n, c0, 0);
        let k = x.data[first].to_real();
        let mut acc = [0f64; 2];
        if x.sc == s {
            // The group's rows are adjacent: one long run.
            E::for_chunks(&x.data[first..first + cpg * s], |chunk| {
                rows::shifted_sums(chunk, k, &mut acc)
            });
        } else {
            for c in c0..c0 + cpg {
                E::for_chunks(x.channel(n, c), |chunk| rows::shifted_sums(chunk, k, &mut acc));
            }
        }
        let (mean_d, rstd) = group_stats(acc[0], acc[1], (cpg * s) as f64, epsilon);
        for (j, out_row) in out.chunks_mut(s).enumerate() {
            let c = c0 + j;
            let a = rstd * gamma[c];
            let b = beta[c] - mean_d * a;
            let (a, b) = (E::Real::from_f64(a), E::Real::from_f64(b));
            E::map_chunks(x.channel(n, c), out_row, |src, dst| {
                rows::normalize::<E::Real, ACT>(src, dst, k, a, b)
            });
        }
        [k.to_f64() + mean_d, rstd]
    }
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
    let cpg = x.c / num_groups;
    let group_len = cpg * x.s;
    let mut dx = vec![E::default(); x.n * x.c * x.s];
    // Per (n, c): [Σ dz x_hat, Σ dz], reduced over n into dgamma and dbeta.
    let mut sums = vec![[0f64; 2]; x.n * x.c];
    dx.par_chunks_mut(group_len)
        .zip(sums.par_chunks_mut(cpg))
        .with_min_len(min_tasks(group_len))
        .enumerate()
        .for_each(|(task, (out, group_sums))| {
            let (n, g) = (task / num_groups, task % num_groups);
            with_activation!(
                activation,
                backward_group::<E>(
                    x,
                    dy,
                    n,
                    g * cpg,
                    cpg,
                    rstd[task],
                    gamma,
                    beta,
                    out,
                    group_sums
                )
            );
        });
    let (dgamma, dbeta) = reduce_affine_grads(&sums, x.c);
    Backward {
        dx,
        dgamma,
        dbeta,
        order: Order::ChannelsFirst,
    }
}

multiversion! {
    /// The input gradient of the group `c0..c0 + cpg` of sample `n` into `out`, and its
    /// per-channel `[Σ dz x_hat, Σ dz]` into `sums`.
    fn backward_group<E: CpuElem, const ACT: u32>(
        x: &View<'_, E>,
        dy: &View<'_, E>,
        n: usize,
        c0: usize,
        cpg: usize,
        rstd: f64,
        gamma: &[f64],
        beta: &[f64],
        out: &mut [E],
        sums: &mut [[f64; 2]],
    ) {
        let s = x.s;
        let k = x.data[x.index(n, c0, 0)].to_real();
        let group_len = (cpg * s) as f64;
        // The activation's derivative needs the pre-activation output, hence the group mean,
        // before the sums: one extra pass over x (from cache).
        let mut mean_d = 0.0;
        if ACT != ACT_NONE {
            for c in c0..c0 + cpg {
                E::for_chunks(x.channel(n, c), |chunk| rows::shifted_sum(chunk, k, &mut mean_d));
            }
            mean_d /= group_len;
        }
        let coef = |c: usize, mean_d: f64| {
            let a = rstd * gamma[c];
            (a, beta[c] - mean_d * a)
        };
        let mut total = 0.0;
        for (j, pq) in sums.iter_mut().enumerate() {
            let c = c0 + j;
            let (a, b) = coef(c, mean_d);
            let (a, b) = (E::Real::from_f64(a), E::Real::from_f64(b));
            let mut acc = [0f64; 3];
            E::zip_chunks(x.channel(n, c), dy.channel(n, c), |xs, gs| {
                rows::backward_sums::<E::Real, ACT>(xs, gs, k, a, b, &mut acc)
            });
            *pq = [acc[0], acc[1]];
            total += acc[2];
        }
        if ACT == ACT_NONE {
            mean_d = total / group_len;
        }
        let coefs = BackwardCoefs::from_sums(sums, &gamma[c0..c0 + cpg], mean_d, rstd, group_len);
        let (cx, c0r) = (E::Real::from_f64(coefs.cx), E::Real::from_f64(coefs.c0));
        for (j, out_row) in out.chunks_mut(s).enumerate() {
            let c = c0 + j;
            let (a, b) = coef(c, mean_d);
            let (a, b) = (E::Real::from_f64(a), E::Real::from_f64(b));
            E::zip_map_chunks(x.channel(n, c), dy.channel(n, c), out_row, |xs, gs, dst| {
                rows::backward_apply::<E::Real, ACT>(xs, gs, dst, k, a, b, cx, c0r)
            });
        }
    }
}
