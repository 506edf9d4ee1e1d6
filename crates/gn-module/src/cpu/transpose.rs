//! Channels-last to channels-first copies, for a backward pass whose `x` and `dy` come in
//! different memory orders (a channels-last input whose gradient `y.backward()` seeds in NCHW,
//! or that a layer returning NCHW passes back).
//!
//! The channels-first kernels then run on both: they keep each group in L2 between the sums
//! and `dx`, and can write `dx` over a gradient nothing else holds, so one copy of the
//! channels-last operand costs less than the channels-last kernels' two whole passes.

use core::mem::MaybeUninit;

use macerator::Simd;

use super::isa;
use super::simd::{assume_init, uninit_vec};
use super::tasks::for_each_task;
use super::{CpuElem, Dispatch, Order, View, min_tasks};

/// Channels per task: 512 bytes of each position's row of four-byte values (shorter pieces
/// at that stride leave memory mostly idle).
const TASK_CHANNELS: usize = 128;
/// Positions per window of [`copy_channels`].
const WINDOW: usize = 64;

/// The values of the channels-last view `v` as a dense channels-first `[N, C, S]` vector.
///
/// # Panics
///
/// If `v` is not channels-last.
pub(crate) fn channels_first_copy<E: CpuElem>(v: &View<'_, E>) -> Vec<E> {
    assert_eq!(v.order(), Some(Order::ChannelsLast), "a channels-last view");
    let (c, s) = (v.c, v.s);
    let mut out = uninit_vec::<E>(v.n * c * s);
    if out.is_empty() {
        // SAFETY: nothing to initialize.
        return unsafe { assume_init(out) };
    }
    // Tasks: a block of channels of one sample (contiguous rows of the output).
    let per_task = TASK_CHANNELS * min_tasks(TASK_CHANNELS * s);
    let bytes = size_of_val(out.as_slice());
    let tasks: Vec<_> = out
        .chunks_mut(c * s)
        .enumerate()
        .flat_map(|(n, sample)| {
            sample
                .chunks_mut(per_task * s)
                .enumerate()
                .map(move |(t, rows)| (n, t * per_task, rows))
        })
        .collect();
    for_each_task(tasks, 1, bytes, |_, (n, c0, rows)| {
        copy_channels(v, n, c0, rows)
    });
    // SAFETY: the tasks cover every channel row of every sample.
    unsafe { assume_init(out) }
}

/// `rows[j * S + i] = v[n, c0 + j, i]` for the channels the rows hold.
fn copy_channels<E: CpuElem>(v: &View<'_, E>, n: usize, c0: usize, rows: &mut [MaybeUninit<E>]) {
    let s = v.s;
    let channels = rows.len() / s;
    let done = match size_of::<E>() {
        // SAFETY: the CPU has the transposes (has_transpose8); E is 4 or 2 bytes, a float
        // without padding (CpuElem), only moved.
        4 if isa::has_transpose8() => unsafe { copy_channel_blocks::<E, 4>(v, n, c0, rows) },
        // SAFETY: as above.
        2 if isa::has_transpose8() => unsafe { copy_channel_blocks::<E, 2>(v, n, c0, rows) },
        _ => 0,
    };
    // In windows of positions, by 8x8 tiles: each tile reads 8 lines and writes 8 runs, so
    // that neither the output rows (`S` values apart) nor the positions (`C` apart), often a
    // multiple of 4 KiB, have more lines in flight than an L1 set holds.
    for w0 in (0..s).step_by(WINDOW) {
        let w1 = (w0 + WINDOW).min(s);
        for j0 in (done..channels).step_by(8) {
            for i0 in (w0..w1).step_by(8) {
                for j in j0..(j0 + 8).min(channels) {
                    for i in i0..(i0 + 8).min(w1) {
                        rows[j * s + i].write(v.data[v.index(n, c0 + j, i)]);
                    }
                }
            }
        }
    }
}

/// [`copy_channels`] by 8x8 transposes of `BYTES`-sized elements, over the first whole eights of
/// the rows' channels (at every position); returns the channels done.
///
/// Positions go in windows of [`WINDOW`] as in [`copy_channels`]: within one, each block of 8
/// channels is written along its 8 rows (runs of the window's length: output rows `S` values
/// apart, a multiple of 4 KiB for many `S`, would otherwise contend for the same L1 sets),
/// while the window's source lines stay in L1/L2 from one block to the next; the next
/// window's lines are prefetched (positions are `C` values apart, a stride the hardware
/// prefetcher does not follow across pages).
///
/// Entered through macerator's dispatch only so that the loop is compiled with the vector
/// instruction set and the transposes inline into it (a call per tile otherwise).
///
/// # Safety
///
/// [`isa::has_transpose8`] is `true`, and `E` is `BYTES` bytes without padding.
#[macerator::with_simd(dispatch(arch = Dispatch))]
#[allow(clippy::extra_unused_type_parameters)] // S: the instruction set it is compiled for
fn copy_channel_blocks<'a, S: Simd, E: Copy, const BYTES: usize>(
    v: &View<'a, E>,
    n: usize,
    c0: usize,
    rows: &mut [MaybeUninit<E>],
) -> usize {
    let s = v.s;
    let whole = rows.len() / s / 8 * 8;
    let vector_positions = s / 8 * 8;
    if whole == 0 {
        return 0;
    }
    // Bounds: the blocks read 8 adjacent channels (channel stride 1) at each position, from
    // the first value to the last, which must be inside the data. Checked arithmetic: a wrapped
    // index could pass the check while the reads go elsewhere.
    assert_eq!(v.sc, 1, "channels-last rows");
    let last = v.checked_index(n, c0 + whole - 1, s - 1);
    assert!(
        last.is_some_and(|i| i < v.data.len()),
        "view outside its data"
    );
    let src = v.data[v.index(n, c0, 0)..].as_ptr().cast::<u8>();
    let out = rows.as_mut_ptr().cast::<u8>();
    let (ss, bytes) = (v.ss, BYTES);
    let lines = (whole * bytes).div_ceil(64);
    for w0 in (0..vector_positions).step_by(WINDOW) {
        let w1 = (w0 + WINDOW).min(vector_positions);
        for i in w1..(w1 + WINDOW).min(s) {
            for line in 0..lines {
                isa::prefetch(src.wrapping_add(i * ss * bytes + line * 64));
            }
        }
        for j0 in (0..whole).step_by(8) {
            for i0 in (w0..w1).step_by(8) {
                // SAFETY: the block reads positions i0..i0 + 8 of channels j0..j0 + 8 (inside
                // the bounds checked above; 8 adjacent channels each) and writes
                // `rows[(j0 + k) * S + i0..][..8]`, inside `rows` as j0 + 8 <= whole.
                unsafe {
                    isa::transpose8::<BYTES>(
                        src.add((i0 * ss + j0) * bytes),
                        ss,
                        out.add(((j0 * s) + i0) * bytes),
                        s,
                    );
                }
            }
        }
    }
    for j in 0..whole {
        for i in vector_positions..s {
            rows[j * s + i].write(v.data[v.index(n, c0 + j, i)]);
        }
    }
    whole
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every element lands where the channels-first layout puts it, for channel and position
    /// counts on and off the 8x8 blocks, tasks of several channel blocks, views with an
    /// offset and padded position rows, in 4-, 2- and 8-byte elements.
    #[test]
    fn copies_every_element_to_its_channels_first_place() {
        for (n, c, s) in [
            (1, 8, 8),
            (2, 3, 5),
            (2, 12, 17),
            (1, 40, 64),
            (3, 24, 9),
            (1, 16, 1100),
        ] {
            for pad in [0, 3] {
                // Position rows of C values plus `pad` unused ones, after an offset of 5.
                let ss = c + pad;
                let sn = s * ss + 2;
                let offset = 5;
                let len = offset + n * sn;
                let value = |i: usize| (i as f32) * 0.5 - 7.0;
                let data32: Vec<f32> = (0..len).map(value).collect();
                let data64: Vec<f64> = (0..len).map(|i| value(i) as f64).collect();
                // Every bit pattern (NaNs too) moves unchanged.
                let data16: Vec<half::f16> = (0..len)
                    .map(|i| half::f16::from_bits((i % 65_536) as u16))
                    .collect();
                let view = |data| View {
                    data,
                    offset,
                    n,
                    c,
                    s,
                    sn,
                    sc: 1,
                    ss,
                };
                let got32 = channels_first_copy(&view(&data32[..]));
                let got64 = channels_first_copy(&View {
                    data: &data64[..],
                    offset,
                    n,
                    c,
                    s,
                    sn,
                    sc: 1,
                    ss,
                });
                let got16 = channels_first_copy(&View {
                    data: &data16[..],
                    offset,
                    n,
                    c,
                    s,
                    sn,
                    sc: 1,
                    ss,
                });
                for b in 0..n {
                    for ch in 0..c {
                        for p in 0..s {
                            let at = offset + b * sn + p * ss + ch;
                            let i = (b * c + ch) * s + p;
                            let case = format!("[{n}, {c}, {s}] pad {pad} at ({b}, {ch}, {p})");
                            assert_eq!(got32[i], data32[at], "f32 {case}");
                            assert_eq!(got64[i], data64[at], "f64 {case}");
                            let (got, want) = (got16[i].to_bits(), data16[at].to_bits());
                            assert_eq!(got, want, "2-byte {case}");
                        }
                    }
                }
            }
        }
    }
}
