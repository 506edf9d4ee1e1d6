//! Kernels for channels-last inputs (each position's `C` channel values contiguous, as NHWC).
//! Two task shapes ([`super::plan`] chooses): blocks of positions of one sample, with
//! per-channel accumulators running along the position rows and combined per group afterwards,
//! so that every pass reads memory in order ([`forward`], [`backward`]); or, for the forward
//! of inputs with few positions, blocks of whole groups of one sample, read for the statistics
//! and again from L2 to normalize, so that memory is read once ([`forward_blocks`]).
//!
//! The position rows are vectors of per-channel values with per-channel coefficients: the
//! column passes below, one macerator dispatch per task.

use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ops::Range;

use macerator::Simd;
use rayon::prelude::*;

use super::columns::{col_backward_sums, col_sums};
use super::passes::{BackwardApply, Normalize, PerValue, map};
use super::simd::{Elem, Real, assume_init, iota, uninit_vec};
use super::tasks::for_each_task;
use super::{
    Backward, BackwardArgs, BackwardCoefs, CpuElem, Dispatch, Forward, ForwardArgs, Order, View,
    group_stats, isa, push_affine, reduce_affine_grads, with_activation,
};
use crate::activation::Activation;

/// Elements per task of position blocks (rows of `C` values are never split).
const TASK_LEN: usize = 1 << 14;
/// Rows summed in the arithmetic type before the sums move to f64.
const FLUSH_ROWS: usize = 64;
/// Bytes a group block reads at each position at least: positions are `C` values apart, and
/// short pieces at that stride leave memory mostly idle (measured: one 64-byte line a position
/// made the [1,512,64,64] forward 3x slower than the position blocks).
const MIN_PIECE_BYTES: usize = 512;
/// Bytes of a group block at most, so that it is still in L2 when the normalization reads it.
const MAX_BLOCK_BYTES: usize = 256 << 10;

/// Adds the running sums `acc` into `total` and clears them.
fn flush<R: Real>(acc: &mut [R], total: &mut [f64]) {
    for (a, t) in acc.iter_mut().zip(total) {
        *t += a.to_f64();
        *a = R::default();
    }
}

/// Per channel `[Σ d, Σ d²]` over the positions `rows` of sample `n`, in f64.
#[macerator::with_simd(dispatch(arch = Dispatch))]
fn col_stats<'a, S: Simd, E: Elem>(
    x: &View<'a, E>,
    n: usize,
    cols: Range<usize>,
    rows: Range<usize>,
    k: &[E::R],
) -> [Vec<f64>; 2] {
    let (c, iota) = (cols.len(), iota::<S, E::R>());
    let mut acc = [vec![E::R::default(); c], vec![E::R::default(); c]];
    let mut total = [vec![0f64; c], vec![0f64; c]];
    for (i, s) in rows.clone().enumerate() {
        if cols.len() < x.c {
            // The column blocks' pieces are strided: ask for the lines a few positions ahead.
            let ahead = x.data.as_ptr().wrapping_add(x.index(n, cols.start, s + 8));
            isa::prefetch(ahead);
            isa::prefetch(ahead.wrapping_add(c - 1));
        }
        let row = &x.position(n, s)[cols.clone()];
        assert!(k.len() == c);
        let out = [acc[0].as_mut_ptr(), acc[1].as_mut_ptr()];
        // SAFETY: the row's c values, which k (asserted) and the sums hold too.
        unsafe { col_sums::<S, E>(row.as_ptr(), c, k.as_ptr(), out, iota) };
        if (i + 1) % FLUSH_ROWS == 0 || s + 1 == rows.end {
            flush(&mut acc[0], &mut total[0]);
            flush(&mut acc[1], &mut total[1]);
        }
    }
    total
}

/// `out = act((x - k) a + b)` at the positions `rows` of sample `n`, for the columns `cols`;
/// position `s`'s output at `out + (s - rows.start) * stride`.
///
/// # Safety
///
/// `out` is valid for `cols.len()` writes at each of those places, disjoint from `x`.
#[macerator::with_simd(dispatch(arch = Dispatch))]
fn normalize_rows<'a, S: Simd, E: Elem, const ACT: u32>(
    x: &View<'a, E>,
    n: usize,
    cols: Range<usize>,
    rows: Range<usize>,
    coefs: [&[E::R]; 3],
    out: *mut E,
    stride: usize,
) {
    let c = cols.len();
    assert!(coefs.iter().all(|v| v.len() == c));
    let [k, a, b] = coefs.map(|v| PerValue(v.as_ptr()));
    for s in rows.clone() {
        let y = out.wrapping_add((s - rows.start) * stride);
        let x = x.position(n, s)[cols.clone()].as_ptr();
        // SAFETY: the row's columns, which the coefficients (asserted) and y (the caller's
        // contract, disjoint from x) hold too.
        unsafe { map::<S, _>(c, &Normalize::<E, _, ACT> { x, y, k, a, b }) };
    }
}

/// Per channel `[Σ dz d, Σ dz, Σ d]` over the positions `rows` of sample `n`, in f64.
#[macerator::with_simd(dispatch(arch = Dispatch))]
fn backward_sums_rows<'a, S: Simd, E: Elem, const ACT: u32>(
    x: &View<'a, E>,
    dy: &View<'a, E>,
    n: usize,
    rows: Range<usize>,
    coefs: [&[E::R]; 3],
) -> [Vec<f64>; 3] {
    let (c, iota) = (x.c, iota::<S, E::R>());
    let mut acc = [0; 3].map(|_| vec![E::R::default(); c]);
    let mut total = [0; 3].map(|_| vec![0f64; c]);
    assert!(coefs.iter().all(|v| v.len() == c));
    let coefs = coefs.map(|v| v.as_ptr());
    for (i, s) in rows.clone().enumerate() {
        let (xr, gr) = (x.position(n, s), dy.position(n, s));
        assert!(gr.len() == c);
        let out = [
            acc[0].as_mut_ptr(),
            acc[1].as_mut_ptr(),
            acc[2].as_mut_ptr(),
        ];
        // SAFETY: every slice holds the row's c values (asserted).
        unsafe { col_backward_sums::<S, E, ACT>(xr.as_ptr(), gr.as_ptr(), c, coefs, out, iota) };
        if (i + 1) % FLUSH_ROWS == 0 || s + 1 == rows.end {
            for (a, t) in acc.iter_mut().zip(&mut total) {
                flush(a, t);
            }
        }
    }
    total
}

/// `dx = a dz + cx d + c0` over the positions `rows` of sample `n` into `out`.
#[macerator::with_simd(dispatch(arch = Dispatch))]
fn backward_apply_rows<'a, S: Simd, E: Elem, const ACT: u32>(
    x: &View<'a, E>,
    dy: &View<'a, E>,
    n: usize,
    rows: Range<usize>,
    coefs: [&[E::R]; 5],
    out: &mut [MaybeUninit<E>],
) {
    assert!(coefs.iter().all(|v| v.len() == x.c));
    let coefs = coefs.map(|v| PerValue(v.as_ptr()));
    for (s, dst) in rows.zip(out.chunks_mut(x.c)) {
        let (xr, gr) = (x.position(n, s), dy.position(n, s));
        assert!(gr.len() == x.c && dst.len() == x.c);
        let (x, dy, dx) = (xr.as_ptr(), gr.as_ptr(), dst.as_mut_ptr().cast::<E>());
        // SAFETY: every slice holds the row's c values (asserted), dx is this task's.
        unsafe { map::<S, _>(xr.len(), &BackwardApply::<E, _, ACT> { x, dy, dx, coefs }) };
    }
}

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
    fn rows(&self, t: usize, s: usize) -> Range<usize> {
        let start = t * self.rows_per_task;
        start..(start + self.rows_per_task).min(s)
    }

    /// `f(n, rows, out)` in parallel for every task over a dense `[N, S, C]` output.
    fn for_each_out<E: Send>(
        &self,
        x: &View<'_, impl Sync>,
        out: &mut [MaybeUninit<E>],
        f: impl Fn(usize, Range<usize>, &mut [MaybeUninit<E>]) + Sync,
    ) {
        let c = x.c;
        out.par_chunks_mut((x.s * c).max(1))
            .enumerate()
            .flat_map(|(n, sample)| {
                sample
                    .par_chunks_mut(self.rows_per_task * c)
                    .enumerate()
                    .map(move |(t, out)| (n, t, out))
            })
            .for_each(|(n, t, out)| f(n, self.rows(t, x.s), out));
    }
}

/// Per `(n, c)` shift: the first value of the channel's group in sample `n`.
fn shifts<E: CpuElem>(x: &View<'_, E>, cpg: usize) -> Vec<E::R> {
    (0..x.n)
        .flat_map(|n| (0..x.c).map(move |c| x.data[x.index(n, c / cpg * cpg, 0)].to_r()))
        .collect()
}

/// Per `(n, g)` `[Σ d, Σ d²]` of the shifted values, from the tasks' per-channel sums combined
/// in a fixed order (deterministic results).
fn group_sums<E: CpuElem>(
    x: &View<'_, E>,
    num_groups: usize,
    shifts: &[E::R],
    tiling: Tiling,
) -> Vec<[f64; 2]> {
    let (c, cpg) = (x.c, x.c / num_groups);
    // Each task sums its channels per group, so that the serial combine below touches
    // tasks x G values, not tasks x C.
    let partial: Vec<Vec<[f64; 2]>> = (0..x.n * tiling.tasks_per_sample)
        .into_par_iter()
        .map(|task| {
            let n = task / tiling.tasks_per_sample;
            let rows = tiling.rows(task % tiling.tasks_per_sample, x.s);
            // SAFETY: a plain dispatch (no pointers).
            let [t1, t2] = unsafe { col_stats::<E>(x, n, 0..c, rows, &shifts[n * c..(n + 1) * c]) };
            t1.chunks(cpg)
                .zip(t2.chunks(cpg))
                .map(|(a, b)| [a.iter().sum(), b.iter().sum()])
                .collect()
        })
        .collect();
    let mut sums = vec![[0f64; 2]; x.n * num_groups];
    for (task, groups) in partial.iter().enumerate() {
        let n = task / tiling.tasks_per_sample;
        for (acc, part) in sums[n * num_groups..(n + 1) * num_groups]
            .iter_mut()
            .zip(groups)
        {
            acc[0] += part[0];
            acc[1] += part[1];
        }
    }
    sums
}

/// The forward pass by blocks of positions.
pub(super) fn forward<E: CpuElem>(x: &View<'_, E>, args: ForwardArgs<'_>) -> Forward<E> {
    let (num_groups, gamma, beta, epsilon, activation) = args;
    super::assert_groups(x.c, num_groups, gamma, beta);
    let (c, cpg) = (x.c, x.c / num_groups);
    let tiling = Tiling::new(x);
    let shifts = shifts(x, cpg);
    let sums = group_sums(x, num_groups, &shifts, tiling);
    let group_len = (cpg * x.s) as f64;
    let (mut mean, mut rstd) = (
        Vec::with_capacity(sums.len()),
        Vec::with_capacity(sums.len()),
    );
    // Per (n, c): y = act((x - shift) a + b).
    let (mut a, mut b) = (Vec::with_capacity(x.n * c), Vec::with_capacity(x.n * c));
    for (ng, &[s1, s2]) in sums.iter().enumerate() {
        let (mean_d, r) = group_stats(s1, s2, group_len, epsilon);
        let (n, g) = (ng / num_groups, ng % num_groups);
        mean.push(shifts[n * c + g * cpg].to_f64() + mean_d);
        rstd.push(r);
        let chs = g * cpg..(g + 1) * cpg;
        push_affine(
            [&mut a, &mut b],
            [&gamma[chs.clone()], &beta[chs]],
            mean_d,
            r,
        );
    }
    let mut y = uninit_vec::<E>(x.n * x.s * c);
    tiling.for_each_out(x, &mut y, |n, rows, out| {
        let pc = n * c..(n + 1) * c;
        let coefs = [&shifts[pc.clone()], &a[pc.clone()], &b[pc]];
        let dst = out.as_mut_ptr().cast::<E>();
        // SAFETY: `out` is this task's rows of c values, disjoint from x.
        unsafe {
            with_activation!(
                activation,
                normalize_rows::<E>(x, n, 0..c, rows, coefs, dst, c)
            )
        };
    });
    Forward {
        // SAFETY: the tasks cover every position of every sample.
        y: unsafe { assume_init(y) },
        mean,
        rstd,
        order: Order::ChannelsLast,
    }
}

pub(super) fn backward<E: CpuElem>(
    x: &View<'_, E>,
    dy: &View<'_, E>,
    args: BackwardArgs<'_>,
) -> Backward<E> {
    let (num_groups, rstd, gamma, beta, activation) = args;
    super::assert_groups(x.c, num_groups, gamma, beta);
    assert!(dy.n == x.n && dy.c == x.c && dy.s == x.s, "dy of x's shape");
    let (c, cpg) = (x.c, x.c / num_groups);
    let tiling = Tiling::new(x);
    let shifts = shifts(x, cpg);
    let group_len = (cpg * x.s) as f64;
    // The activation's derivative needs the pre-activation output, hence the group means,
    // before the sums.
    let mut mean_d = vec![0f64; x.n * num_groups];
    if activation != Activation::CODE_NONE {
        let sums = group_sums(x, num_groups, &shifts, tiling);
        for (m, s) in mean_d.iter_mut().zip(&sums) {
            *m = s[0] / group_len;
        }
    }
    let (mut a, mut b) = (Vec::with_capacity(x.n * c), Vec::with_capacity(x.n * c));
    for ng in 0..x.n * num_groups {
        let chs = ng % num_groups * cpg..(ng % num_groups + 1) * cpg;
        let affine = [&gamma[chs.clone()], &beta[chs]];
        push_affine([&mut a, &mut b], affine, mean_d[ng], rstd[ng]);
    }

    // Per task and channel: [Σ dz d, Σ dz, Σ d].
    // Per task: per channel [Σ dz d, Σ dz], per group Σ d.
    let partial: Vec<([Vec<f64>; 2], Vec<f64>)> = (0..x.n * tiling.tasks_per_sample)
        .into_par_iter()
        .map(|task| {
            let n = task / tiling.tasks_per_sample;
            let rows = tiling.rows(task % tiling.tasks_per_sample, x.s);
            let pc = n * c..(n + 1) * c;
            let coefs = [&shifts[pc.clone()], &a[pc.clone()], &b[pc]];
            // SAFETY: a plain dispatch (no pointers).
            let [p, q, t] = unsafe {
                with_activation!(activation, backward_sums_rows::<E>(x, dy, n, rows, coefs))
            };
            ([p, q], t.chunks(cpg).map(|t| t.iter().sum()).collect())
        })
        .collect();
    let mut sums = vec![[0f64; 2]; x.n * c];
    let mut totals = vec![0f64; x.n * num_groups];
    for (task, ([p, q], t)) in partial.iter().enumerate() {
        let n = task / tiling.tasks_per_sample;
        for ((acc, p), q) in sums[n * c..(n + 1) * c].iter_mut().zip(p).zip(q) {
            acc[0] += p;
            acc[1] += q;
        }
        for (total, t) in totals[n * num_groups..(n + 1) * num_groups]
            .iter_mut()
            .zip(t)
        {
            *total += t;
        }
    }
    if activation == Activation::CODE_NONE {
        for (m, t) in mean_d.iter_mut().zip(&totals) {
            *m = t / group_len;
        }
    }
    // Per (n, c): dx = a dz + cx d + c0.
    let (mut cx, mut c0) = (
        vec![E::R::default(); x.n * c],
        vec![E::R::default(); x.n * c],
    );
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
        cx[i..i + cpg].fill(E::R::from_f64(coefs.cx));
        c0[i..i + cpg].fill(E::R::from_f64(coefs.c0));
    }
    let mut dx = uninit_vec::<E>(x.n * x.s * c);
    tiling.for_each_out(x, &mut dx, |n, rows, out| {
        let pc = n * c..(n + 1) * c;
        let coefs = [
            &shifts[pc.clone()],
            &a[pc.clone()],
            &b[pc.clone()],
            &cx[pc.clone()],
            &c0[pc],
        ];
        // SAFETY: a plain dispatch (no pointers).
        unsafe {
            with_activation!(
                activation,
                backward_apply_rows::<E>(x, dy, n, rows, coefs, out)
            )
        };
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

/// Groups per task for [`forward_blocks`], when blocks of whole groups suit `x`: pieces of at least
/// [`MIN_PIECE_BYTES`] at each position, blocks of at most [`MAX_BLOCK_BYTES`] (few positions:
/// late ResNet stages, CIFAR-sized maps), and work for every thread.
pub(super) fn groups_per_task<E>(x: &View<'_, E>, num_groups: usize) -> Option<usize> {
    let cpg = x.c / num_groups;
    let piece = MIN_PIECE_BYTES.div_ceil(cpg * size_of::<E>());
    let work = TASK_LEN.div_ceil((cpg * x.s).max(1));
    let per_task = piece.max(work).min(num_groups).max(1);
    let block_bytes = per_task * cpg * x.s * size_of::<E>();
    let tasks = x.n * num_groups.div_ceil(per_task);
    (block_bytes <= MAX_BLOCK_BYTES && tasks >= 2 * rayon::current_num_threads())
        .then_some(per_task)
}

/// Exclusive access to the channels `c0..c0 + width` of every position of one sample of a
/// dense `[N, S, C]` output: a strided block, which slices cannot express. Only
/// [`column_blocks`] makes them, disjoint and in bounds, so writing through one is sound.
struct ColumnBlock<'a, E> {
    /// Position 0's first channel of the block.
    ptr: *mut MaybeUninit<E>,
    positions: usize,
    /// `C`: elements from one position to the next.
    stride: usize,
    width: usize,
    _out: PhantomData<&'a mut [MaybeUninit<E>]>,
}

// SAFETY: a block is a set of `&mut` elements no other block holds; sending it sends them.
unsafe impl<E: Send> Send for ColumnBlock<'_, E> {}

/// `out`, `[N, S, C]` with `S = positions`, cut into the blocks of `width` channels (the last
/// one of a sample narrower when `width` does not divide `C`) of each sample: sample by sample,
/// channel block by channel block.
fn column_blocks<E>(
    out: &mut [MaybeUninit<E>],
    [n, positions, c]: [usize; 3],
    width: usize,
) -> Vec<ColumnBlock<'_, E>> {
    assert!(width > 0, "blocks of no channels");
    let sample = positions.checked_mul(c).expect("output size");
    assert_eq!(
        Some(out.len()),
        sample.checked_mul(n),
        "an [N, S, C] output"
    );
    let base = out.as_mut_ptr();
    (0..n)
        .flat_map(|b| (0..c).step_by(width).map(move |c0| (b, c0)))
        .map(|(b, c0)| ColumnBlock {
            // Row s of the block: `(b * S + s) * C + c0 + 0..width`, inside sample b's
            // `b * S * C..(b + 1) * S * C` for s < S (a pointer computed without `add`: it
            // is not dereferenced when S is 0).
            ptr: base.wrapping_add(b * sample + c0),
            positions,
            stride: c,
            width: width.min(c - c0),
            _out: PhantomData,
        })
        .collect()
}

/// The forward pass of a channels-last `x` in tasks of `per_task` whole groups of one sample.
pub(super) fn forward_blocks<E: CpuElem>(
    x: &View<'_, E>,
    args: ForwardArgs<'_>,
    per_task: usize,
) -> Forward<E> {
    let (num_groups, gamma, beta, epsilon, activation) = args;
    super::assert_groups(x.c, num_groups, gamma, beta);
    assert!(per_task > 0, "groups per task");
    let cpg = x.c / num_groups;
    let mut y = uninit_vec::<E>(x.n * x.s * x.c);
    // Per (n, g): [mean, rstd].
    let mut stats = vec![[0f64; 2]; x.n * num_groups];
    let blocks = column_blocks(&mut y, [x.n, x.s, x.c], per_task * cpg);
    // Blocks and stats chunks both go sample by sample, per_task groups at a time (C = G cpg).
    let tasks: Vec<_> = stats
        .chunks_mut(num_groups)
        .enumerate()
        .flat_map(|(n, sample)| {
            sample
                .chunks_mut(per_task)
                .enumerate()
                .map(move |(b, stats)| (n, b * per_task * cpg, stats))
        })
        .zip(blocks)
        .collect();
    let bytes = x.n * x.c * x.s * size_of::<E>();
    for_each_task(tasks, 1, bytes, |_, ((n, c0, stats), out)| {
        let cols = c0..c0 + stats.len() * cpg;
        assert!(
            out.width == cols.len() && out.positions == x.s,
            "the block of `cols`"
        );
        // Each group is shifted by its first value (see the module docs of `cpu`).
        let k: Vec<E::R> = cols
            .clone()
            .map(|ch| x.data[x.index(n, ch / cpg * cpg, 0)].to_r())
            .collect();
        // SAFETY: a plain dispatch (no pointers).
        let [t1, t2] = unsafe { col_stats::<E>(x, n, cols.clone(), 0..x.s, &k) };
        // Per channel: y = act((x - shift) a + b).
        let (mut a, mut b) = (
            Vec::with_capacity(cols.len()),
            Vec::with_capacity(cols.len()),
        );
        for (g, st) in stats.iter_mut().enumerate() {
            let group = g * cpg..(g + 1) * cpg;
            let sums = [
                t1[group.clone()].iter().sum(),
                t2[group.clone()].iter().sum(),
            ];
            let (mean_d, rstd) = group_stats(sums[0], sums[1], (cpg * x.s) as f64, epsilon);
            *st = [k[group.start].to_f64() + mean_d, rstd];
            let chs = c0 + group.start..c0 + group.end;
            push_affine(
                [&mut a, &mut b],
                [&gamma[chs.clone()], &beta[chs]],
                mean_d,
                rstd,
            );
        }
        let coefs = [&k[..], &a[..], &b[..]];
        let (dst, stride) = (out.ptr.cast::<E>(), out.stride);
        // SAFETY: the block holds `width` values at each of its positions, `stride` apart
        // (column_blocks), which no other task writes.
        unsafe {
            with_activation!(
                activation,
                normalize_rows::<E>(x, n, cols, 0..x.s, coefs, dst, stride)
            )
        };
    });
    // SAFETY: the blocks cover every channel of every position of every sample, and each
    // task wrote its block at every position.
    let y = unsafe { assume_init(y) };
    Forward::from_group_stats(y, stats, Order::ChannelsLast)
}
