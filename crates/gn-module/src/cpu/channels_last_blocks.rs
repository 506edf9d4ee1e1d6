//! The channels-last forward by blocks of whole groups: a task takes some groups of one
//! sample, reads their channels at every position for the statistics, then again (from L2
//! when the block fits, as a group does in the channels-first kernels) to write them
//! normalized. Memory is read once, where the position-block kernels of [`super::channels_last`]
//! read the whole input twice (statistics of every block, then normalization). That needs
//! blocks small enough for L2 yet wide enough at each position to keep memory busy, so few
//! positions ([`groups_per_task`]); the position-block kernels take the rest.

use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ops::Range;

use super::channels_last::{add_row_sums, flush, normalize_row};
use super::elem::{Real, assume_init, uninit_vec};
use super::rows; // with_activation! names its codes through it
use super::tasks::for_each_task;
use super::{CpuElem, Forward, Order, View, group_stats, multiversion, with_activation};

/// Elements a task holds at least (fewer tasks of more work: less scheduling per element).
const TASK_LEN: usize = 1 << 14;
/// Bytes a block reads at each position at least: positions are `C` values apart, and short
/// pieces at that stride leave memory mostly idle (measured: one 64-byte line a position made
/// the [1,512,64,64] forward 3x slower than the position-block kernel).
const MIN_PIECE_BYTES: usize = 512;
/// Bytes of a block at most, so that it is still in L2 when the normalization reads it again.
const MAX_BLOCK_BYTES: usize = 256 << 10;
/// Rows summed in the element's arithmetic type before the sums move to f64.
const FLUSH_ROWS: usize = 64;
/// Positions ahead whose block the statistics prefetch (the stride defeats the hardware
/// prefetcher across pages).
const AHEAD: usize = 8;

/// Groups per task for [`forward`], when blocks of whole groups suit `x`: pieces of at least
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

impl<E> ColumnBlock<'_, E> {
    /// The block's channels at position `s`.
    #[inline(always)]
    fn row(&mut self, s: usize) -> &mut [MaybeUninit<E>] {
        assert!(s < self.positions, "position {s} of {}", self.positions);
        // SAFETY: column_blocks made the block inside the output (position s of this sample:
        // `width` elements from `s * stride`), and no other block holds these elements.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(s * self.stride), self.width) }
    }
}

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

/// The forward pass of a channels-last `x` in tasks of `per_task` groups of one sample.
pub(super) fn forward<E: CpuElem>(
    x: &View<'_, E>,
    num_groups: usize,
    per_task: usize,
    gamma: &[f64],
    beta: &[f64],
    epsilon: f64,
    activation: u32,
) -> Forward<E> {
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
        let channels = c0..c0 + stats.len() * cpg;
        with_activation!(
            activation,
            block_task::<E>(x, n, channels, cpg, gamma, beta, epsilon, out, stats)
        );
    });
    // SAFETY: the blocks cover every channel of every position of every sample, and each
    // task wrote its block at every position.
    let y = unsafe { assume_init(y) };
    Forward::from_group_stats(y, stats, Order::ChannelsLast)
}

multiversion! {
    /// Statistics of the groups of `channels` in sample `n` into `stats`, then
    /// `y = act((x - shift) a + b)` for those channels at every position, into `out`.
    fn block_task<E: CpuElem, const ACT: u32>(
        x: &View<'_, E>,
        n: usize,
        channels: Range<usize>,
        cpg: usize,
        gamma: &[f64],
        beta: &[f64],
        epsilon: f64,
        out: ColumnBlock<'_, E>,
        stats: &mut [[f64; 2]],
    ) {
        let (c0, len) = (channels.start, channels.len());
        assert!(out.width == len && out.positions == x.s, "the block of `channels`");
        let mut out = out;
        let row = |s: usize| &x.position(n, s)[c0..c0 + len];
        // Each group is shifted by its first value (see the module docs of `cpu`).
        let shifts: Vec<E::Real> = (0..len)
            .map(|j| x.data[x.index(n, c0 + j / cpg * cpg, 0)].to_real())
            .collect();
        let (mut s1, mut s2) = (vec![E::Real::ZERO; len], vec![E::Real::ZERO; len]);
        let (mut t1, mut t2) = (vec![0f64; len], vec![0f64; len]);
        for s in 0..x.s {
            let ahead = x.data.as_ptr().wrapping_add(x.index(n, c0, s + AHEAD));
            prefetch(ahead);
            prefetch(ahead.wrapping_add(len - 1));
            add_row_sums(row(s), &shifts, &mut s1, &mut s2);
            if (s + 1) % FLUSH_ROWS == 0 {
                flush(&mut s1, &mut t1);
                flush(&mut s2, &mut t2);
            }
        }
        flush(&mut s1, &mut t1);
        flush(&mut s2, &mut t2);

        // Per channel: y = act((x - shift) a + b).
        let (mut a, mut b) = (Vec::with_capacity(len), Vec::with_capacity(len));
        for (g, st) in stats.iter_mut().enumerate() {
            let group = g * cpg..(g + 1) * cpg;
            let sums = [t1[group.clone()].iter().sum(), t2[group.clone()].iter().sum()];
            let (mean_d, rstd) = group_stats(sums[0], sums[1], (cpg * x.s) as f64, epsilon);
            *st = [shifts[group.start].to_f64() + mean_d, rstd];
            for ch in group.map(|j| c0 + j) {
                let scale = rstd * gamma[ch];
                a.push(E::Real::from_f64(scale));
                b.push(E::Real::from_f64(beta[ch] - mean_d * scale));
            }
        }
        for s in 0..x.s {
            normalize_row::<E, ACT>(row(s), &shifts, &a, &b, out.row(s));
        }
    }
}

/// Asks for the cache line at `ptr`: a hint, which never faults, whatever the address.
#[inline(always)]
fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86-64; a prefetch never faults.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ptr.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::rows::{ACT_NONE, ACT_RELU, ACT_SILU};

    /// y, mean and rstd of every task split (one group a task, a few, all of a sample's) match
    /// the f64 formulas, on channels-last views with an offset and padded position rows, for
    /// one and many channels per group, position counts past a flush of the f32 sums, each
    /// activation, and a mean far from zero (the shift); outputs are pre-filled with NaN.
    #[test]
    fn matches_the_formulas_for_every_task_split() {
        for (n, c, s, groups) in [
            (2, 32, 70, 4),
            (3, 12, 9, 3),
            (1, 64, 130, 32),
            (2, 6, 5, 6),
        ] {
            let cpg = c / groups;
            let (ss, sn, offset) = (c + 3, s * (c + 3) + 1, 4);
            let data: Vec<f32> = (0..offset + n * sn)
                .map(|i| 100.0 + ((i * 7919) % 29) as f32 * 0.31)
                .collect();
            let x = View {
                data: &data[..],
                offset,
                n,
                c,
                s,
                sn,
                sc: 1,
                ss,
            };
            let gamma: Vec<f64> = (0..c).map(|j| 0.5 + 0.1 * (j % 7) as f64).collect();
            let beta: Vec<f64> = (0..c).map(|j| -0.3 + 0.05 * (j % 5) as f64).collect();
            for per_task in [1, 2, groups] {
                for act in [ACT_NONE, ACT_RELU, ACT_SILU] {
                    let out = forward(&x, groups, per_task, &gamma, &beta, 1e-5, act);
                    let case = format!("[{n}, {c}, {s}] G={groups} per_task={per_task} act={act}");
                    for b in 0..n {
                        for g in 0..groups {
                            let at = |ch: usize, p: usize| data[x.index(b, ch, p)] as f64;
                            let values: Vec<(usize, usize)> = (g * cpg..(g + 1) * cpg)
                                .flat_map(|ch| (0..s).map(move |p| (ch, p)))
                                .collect();
                            let len = values.len() as f64;
                            let mean = values.iter().map(|&(ch, p)| at(ch, p)).sum::<f64>() / len;
                            let var = values
                                .iter()
                                .map(|&(ch, p)| (at(ch, p) - mean).powi(2))
                                .sum::<f64>()
                                / len;
                            let rstd = 1.0 / (var + 1e-5).sqrt();
                            let i = b * groups + g;
                            let err = (out.mean[i] - mean).abs();
                            assert!(err < 1e-6 * var.sqrt(), "{case}: mean off by {err}");
                            assert!((out.rstd[i] - rstd).abs() < 1e-6 * rstd, "{case}");
                            for &(ch, p) in &values {
                                let z = (at(ch, p) - mean) * rstd * gamma[ch] + beta[ch];
                                let want = match act {
                                    ACT_RELU => z.max(0.0),
                                    ACT_SILU => z / (1.0 + (-z).exp()),
                                    _ => z,
                                };
                                let got = out.y[(b * s + p) * c + ch] as f64;
                                assert!(
                                    (got - want).abs() <= 5e-5 * (1.0 + want.abs()),
                                    "{case}: y[{b}, {ch}, {p}] = {got}, want {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
