//! Channels-last to channels-first copies, for a backward pass whose `x` and `dy` come in
//! different memory orders (a channels-last input whose gradient `y.backward()` seeds in NCHW,
//! or that a layer returning NCHW passes back).
//!
//! The channels-first kernels then run on both: they keep each group in L2 between the sums
//! and `dx`, and can write `dx` over a gradient nothing else holds, so one copy of the
//! channels-last operand costs less than the channels-last kernels' two whole passes.

use core::mem::MaybeUninit;

use super::elem::{assume_init, uninit_vec};
use super::tasks::for_each_task;
use super::{CpuElem, Order, View, min_tasks};

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
    #[cfg(target_arch = "x86_64")]
    let avx2 = super::simd_level() == super::SimdLevel::Avx2;
    #[cfg(target_arch = "x86_64")]
    let done = match size_of::<E>() {
        4 if avx2 => {
            // SAFETY: the CPU has AVX2 (simd_level); E is 4 bytes, a float without padding
            // (CpuElem), only moved.
            unsafe { copy_channel_blocks::<Four, E>(v, n, c0, rows) }
        }
        2 if avx2 => {
            // SAFETY: as above, for 2 bytes.
            unsafe { copy_channel_blocks::<Two, E>(v, n, c0, rows) }
        }
        _ => 0,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
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

/// [`copy_channels`] by 8x8 transposes of `B`-sized elements, over the first whole eights of
/// the rows' channels (at every position); returns the channels done.
///
/// Positions go in windows of [`WINDOW`] as in [`copy_channels`]: within one, each block of 8
/// channels is written along its 8 rows (runs of the window's length: output rows `S` values
/// apart, a multiple of 4 KiB for many `S`, would otherwise contend for the same L1 sets),
/// while the window's source lines stay in L1/L2 from one block to the next; the next
/// window's lines are prefetched (positions are `C` values apart, a stride the hardware
/// prefetcher does not follow across pages).
///
/// # Safety
///
/// The CPU must support AVX2, and `E` must be `B::BYTES` bytes without padding.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_channel_blocks<B: Block8, E: Copy>(
    v: &View<'_, E>,
    n: usize,
    c0: usize,
    rows: &mut [MaybeUninit<E>],
) -> usize {
    use core::arch::x86_64::*;
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
    let (ss, bytes) = (v.ss, B::BYTES);
    let lines = (whole * bytes).div_ceil(64);
    for w0 in (0..vector_positions).step_by(WINDOW) {
        let w1 = (w0 + WINDOW).min(vector_positions);
        for i in w1..(w1 + WINDOW).min(s) {
            for line in 0..lines {
                // Prefetches never fault (and the pointers are never dereferenced).
                _mm_prefetch::<_MM_HINT_T0>(src.wrapping_add(i * ss * bytes + line * 64).cast());
            }
        }
        for j0 in (0..whole).step_by(8) {
            for i0 in (w0..w1).step_by(8) {
                // SAFETY: the block reads positions i0..i0 + 8 of channels j0..j0 + 8 (inside
                // the bounds checked above; 8 adjacent channels each) and writes
                // `rows[(j0 + k) * S + i0..][..8]`, inside `rows` as j0 + 8 <= whole.
                unsafe {
                    B::transpose(
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

/// An 8x8 transpose of elements of one size (their bits moved, never interpreted).
#[cfg(target_arch = "x86_64")]
trait Block8 {
    /// Bytes of an element.
    const BYTES: usize;

    /// Writes row `k` of the 8x8 block at `src` (rows `src_stride` elements apart) as
    /// column `k` of the block at `dst` (rows `dst_stride` elements apart).
    ///
    /// # Safety
    ///
    /// Both blocks must be valid for their accesses, the source initialized; the CPU must
    /// support AVX2.
    unsafe fn transpose(src: *const u8, src_stride: usize, dst: *mut u8, dst_stride: usize);
}

/// 4-byte elements (f32): AVX registers.
#[cfg(target_arch = "x86_64")]
struct Four;

/// 2-byte elements (f16, bf16): SSE2 registers.
#[cfg(target_arch = "x86_64")]
struct Two;

#[cfg(target_arch = "x86_64")]
impl Block8 for Four {
    const BYTES: usize = 4;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn transpose(src: *const u8, src_stride: usize, dst: *mut u8, dst_stride: usize) {
        use core::arch::x86_64::*;
        // SAFETY: the caller's contract.
        unsafe {
            let (src, dst) = (src.cast::<f32>(), dst.cast::<f32>());
            let r: [__m256; 8] = core::array::from_fn(|k| _mm256_loadu_ps(src.add(k * src_stride)));
            // Interleave pairs of rows, then pairs of pairs, then the two 128-bit halves.
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let cols = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (j, col) in cols.into_iter().enumerate() {
                _mm256_storeu_ps(dst.add(j * dst_stride), col);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Block8 for Two {
    const BYTES: usize = 2;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn transpose(src: *const u8, src_stride: usize, dst: *mut u8, dst_stride: usize) {
        use core::arch::x86_64::*;
        // SAFETY: the caller's contract.
        unsafe {
            let (src, dst) = (src.cast::<u16>(), dst.cast::<u16>());
            let r: [__m128i; 8] =
                core::array::from_fn(|k| _mm_loadu_si128(src.add(k * src_stride).cast()));
            // Interleave 16-bit pairs, then 32-bit pairs, then 64-bit halves.
            let t: [__m128i; 8] = core::array::from_fn(|i| {
                let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                if i % 2 == 0 {
                    _mm_unpacklo_epi16(a, b)
                } else {
                    _mm_unpackhi_epi16(a, b)
                }
            });
            // u[0..4]: rows 0-3, columns (0,1), (2,3), (4,5), (6,7); u[4..8]: rows 4-7.
            let u = [
                _mm_unpacklo_epi32(t[0], t[2]),
                _mm_unpackhi_epi32(t[0], t[2]),
                _mm_unpacklo_epi32(t[1], t[3]),
                _mm_unpackhi_epi32(t[1], t[3]),
                _mm_unpacklo_epi32(t[4], t[6]),
                _mm_unpackhi_epi32(t[4], t[6]),
                _mm_unpacklo_epi32(t[5], t[7]),
                _mm_unpackhi_epi32(t[5], t[7]),
            ];
            for q in 0..4 {
                let lo = _mm_unpacklo_epi64(u[q], u[q + 4]);
                let hi = _mm_unpackhi_epi64(u[q], u[q + 4]);
                _mm_storeu_si128(dst.add(2 * q * dst_stride).cast(), lo);
                _mm_storeu_si128(dst.add((2 * q + 1) * dst_stride).cast(), hi);
            }
        }
    }
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
