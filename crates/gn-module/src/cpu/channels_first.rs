//! Kernels for channels-first inputs (each channel's `S` spatial values contiguous): one task
//! per `(n, g)` group, whose `C / G` rows stay in cache between the statistics pass and the
//! normalizing pass.

use core::mem::MaybeUninit;

use super::elem::{
    Real, assume_init, read_chunks, read2_chunks, uninit_vec, write_chunks, write2_chunks,
};
use super::group_rows;
use super::rows::{self, ACT_NONE};
use super::tasks::for_each_task;
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
    super::assert_groups(x.c, num_groups, gamma, beta);
    let cpg = x.c / num_groups;
    let group_len = cpg * x.s;
    let numel = x.n * x.c * x.s;
    let mut y = uninit_vec::<E>(numel);
    let stream = numel * core::mem::size_of::<E>() >= STREAM_MIN_BYTES;
    let mut stats = vec![[0f64; 2]; x.n * num_groups];
    let tasks = y.chunks_mut(group_len).zip(stats.iter_mut()).collect();
    let bytes = numel * core::mem::size_of::<E>();
    for_each_task(tasks, min_tasks(group_len), bytes, |task, (out, stat)| {
        let (n, g) = (task / num_groups, task % num_groups);
        *stat = with_activation!(
            activation,
            forward_group::<E>(x, n, g * cpg, cpg, gamma, beta, epsilon, out, stream)
        );
    });
    // SAFETY: every group's task wrote its whole chunk.
    let y = unsafe { assume_init(y) };
    Forward::from_group_stats(y, stats, Order::ChannelsFirst)
}

/// Whether [`forward_inplace`] and [`backward_inplace`] take `E` with rows of `s` values: f32
/// and f64 always, f16 and bf16 where [`group_rows`] computes them straight from the stored
/// values (the other paths widen into buffers and write a separate output).
pub(crate) fn inplace_supported<E: CpuElem>(s: usize) -> bool {
    E::native(&[]).is_some() || group_rows::applies::<E, ACT_NONE>(s)
}

/// [`forward`] overwriting `data`, a contiguous `[N, C, S]` tensor that nothing else uses
/// (saves allocating the output), of an element type [`inplace_supported`] admits; returns
/// `(mean, rstd)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_inplace<E: CpuElem>(
    data: &mut [E],
    shape: [usize; 3],
    num_groups: usize,
    gamma: &[f64],
    beta: &[f64],
    epsilon: f64,
    activation: u32,
) -> (Vec<f64>, Vec<f64>) {
    let [_, c, s] = shape;
    super::assert_groups(c, num_groups, gamma, beta);
    let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    assert_eq!(numel, Some(data.len()), "data of shape {shape:?}");
    let cpg = c / num_groups;
    let group_len = cpg * s;
    let mut stats = vec![[0f64; 2]; shape[0] * num_groups];
    let bytes = core::mem::size_of_val(data);
    let tasks = data.chunks_mut(group_len).zip(stats.iter_mut()).collect();
    for_each_task(tasks, min_tasks(group_len), bytes, |task, (chunk, stat)| {
        let c0 = task % num_groups * cpg;
        *stat = with_activation!(
            activation,
            forward_group_inplace::<E>(chunk, s, c0, gamma, beta, epsilon)
        );
    });
    stats.into_iter().map(|[m, r]| (m, r)).unzip()
}

multiversion! {
    /// Normalizes one group's contiguous chunk (channels `c0..`, rows of `s`) in place;
    /// returns `[mean, rstd]`.
    fn forward_group_inplace<E: CpuElem, const ACT: u32>(
        chunk: &mut [E],
        s: usize,
        c0: usize,
        gamma: &[f64],
        beta: &[f64],
        epsilon: f64,
    ) -> [f64; 2] {
        let channels = c0..c0 + chunk.len() / s;
        let (g, b) = (&gamma[channels.clone()], &beta[channels]);
        let Some(data) = E::native_mut(chunk) else {
            // f16 and bf16 (inplace_supported): through group_rows.
            let k = chunk[0].to_real().to_f64();
            let [s1, s2] = group_rows::shifted_sums::<E, ACT>(chunk, s, k).expect("supported");
            let (mean_d, rstd) = group_stats(s1, s2, chunk.len() as f64, epsilon);
            let done = group_rows::normalize_inplace::<E, ACT>(chunk, s, k, g, b, [mean_d, rstd]);
            assert!(done, "in-place forward of a type group_rows takes");
            return [k + mean_d, rstd];
        };
        let k = data[0];
        let mut acc = [0f64; 2];
        rows::shifted_sums(data, k, &mut acc);
        let (mean_d, rstd) = group_stats(acc[0], acc[1], data.len() as f64, epsilon);
        let stats = [mean_d, rstd];
        if group_rows::normalize_inplace::<E::Real, ACT>(data, s, k.to_f64(), g, b, stats) {
            return [k.to_f64() + mean_d, rstd];
        }
        for (j, row) in data.chunks_mut(s).enumerate() {
            let a = rstd * gamma[c0 + j];
            let b = beta[c0 + j] - mean_d * a;
            let (a, b) = (E::Real::from_f64(a), E::Real::from_f64(b));
            rows::normalize_inplace::<E::Real, ACT>(row, k, a, b);
        }
        [k.to_f64() + mean_d, rstd]
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
        out: &mut [MaybeUninit<E>],
        stream: bool,
    ) -> [f64; 2] {
        let s = x.s;
        let k = x.data[x.index(n, c0, 0)].to_real();
        // The group's rows, when adjacent, are read as one run (outside group_rows, narrow types
        // widen it a piece at a time instead of row by row: rows can be as short as 49 values).
        let run = x.channel_run(n, c0, cpg);
        // Whole groups straight from the stored values where group_rows covers them (short
        // f32 rows, f16 and bf16 rows; streamed f32 outputs go row by row).
        let direct = run.filter(|_| {
            group_rows::applies::<E, ACT>(s) && !(stream && E::native(&[]).is_some())
        });
        let mut acc = [0f64; 2];
        match run {
            Some(run) if let Some(sums) = direct.and_then(|_| {
                group_rows::shifted_sums::<E, ACT>(run, s, k.to_f64())
            }) => acc = sums,
            Some(run) => read_chunks!(E, run, |chunk| rows::shifted_sums(chunk, k, &mut acc)),
            None => {
                for c in c0..c0 + cpg {
                    read_chunks!(E, x.channel(n, c), |chunk| {
                        rows::shifted_sums(chunk, k, &mut acc)
                    });
                }
            }
        }
        let (mean_d, rstd) = group_stats(acc[0], acc[1], (cpg * s) as f64, epsilon);
        if let Some(src) = direct {
            let (g, b) = (&gamma[c0..c0 + cpg], &beta[c0..c0 + cpg]);
            let stats = [mean_d, rstd];
            group_rows::normalize_out::<E, ACT>(src, out, s, k.to_f64(), g, b, stats);
            return [k.to_f64() + mean_d, rstd];
        }
        let mut streamed = false;
        // Streamed outputs are large: while this group is normalized from cache, the next
        // group's rows (the next task, usually on this thread) are prefetched.
        let next = match run {
            Some(run) if stream => {
                let start = x.index(n, c0, 0) + run.len();
                x.data.get(start..start + run.len())
            }
            _ => None,
        };
        let ahead = |j: usize| -> &[E::Real] {
            next.and_then(|r| E::native(&r[j * s..(j + 1) * s])).unwrap_or(&[])
        };
        // A macro, not a closure: a closure that LLVM does not inline is compiled without the
        // enclosing function's AVX2 features.
        macro_rules! row {
            ($j:expr, $src:expr, $dst:expr) => {{
                let a = rstd * gamma[c0 + $j];
                let b = beta[c0 + $j] - mean_d * a;
                let (a, b) = (E::Real::from_f64(a), E::Real::from_f64(b));
                let ahead = ahead($j);
                streamed |= rows::normalize_out::<E::Real, ACT>($src, $dst, k, a, b, stream, ahead);
            }};
        }
        match run {
            Some(run) => {
                let mut pos = 0;
                write_chunks!(E, run, out, |src, dst| {
                    rows::row_pieces!(pos, src.len(), s, |j, r| {
                        row!(j, &src[r.clone()], &mut dst[r])
                    });
                });
            }
            None => {
                for (j, out_row) in out.chunks_mut(s).enumerate() {
                    write_chunks!(E, x.channel(n, c0 + j), out_row, |src, dst| row!(j, src, dst));
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if streamed {
            super::simd::store_fence();
        }
        [k.to_f64() + mean_d, rstd]
    }
}

/// Outputs from this size on are written around the cache (they would not stay in it).
const STREAM_MIN_BYTES: usize = 16 << 20;

/// The output gradient of a group's backward: read through a view (`dx` goes to a new
/// buffer), or the group's contiguous chunk of a buffer that `dx` overwrites.
enum Grad<'a, E> {
    Read(&'a View<'a, E>),
    InPlace(&'a mut [E]),
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
    let cpg = x.c / num_groups;
    let group_len = cpg * x.s;
    let mut dx = uninit_vec::<E>(x.n * x.c * x.s);
    // Per (n, c): [Σ dz x_hat, Σ dz], reduced over n into dgamma and dbeta.
    let mut sums = vec![[0f64; 2]; x.n * x.c];
    let bytes = dx.len() * core::mem::size_of::<E>();
    let tasks = dx.chunks_mut(group_len).zip(sums.chunks_mut(cpg)).collect();
    for_each_task(
        tasks,
        min_tasks(group_len),
        bytes,
        |task, (out, group_sums)| {
            let group = GroupRef::of(task, num_groups, cpg, rstd);
            with_activation!(
                activation,
                backward_group::<E>(x, Grad::Read(dy), Some(out), group, gamma, beta, group_sums)
            );
        },
    );
    let (dgamma, dbeta) = reduce_affine_grads(&sums, x.c);
    Backward {
        // SAFETY: every group's task wrote its whole chunk.
        dx: unsafe { assume_init(dx) },
        dgamma,
        dbeta,
        order: Order::ChannelsFirst,
    }
}

/// [`backward`] writing `dx` over `dy_dx`, the contiguous `[N, C, S]` output gradient (which
/// nothing else uses) of an element type [`inplace_supported`] admits; `x` must be
/// channels-first. Returns `(dgamma, dbeta)`.
pub(crate) fn backward_inplace<E: CpuElem>(
    x: &View<'_, E>,
    dy_dx: &mut [E],
    num_groups: usize,
    rstd: &[f64],
    gamma: &[f64],
    beta: &[f64],
    activation: u32,
) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(
        x.order(),
        Some(Order::ChannelsFirst),
        "in-place backward reads channels-first x"
    );
    super::assert_groups(x.c, num_groups, gamma, beta);
    let numel = [x.n, x.c, x.s]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    assert_eq!(numel, Some(dy_dx.len()), "dy of x's shape");
    let cpg = x.c / num_groups;
    let group_len = cpg * x.s;
    let mut sums = vec![[0f64; 2]; x.n * x.c];
    let bytes = core::mem::size_of_val(dy_dx);
    let tasks = dy_dx
        .chunks_mut(group_len)
        .zip(sums.chunks_mut(cpg))
        .collect();
    for_each_task(
        tasks,
        min_tasks(group_len),
        bytes,
        |task, (chunk, group_sums)| {
            let group = GroupRef::of(task, num_groups, cpg, rstd);
            let dy = Grad::InPlace(chunk);
            with_activation!(
                activation,
                backward_group::<E>(x, dy, None, group, gamma, beta, group_sums)
            );
        },
    );
    reduce_affine_grads(&sums, x.c)
}

/// One `(n, g)` group of a backward pass: sample `n`, channels `c0..c0 + cpg`, its `rstd`.
#[derive(Clone, Copy)]
struct GroupRef {
    n: usize,
    c0: usize,
    cpg: usize,
    rstd: f64,
}

impl GroupRef {
    /// The group of the parallel task `task` (tasks run over `(n, g)` in order).
    fn of(task: usize, num_groups: usize, cpg: usize, rstd: &[f64]) -> Self {
        Self {
            n: task / num_groups,
            c0: task % num_groups * cpg,
            cpg,
            rstd: rstd[task],
        }
    }
}

multiversion! {
    /// The input gradient of the group `c0..c0 + cpg` of sample `n` into `out`, and its
    /// per-channel `[Σ dz x_hat, Σ dz]` into `sums`.
    fn backward_group<E: CpuElem, const ACT: u32>(
        x: &View<'_, E>,
        dy: Grad<'_, E>,
        out: Option<&mut [MaybeUninit<E>]>,
        group: GroupRef,
        gamma: &[f64],
        beta: &[f64],
        sums: &mut [[f64; 2]],
    ) {
        let GroupRef { n, c0, cpg, rstd } = group;
        let s = x.s;
        let k = x.data[x.index(n, c0, 0)].to_real();
        let group_len = (cpg * s) as f64;
        // Adjacent rows are read as runs, as in the forward.
        let x_run = x.channel_run(n, c0, cpg);
        let dy_run = match &dy {
            Grad::Read(view) => view.channel_run(n, c0, cpg),
            Grad::InPlace(chunk) => Some(&**chunk),
        };
        let runs = x_run.zip(dy_run);
        // The activation's derivative needs the pre-activation output, hence the group mean,
        // before the sums: one extra pass over x (from cache).
        let mut mean_d = 0.0;
        if ACT != ACT_NONE {
            match x_run {
                // Narrow types without widening (f32 keeps the single sum below).
                Some(run)
                    if E::native(run).is_none()
                        && let Some([s1, _]) =
                            group_rows::shifted_sums::<E, ACT>(run, s, k.to_f64()) =>
                {
                    mean_d = s1
                }
                Some(run) => read_chunks!(E, run, |chunk| rows::shifted_sum(chunk, k, &mut mean_d)),
                None => {
                    for c in c0..c0 + cpg {
                        read_chunks!(E, x.channel(n, c), |chunk| {
                            rows::shifted_sum(chunk, k, &mut mean_d)
                        });
                    }
                }
            }
            mean_d /= group_len;
        }
        let coef = |j: usize, mean_d: f64| {
            let a = rstd * gamma[c0 + j];
            let b = beta[c0 + j] - mean_d * a;
            (E::Real::from_f64(a), E::Real::from_f64(b))
        };
        sums.fill([0.0; 2]);
        let (group_gamma, group_beta) = (&gamma[c0..c0 + cpg], &beta[c0..c0 + cpg]);
        // The whole group in one call where group_rows covers it.
        // A match, not a closure: see the macros below.
        let group_sums = match runs {
            Some((xr, gr)) => group_rows::backward_sums::<E, ACT>(
                xr,
                gr,
                s,
                k.to_f64(),
                group_gamma,
                group_beta,
                [mean_d, rstd],
                sums,
            ),
            None => None,
        };
        let mut total = group_sums.unwrap_or(0.0);
        // Macros, not closures, as in the forward.
        macro_rules! add_sums {
            ($j:expr, $xs:expr, $gs:expr) => {{
                let (a, b) = coef($j, mean_d);
                let mut acc = [0f64; 3];
                rows::backward_sums::<E::Real, ACT>($xs, $gs, k, a, b, &mut acc);
                sums[$j][0] += acc[0];
                sums[$j][1] += acc[1];
                total += acc[2];
            }};
        }
        if group_sums.is_none() {
            match runs {
                Some((xr, gr)) => {
                    let mut pos = 0;
                    read2_chunks!(E, xr, gr, |xs, gs| {
                        rows::row_pieces!(pos, xs.len(), s, |j, r| {
                            add_sums!(j, &xs[r.clone()], &gs[r])
                        })
                    });
                }
                None => {
                    for j in 0..cpg {
                        let dy_row = match &dy {
                            Grad::Read(view) => view.channel(n, c0 + j),
                            Grad::InPlace(chunk) => &chunk[j * s..(j + 1) * s],
                        };
                        read2_chunks!(E, x.channel(n, c0 + j), dy_row, |xs, gs| {
                            add_sums!(j, xs, gs)
                        });
                    }
                }
            }
        }
        if ACT == ACT_NONE {
            mean_d = total / group_len;
        }
        let coefs = BackwardCoefs::from_sums(sums, group_gamma, mean_d, rstd, group_len);
        let (cx, c0r) = (E::Real::from_f64(coefs.cx), E::Real::from_f64(coefs.c0));
        macro_rules! apply {
            ($j:expr, $xs:expr, $gs:expr, $dst:expr) => {{
                let (a, b) = coef($j, mean_d);
                rows::backward_apply::<E::Real, ACT>($xs, $gs, $dst, k, a, b, cx, c0r)
            }};
        }
        let (stats, group_coefs) = ([mean_d, rstd], [k.to_f64(), coefs.cx, coefs.c0]);
        match (dy, out) {
            (Grad::Read(dy), Some(out)) => match x_run.zip(dy.channel_run(n, c0, cpg)) {
                // The whole group in one call where group_rows covers it.
                Some((xr, gr)) if group_rows::applies::<E, ACT>(s) => {
                    group_rows::backward_apply_out::<E, ACT>(
                        xr,
                        gr,
                        out,
                        s,
                        group_coefs,
                        group_gamma,
                        group_beta,
                        stats,
                    );
                }
                Some((xr, gr)) => {
                    let mut pos = 0;
                    write2_chunks!(E, xr, gr, out, |xs, gs, dst| {
                        rows::row_pieces!(pos, xs.len(), s, |j, r| {
                            apply!(j, &xs[r.clone()], &gs[r.clone()], &mut dst[r])
                        })
                    });
                }
                None => {
                    for (j, out_row) in out.chunks_mut(s).enumerate() {
                        let c = c0 + j;
                        let (xs, gs) = (x.channel(n, c), dy.channel(n, c));
                        write2_chunks!(E, xs, gs, out_row, |xs, gs, dst| apply!(j, xs, gs, dst));
                    }
                }
            },
            (Grad::InPlace(chunk), _) => {
                let Some(chunk) = E::native_mut(chunk) else {
                    // f16 and bf16 (inplace_supported): through group_rows.
                    let xr = x_run.expect("in-place backward reads channels-first x");
                    let done = group_rows::backward_apply_inplace::<E, ACT>(
                        xr,
                        chunk,
                        s,
                        group_coefs,
                        group_gamma,
                        group_beta,
                        stats,
                    );
                    assert!(done, "in-place backward of a type group_rows takes");
                    return;
                };
                if let Some(xs) = x_run.and_then(E::native)
                    && group_rows::backward_apply_inplace::<E::Real, ACT>(
                        xs, chunk, s, group_coefs, group_gamma, group_beta, stats,
                    )
                {
                    return;
                }
                for (j, row) in chunk.chunks_mut(s).enumerate() {
                    let (a, b) = coef(j, mean_d);
                    let xs = E::native(x.channel(n, c0 + j)).expect("native like dy");
                    rows::backward_apply_inplace::<E::Real, ACT>(xs, row, k, a, b, cx, c0r);
                }
            }
            (Grad::Read(_), None) => unreachable!("a read gradient needs an output"),
        }
    }
}
