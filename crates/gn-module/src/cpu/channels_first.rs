//! Kernels for channels-first inputs (each channel's `S` spatial values contiguous, as NCHW):
//! one task per `(n, g)` group, whose `C / G` rows stay in cache between the statistics pass
//! and the normalizing pass. One macerator dispatch per task; the rows' loops run inside it.

use core::mem::MaybeUninit;

use macerator::{Scalar, Simd, Vector};

use super::columns::col_backward_sums;
use super::passes::{
    BackwardApply, Normalize, PerValue, backward_sums, map, map_stream, sums, tail_lanes,
};
use super::simd::{Elem, Real, assume_init, iota, lanes, uninit_vec};
use super::tasks::for_each_task;
use super::{
    Backward, BackwardArgs, BackwardCoefs, CpuElem, Dispatch, Forward, ForwardArgs, Order, View,
    group_stats, isa, min_tasks, push_affine, reduce_affine_grads, with_activation,
};
use crate::activation::Activation;

/// `cpg` rows of `s` values, row `j` at `ptr + j * stride`, all readable.
#[derive(Clone, Copy)]
struct Rows<E> {
    ptr: *const E,
    stride: usize,
    s: usize,
    cpg: usize,
}

impl<E> Rows<E> {
    /// The channels `c0..c0 + cpg` of sample `n` of a channels-first `x`.
    fn of_view(x: &View<'_, E>, n: usize, c0: usize, cpg: usize) -> Self {
        assert!(cpg > 0 && x.s > 0 && (x.ss == 1 || x.s == 1));
        // Checked: the kernels read up to the last row's end by pointer.
        let last = x.checked_index(n, c0 + cpg - 1, x.s - 1);
        assert!(
            last.is_some_and(|i| i < x.data.len()),
            "view outside its data"
        );
        Self {
            ptr: x.data[x.index(n, c0, 0)..].as_ptr(),
            stride: x.sc,
            s: x.s,
            cpg,
        }
    }

    /// The rows of `s` values making up `chunk`, and the pointer to write them through (both
    /// from one borrow, so that writes through it keep the rows readable).
    fn of_chunk(chunk: &mut [MaybeUninit<E>], s: usize) -> (Self, *mut E) {
        assert!(s > 0 && chunk.len().is_multiple_of(s) && !chunk.is_empty());
        let (cpg, ptr) = (chunk.len() / s, chunk.as_mut_ptr().cast::<E>());
        (
            Self {
                ptr: ptr.cast_const(),
                stride: s,
                s,
                cpg,
            },
            ptr,
        )
    }

    #[inline(always)]
    fn row(&self, j: usize) -> *const E {
        self.ptr.wrapping_add(j * self.stride)
    }

    /// The rows as runs of adjacent values: one run when the rows are adjacent.
    #[inline(always)]
    fn runs(&self) -> (usize, usize) {
        if self.stride == self.s {
            (1, self.s * self.cpg)
        } else {
            (self.cpg, self.s)
        }
    }
}

/// `a = rstd γ_c` and `b = β_c - mean a` of each channel of a group: a task's scratch, filled
/// once a group in a loop of its own (a row can be as short as 49 values, where computing them
/// in f64 inside the row loop cost more than loading them; two arrays, so that a row loads each
/// straight into a vector).
struct RowCoefs<R> {
    a: Vec<R>,
    b: Vec<R>,
}

impl<R: Real> RowCoefs<R> {
    fn new() -> Self {
        Self {
            a: Vec::new(),
            b: Vec::new(),
        }
    }

    #[inline(always)]
    fn fill(&mut self, gamma: &[f64], beta: &[f64], mean_d: f64, rstd: f64) {
        self.a.clear();
        self.b.clear();
        push_affine([&mut self.a, &mut self.b], [gamma, beta], mean_d, rstd);
    }

    /// Each channel's `[a, b]`, in order.
    #[inline(always)]
    fn iter(&self) -> impl Iterator<Item = [R; 2]> + '_ {
        self.a.iter().zip(&self.b).map(|(&a, &b)| [a, b])
    }

    /// Channel `j`'s `[a, b]` as vectors.
    #[inline(always)]
    fn splat<S: Simd>(&self, j: usize) -> [Vector<S, R>; 2] {
        [self.a[j].splat(), self.b[j].splat()]
    }
}

/// The length of the group's run when its rows are shorter than a vector and adjacent: they
/// then go as one run with per-value coefficients ([`per_value`]).
#[inline(always)]
fn short_run<S: Simd, E: Elem>(x: &Rows<E>) -> Option<usize> {
    (x.s < lanes::<S, E>() && x.stride == x.s).then_some(x.s * x.cpg)
}

/// [`RowCoefs`]' `a` and `b` of every value of a group's run of rows of `s`.
fn per_value<R: Real>(
    s: usize,
    gamma: &[f64],
    beta: &[f64],
    mean_d: f64,
    rstd: f64,
) -> [Vec<R>; 2] {
    let coef = |j: usize| (rstd * gamma[j], beta[j] - mean_d * rstd * gamma[j]);
    let a = (0..gamma.len() * s)
        .map(|i| R::from_f64(coef(i / s).0))
        .collect();
    let b = (0..gamma.len() * s)
        .map(|i| R::from_f64(coef(i / s).1))
        .collect();
    [a, b]
}

/// One group of a forward task: its rows, where its output goes (contiguous rows of `s`,
/// which may be the rows themselves), its first channel, and (streamed outputs) the values to
/// prefetch meanwhile (the next group's).
struct ForwardGroup<'a, E> {
    x: Rows<E>,
    dst: *mut E,
    c0: usize,
    ahead: &'a [E],
}

/// [`forward_group`] for each of a task's groups, their `[mean, rstd]` into `stats`: one
/// dispatch per task, not per group (short groups are a few hundred cycles each).
///
/// # Safety
///
/// Each group's `dst` is valid for `cpg * s` writes, and is its rows (adjacent) or disjoint
/// from them and from every other group's rows and output.
#[macerator::with_simd(dispatch(arch = Dispatch))]
fn forward_groups<'a, S: Simd, E: Elem, const ACT: u32>(
    groups: &[ForwardGroup<'a, E>],
    stats: &mut [[f64; 2]],
    affine: [&'a [f64]; 2],
    epsilon: f64,
    stream: bool,
) {
    let [gamma, beta] = affine;
    assert_eq!(groups.len(), stats.len(), "a statistic per group");
    let mut coefs = RowCoefs::new();
    for (g, stat) in groups.iter().zip(stats) {
        let channels = g.c0..g.c0 + g.x.cpg;
        let affine = [&gamma[channels.clone()], &beta[channels]];
        // SAFETY: the caller's contract.
        *stat = unsafe { forward_group::<S, E, ACT>(g, affine, epsilon, stream, &mut coefs) };
    }
}

/// The statistics of one group's rows and its normalized output into `dst` (contiguous rows
/// of `s`, which may be the rows themselves); returns `[mean, rstd]`. Streamed outputs
/// prefetch `ahead` (the next group's values) and are fenced.
///
/// # Safety
///
/// The group's `dst` is valid for `cpg * s` writes, and is its rows (adjacent) or disjoint
/// from them.
#[inline(always)]
unsafe fn forward_group<S: Simd, E: Elem, const ACT: u32>(
    group: &ForwardGroup<'_, E>,
    [gamma, beta]: [&[f64]; 2],
    epsilon: f64,
    stream: bool,
    coefs: &mut RowCoefs<E::R>,
) -> [f64; 2] {
    let ForwardGroup { x, dst, ahead, .. } = *group;
    let s = x.s;
    // SAFETY: Rows are readable; dst as the caller says.
    unsafe {
        let k = (*x.ptr).to_r();
        let (runs, len) = x.runs();
        let tail = tail_lanes::<S, E>(len, iota::<S, E::R>());
        let mut acc = [0f64; 2];
        for r in 0..runs {
            let [s1, s2] = sums::<S, E>(x.row(r), len, k, tail);
            acc = [acc[0] + s1, acc[1] + s2];
        }
        let (mean_d, rstd) = group_stats(acc[0], acc[1], (x.cpg * s) as f64, epsilon);
        if let Some(len) = short_run::<S, E>(&x) {
            // Rows shorter than a vector: one run of per-value coefficients.
            let [a, b] = per_value(s, gamma, beta, mean_d, rstd);
            let ks = vec![k; len];
            let [kp, a, b] = [&ks, &a, &b].map(|v| PerValue(v.as_ptr()));
            let pass = Normalize::<E, _, ACT> {
                x: x.ptr,
                y: dst,
                k: kp,
                a,
                b,
            };
            map::<S, _>(len, &pass);
            return [k.to_f64() + mean_d, rstd];
        }
        coefs.fill(gamma, beta, mean_d, rstd);
        // One loop each, not a test a row.
        let (mut xp, mut yp) = (x.ptr, dst);
        if stream {
            for (j, ab) in coefs.iter().enumerate() {
                let ahead = ahead.get(j * s..(j + 1) * s).unwrap_or(&[]);
                map_stream::<S, _>(s, &normalize_row::<S, E, ACT>(xp, yp, k, ab), ahead);
                (xp, yp) = (xp.wrapping_add(x.stride), yp.wrapping_add(s));
            }
            isa::store_fence();
        } else {
            for ab in coefs.iter() {
                map::<S, _>(s, &normalize_row::<S, E, ACT>(xp, yp, k, ab));
                (xp, yp) = (xp.wrapping_add(x.stride), yp.wrapping_add(s));
            }
        }
        [k.to_f64() + mean_d, rstd]
    }
}

/// The pass normalizing the row at `x` into `y`.
#[inline(always)]
fn normalize_row<S: Simd, E: Elem, const ACT: u32>(
    x: *const E,
    y: *mut E,
    k: E::R,
    [a, b]: [E::R; 2],
) -> Normalize<E, Vector<S, E::R>, ACT> {
    Normalize {
        x,
        y,
        k: k.splat(),
        a: a.splat(),
        b: b.splat(),
    }
}

/// One group of a backward task: its rows of x and dy, where its input gradient goes
/// (contiguous rows of `s`, which may be dy's rows), its first channel, its rstd and its
/// per-channel sums.
struct BackwardGroup<'a, E> {
    x: Rows<E>,
    dy: Rows<E>,
    dx: *mut E,
    c0: usize,
    rstd: f64,
    sums: &'a mut [[f64; 2]],
}

/// [`backward_group`] for each of a task's groups, in one dispatch.
///
/// # Safety
///
/// Each group's `dx` is valid for `cpg * s` writes, and is its dy rows (adjacent) or disjoint
/// from its x and dy, and from every other group's rows and output.
#[macerator::with_simd(dispatch(arch = Dispatch))]
fn backward_groups<'a, 'b, S: Simd, E: Elem, const ACT: u32>(
    groups: &mut [BackwardGroup<'b, E>],
    affine: [&'a [f64]; 2],
) {
    let [gamma, beta] = affine;
    let mut coefs = RowCoefs::new();
    for g in groups {
        let channels = g.c0..g.c0 + g.x.cpg;
        let (gamma, beta) = (&gamma[channels.clone()], &beta[channels]);
        // SAFETY: the caller's contract.
        unsafe {
            backward_group::<S, E, ACT>(g, gamma, beta, &mut coefs);
        }
    }
}

/// The input gradient of one group into `dx` (contiguous rows of `s`, which may be `dy`'s
/// adjacent rows) and its per-channel `[Σ dz x_hat, Σ dz]` into `sums`.
///
/// # Safety
///
/// `dx` is valid for `cpg * s` writes, and is `dy`'s rows (adjacent) or disjoint from both.
#[inline(always)]
unsafe fn backward_group<S: Simd, E: Elem, const ACT: u32>(
    group: &mut BackwardGroup<'_, E>,
    gamma: &[f64],
    beta: &[f64],
    coefs: &mut RowCoefs<E::R>,
) {
    let BackwardGroup {
        x, dy, dx, rstd, ..
    } = *group;
    let channel_sums = &mut *group.sums;
    let (s, cpg, iota) = (x.s, x.cpg, iota::<S, E::R>());
    let group_len = (cpg * s) as f64;
    // SAFETY: Rows are readable; dx as the caller says.
    unsafe {
        let k = (*x.ptr).to_r();
        let kv = k.splat::<S>();
        // The activation's derivative needs the pre-activation output, hence the group mean,
        // before the sums: one extra pass over x (from cache).
        let mut mean_d = 0.0;
        if ACT != Activation::CODE_NONE {
            let (runs, len) = x.runs();
            let tail = tail_lanes::<S, E>(len, iota);
            for r in 0..runs {
                mean_d += sums::<S, E>(x.row(r), len, k, tail)[0];
            }
            mean_d /= group_len;
        }
        if let Some(len) = short_run::<S, E>(&x).filter(|_| dy.stride == s) {
            // Rows shorter than a vector: one run of per-value coefficients and sums.
            let [a, b] = per_value(s, gamma, beta, mean_d, rstd);
            let k = vec![k; len];
            let mut acc = [0; 3].map(|_| vec![E::R::default(); len]);
            let out = [0, 1, 2].map(|i| acc[i].as_mut_ptr());
            let coefs = [k.as_ptr(), a.as_ptr(), b.as_ptr()];
            col_backward_sums::<S, E, ACT>(x.ptr, dy.ptr, len, coefs, out, iota);
            let row_sum =
                |v: &[E::R], j: usize| v[j * s..(j + 1) * s].iter().map(|v| v.to_f64()).sum();
            for (j, sum) in channel_sums.iter_mut().enumerate() {
                *sum = [row_sum(&acc[0], j), row_sum(&acc[1], j)];
            }
            if ACT == Activation::CODE_NONE {
                mean_d = acc[2].iter().map(|v| v.to_f64()).sum::<f64>() / group_len;
            }
            let coefs = BackwardCoefs::from_sums(channel_sums, gamma, mean_d, rstd, group_len);
            let [a, b] = per_value(s, gamma, beta, mean_d, rstd);
            let (cx, c0) = (
                vec![E::R::from_f64(coefs.cx); len],
                vec![E::R::from_f64(coefs.c0); len],
            );
            let coefs = [&k, &a, &b, &cx, &c0].map(|v| PerValue(v.as_ptr()));
            map::<S, _>(
                len,
                &BackwardApply::<E, _, ACT> {
                    x: x.ptr,
                    dy: dy.ptr,
                    dx,
                    coefs,
                },
            );
            return;
        }
        let mut total = 0.0;
        let tail = tail_lanes::<S, E>(s, iota);
        // Without an activation the sums ignore a and b (and the mean is not known yet).
        let none = ACT == Activation::CODE_NONE;
        if !none {
            coefs.fill(gamma, beta, mean_d, rstd);
        }
        // Running row pointers: rows can be 49 values, where per-row set-up counts.
        let (mut xp, mut gp) = (x.ptr, dy.ptr);
        for (j, sum) in channel_sums.iter_mut().enumerate() {
            let [a, b] = if none { [kv; 2] } else { coefs.splat(j) };
            let [p, q, t] = backward_sums::<S, E, ACT>(xp, gp, s, [kv, a, b], tail);
            *sum = [p, q];
            total += t;
            (xp, gp) = (xp.wrapping_add(x.stride), gp.wrapping_add(dy.stride));
        }
        if none {
            mean_d = total / group_len;
            coefs.fill(gamma, beta, mean_d, rstd);
        }
        let sums = BackwardCoefs::from_sums(channel_sums, gamma, mean_d, rstd, group_len);
        let cx = E::R::from_f64(sums.cx).splat::<S>();
        let c0 = E::R::from_f64(sums.c0).splat::<S>();
        let (mut xp, mut gp, mut dxp) = (x.ptr, dy.ptr, dx);
        for [a, b] in coefs.iter() {
            let coefs = [kv, a.splat(), b.splat(), cx, c0];
            let pass = BackwardApply::<E, _, ACT> {
                x: xp,
                dy: gp,
                dx: dxp,
                coefs,
            };
            map::<S, _>(s, &pass);
            (xp, gp) = (xp.wrapping_add(x.stride), gp.wrapping_add(dy.stride));
            dxp = dxp.wrapping_add(s);
        }
    }
}

pub(super) fn forward<E: CpuElem>(
    x: &View<'_, E>,
    args: ForwardArgs<'_>,
    stream: bool,
) -> Forward<E> {
    let mut y = uninit_vec::<E>(x.n * x.c * x.s);
    let stats = forward_into(Some(x), &mut y, [x.n, x.c, x.s], args, stream);
    // SAFETY: forward_into wrote every value.
    let y = unsafe { assume_init(y) };
    Forward::from_group_stats(y, stats, Order::ChannelsFirst)
}

/// [`forward`] overwriting `data`, a contiguous `[N, C, S]` tensor that nothing else uses
/// (saves allocating the output); returns `(mean, rstd)`.
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
    let args = (num_groups, gamma, beta, epsilon, activation);
    // In place, never streamed: `map_stream` writes some values twice, which needs an output
    // disjoint from the input.
    let stats = forward_into(None, as_uninit(data), shape, args, false);
    stats.into_iter().map(|[m, r]| (m, r)).unzip()
}

/// `data` as an output the kernels write: they only ever write initialized values into it.
fn as_uninit<E>(data: &mut [E]) -> &mut [MaybeUninit<E>] {
    // SAFETY: same layout (MaybeUninit is repr(transparent)); the kernels write only values of
    // E, so the slice stays initialized for the caller.
    unsafe { &mut *(data as *mut [E] as *mut [MaybeUninit<E>]) }
}

/// Panics unless `out` holds the `[N, C, S]` values of `shape`.
fn assert_len<E>(out: &[E], shape: [usize; 3]) {
    let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    assert_eq!(numel, Some(out.len()), "output of shape {shape:?}");
}

/// The forward pass of `x` into `out`, or of `out`'s own values (`x` `None`, which the caller
/// has initialized) in place; returns the per-`(n, g)` `[mean, rstd]`.
fn forward_into<E: CpuElem>(
    x: Option<&View<'_, E>>,
    out: &mut [MaybeUninit<E>],
    [n, c, s]: [usize; 3],
    args: ForwardArgs<'_>,
    stream: bool,
) -> Vec<[f64; 2]> {
    let (num_groups, gamma, beta, epsilon, activation) = args;
    super::assert_groups(c, num_groups, gamma, beta);
    assert_len(out, [n, c, s]);
    assert!(x.is_some() || !stream, "in place, never streamed");
    let cpg = c / num_groups;
    let group_len = cpg * s;
    let mut stats = vec![[0f64; 2]; n * num_groups];
    // Tasks of whole groups, enough of them to be worth a task.
    let per_task = min_tasks(group_len);
    let bytes = size_of_val(out);
    let tasks = out
        .chunks_mut(group_len * per_task)
        .zip(stats.chunks_mut(per_task))
        .collect();
    for_each_task(tasks, 1, bytes, |task, (out, stats)| {
        let groups: Vec<_> = (task * per_task..)
            .zip(out.chunks_mut(group_len))
            .map(|(group, chunk)| {
                let (n, c0) = (group / num_groups, group % num_groups * cpg);
                let Some(x) = x else {
                    let (x, dst) = Rows::of_chunk(chunk, s);
                    let ahead = &[];
                    return ForwardGroup { x, dst, c0, ahead };
                };
                let rows = Rows::of_view(x, n, c0, cpg);
                // Streamed outputs are large: the next group's rows (usually this thread's
                // next) are prefetched while this one is normalized from cache.
                let next = x.index(n, c0, 0) + group_len;
                let ahead = match rows.stride == x.s && stream {
                    true => x.data.get(next..next + group_len).unwrap_or(&[]),
                    false => &[],
                };
                let dst = chunk.as_mut_ptr().cast::<E>();
                ForwardGroup {
                    x: rows,
                    dst,
                    c0,
                    ahead,
                }
            })
            .collect();
        // SAFETY: each `dst` is its group's chunk of this task's output, disjoint from x, or
        // (in place) its rows' own chunk, held mutably here.
        unsafe {
            with_activation!(
                activation,
                forward_groups::<E>(&groups, stats, [gamma, beta], epsilon, stream)
            )
        };
    });
    stats
}

/// The backward pass into a new `dx`.
pub(super) fn backward<E: CpuElem>(
    x: &View<'_, E>,
    dy: &View<'_, E>,
    args: BackwardArgs<'_>,
) -> Backward<E> {
    assert!(dy.n == x.n && dy.c == x.c && dy.s == x.s, "dy of x's shape");
    let mut dx = uninit_vec::<E>(x.n * x.c * x.s);
    let (dgamma, dbeta) = backward_into(x, Some(dy), &mut dx, args);
    Backward {
        // SAFETY: backward_into wrote every value.
        dx: unsafe { assume_init(dx) },
        dgamma,
        dbeta,
        order: Order::ChannelsFirst,
    }
}

/// [`backward`] writing `dx` over `dy_dx`, the contiguous `[N, C, S]` output gradient (which
/// nothing else uses); `x` must be channels-first. Returns `(dgamma, dbeta)`.
pub(crate) fn backward_inplace<E: CpuElem>(
    x: &View<'_, E>,
    dy_dx: &mut [E],
    num_groups: usize,
    rstd: &[f64],
    gamma: &[f64],
    beta: &[f64],
    activation: u32,
) -> (Vec<f64>, Vec<f64>) {
    let args = (num_groups, rstd, gamma, beta, activation);
    backward_into(x, None, as_uninit(dy_dx), args)
}

/// The backward pass of `x` and `dy` into `out`, or of `x` and `out`'s own values (`dy`
/// `None`, which the caller has initialized) in place; returns `(dgamma, dbeta)`.
fn backward_into<E: CpuElem>(
    x: &View<'_, E>,
    dy: Option<&View<'_, E>>,
    out: &mut [MaybeUninit<E>],
    args: BackwardArgs<'_>,
) -> (Vec<f64>, Vec<f64>) {
    let (num_groups, rstd, gamma, beta, activation) = args;
    assert_eq!(x.order(), Some(Order::ChannelsFirst), "channels-first x");
    super::assert_groups(x.c, num_groups, gamma, beta);
    assert_len(out, [x.n, x.c, x.s]);
    let cpg = x.c / num_groups;
    let group_len = cpg * x.s;
    // Per (n, c): [Σ dz x_hat, Σ dz], reduced over n into dgamma and dbeta.
    let mut sums = vec![[0f64; 2]; x.n * x.c];
    let bytes = size_of_val(out);
    let per_task = min_tasks(group_len);
    let tasks = out
        .chunks_mut(group_len * per_task)
        .zip(sums.chunks_mut(cpg * per_task))
        .collect();
    for_each_task(tasks, 1, bytes, |task, (out, sums)| {
        let mut groups: Vec<_> = (task * per_task..)
            .zip(out.chunks_mut(group_len).zip(sums.chunks_mut(cpg)))
            .map(|(group, (chunk, sums))| {
                let (n, c0) = (group / num_groups, group % num_groups * cpg);
                let (dy, dx) = match dy {
                    Some(dy) => (Rows::of_view(dy, n, c0, cpg), chunk.as_mut_ptr().cast()),
                    None => Rows::of_chunk(chunk, x.s),
                };
                BackwardGroup {
                    x: Rows::of_view(x, n, c0, cpg),
                    dy,
                    dx,
                    c0,
                    rstd: rstd[group],
                    sums,
                }
            })
            .collect();
        // SAFETY: each dx is its group's chunk of this task's output, disjoint from x and dy,
        // or (in place) its dy rows' own chunk, held mutably here, disjoint from x.
        unsafe { with_activation!(activation, backward_groups::<E>(&mut groups, [gamma, beta])) };
    });
    reduce_affine_grads(&sums, x.c)
}
