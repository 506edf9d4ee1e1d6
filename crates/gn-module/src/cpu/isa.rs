//! The few operations macerator lacks, which were measured to matter, each with a portable
//! fallback: f16 and bf16 vectors converted in registers (F16C and AVX2 integer packs, or
//! AVX-512), stores around the cache for large outputs, prefetches, three horizontal sums at
//! once, and 8x8 transposes for the channels-last copy. This module is the only code written for one instruction set.
//!
//! The x86 versions apply where macerator's dispatch chose the instruction set they need. Its
//! level types are not nameable outside macerator, so they are recognized by their register:
//! `__m256` is x86-64 v3 (AVX2, FMA, F16C) and `__m512` v4 (AVX-512), and macerator only runs a
//! body for a level after checking the CPU has its features.

use half::{bf16, f16};
use macerator::{Scalar, Simd, Vector};

/// A 16-bit float: f16 or bf16.
pub(crate) trait Half: Scalar {
    const BF16: bool;
}
impl Half for f16 {
    const BF16: bool = false;
}
impl Half for bf16 {
    const BF16: bool = true;
}

/// The bf16 bits of each lane in the low half of a u32 lane: to nearest, ties to even, NaN kept
/// quiet, as `bf16::from_f32`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn bf16_bits<S: Simd>(v: Vector<S, f32>) -> Vector<S, u32> {
    let x = v.reinterpret::<u32>();
    let rounded = (x + 0x7fffu32.splat() + ((x >> 16) & 1u32.splat())) >> 16;
    // A NaN's rounding could carry into the exponent: keep its top half, made quiet.
    let nan = (x >> 16) | 0x40u32.splat();
    let keep = v
        .ne(v)
        .select(nan.reinterpret::<f32>(), rounded.reinterpret::<f32>());
    keep.reinterpret::<u32>()
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::*;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::any::TypeId;
    use core::arch::x86_64::*;

    use macerator::{Scalar, Simd, Vector};

    use super::{Half, bf16_bits};

    /// Whether `S` is x86-64 v3 (AVX2, FMA, F16C): see the module docs.
    #[inline(always)]
    fn is_v3<S: Simd>() -> bool {
        TypeId::of::<S::Register>() == TypeId::of::<__m256>()
    }

    /// Whether `S` is x86-64 v4 (AVX-512 F, BW, DQ, VL).
    #[inline(always)]
    fn is_v4<S: Simd>() -> bool {
        TypeId::of::<S::Register>() == TypeId::of::<__m512>()
    }

    /// `r` as `S`'s register.
    ///
    /// # Safety
    ///
    /// `R` is `S::Register`.
    #[inline(always)]
    unsafe fn reg<S: Simd, R: Copy>(r: R) -> S::Register {
        // SAFETY: the caller's contract.
        unsafe { core::mem::transmute_copy(&r) }
    }

    /// `S`'s register as `R`.
    ///
    /// # Safety
    ///
    /// `R` is `S::Register`.
    #[inline(always)]
    unsafe fn raw<S: Simd, R: Copy, T: Scalar>(v: Vector<S, T>) -> R {
        // SAFETY: the caller's contract.
        unsafe { core::mem::transmute_copy(&*v) }
    }

    /// A vector of f32 from `lanes` 16-bit floats at `p`, where the instruction set converts
    /// them in registers; `None` elsewhere.
    ///
    /// # Safety
    ///
    /// `p` is valid for `f32::lanes::<S>()` reads.
    #[inline(always)]
    pub(crate) unsafe fn widen<S: Simd, H: Half>(p: *const H) -> Option<Vector<S, f32>> {
        // SAFETY: the register is S's (is_v3/is_v4), whose features macerator checked; 8 or 16
        // values of 2 bytes from p, the caller's contract.
        unsafe {
            if is_v3::<S>() {
                let h = _mm_loadu_si128(p.cast());
                let v = if H::BF16 {
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
                } else {
                    _mm256_cvtph_ps(h)
                };
                return Some(S::typed(reg::<S, _>(v)));
            }
            if is_v4::<S>() {
                let h = _mm256_loadu_si256(p.cast());
                let v = if H::BF16 {
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
                } else {
                    _mm512_cvtph_ps(h)
                };
                return Some(S::typed(reg::<S, _>(v)));
            }
        }
        None
    }

    /// Stores `v` rounded to 16-bit floats at `p` where the instruction set converts in
    /// registers (returns `true`); `false`, having written nothing, elsewhere.
    ///
    /// # Safety
    ///
    /// `p` is valid for `f32::lanes::<S>()` writes.
    #[inline(always)]
    pub(crate) unsafe fn narrow<S: Simd, H: Half>(p: *mut H, v: Vector<S, f32>) -> bool {
        // SAFETY: as in `widen`.
        unsafe {
            if is_v3::<S>() {
                let h = if H::BF16 {
                    let r: __m256i = raw(bf16_bits(v));
                    // packus works within 128-bit lanes: [r0-3 r0-3 | r4-7 r4-7], then r0-7.
                    let packed =
                        _mm256_permute4x64_epi64::<0b00_00_10_00>(_mm256_packus_epi32(r, r));
                    _mm256_castsi256_si128(packed)
                } else {
                    _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(raw(v))
                };
                _mm_storeu_si128(p.cast(), h);
                return true;
            }
            if is_v4::<S>() {
                let h = if H::BF16 {
                    _mm512_cvtepi32_epi16(raw(bf16_bits(v)))
                } else {
                    _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(raw(v))
                };
                _mm256_storeu_si256(p.cast(), h);
                return true;
            }
        }
        false
    }

    /// Stores `v` at `p` around the cache (non-temporal) on x86-64 v3 and v4, else normally.
    ///
    /// # Safety
    ///
    /// `p` is valid for a vector's writes and aligned to its size.
    #[inline(always)]
    pub(crate) unsafe fn store_stream<S: Simd, T: Scalar>(p: *mut T, v: Vector<S, T>) {
        // SAFETY: the register is S's; the caller's contract.
        unsafe {
            if is_v3::<S>() {
                _mm256_stream_si256(p.cast(), raw(v));
            } else if is_v4::<S>() {
                _mm512_stream_si512(p.cast(), raw(v));
            } else {
                macerator::vstore_unaligned(p, v);
            }
        }
    }

    /// Orders the non-temporal stores before later loads and stores.
    #[inline(always)]
    pub(crate) fn store_fence() {
        // SAFETY: SSE is part of x86-64.
        unsafe { _mm_sfence() }
    }

    /// The sums of the lanes of three f32 vectors at once (three horizontal adds on x86-64 v3,
    /// where one `reduce_add` each costs about as much as the work on a 49-value row: measured
    /// on the 7x7 backward's per-row sums); `None` elsewhere.
    #[inline(always)]
    pub(crate) fn sum3<S: Simd>(v: [Vector<S, f32>; 3]) -> Option<[f64; 3]> {
        if !is_v3::<S>() {
            return None;
        }
        // SAFETY: the registers are S's, x86-64 v3 (is_v3), whose features macerator checked.
        unsafe {
            let [p, q, t] = v.map(|v| raw::<S, __m256, f32>(v));
            // [p01 p23 q01 q23 | p45 p67 q45 q67], [t01 t23 t01 t23 | ...], then
            // [p0-3 q0-3 t0-3 t0-3 | p4-7 q4-7 t4-7 t4-7].
            let s = _mm256_hadd_ps(_mm256_hadd_ps(p, q), _mm256_hadd_ps(t, t));
            let r = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), r);
            Some([out[0] as f64, out[1] as f64, out[2] as f64])
        }
    }

    /// Asks for the cache line at `ptr`: a hint, which never faults, whatever the address.
    #[inline(always)]
    pub(crate) fn prefetch<T>(ptr: *const T) {
        // SAFETY: SSE is part of x86-64; a prefetch never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.cast()) }
    }

    /// Whether [`transpose8`] runs here: x86-64 v3 or above, unless the baseline is forced.
    pub(crate) fn has_transpose8() -> bool {
        !super::super::is_baseline() && std::arch::is_x86_feature_detected!("avx2")
    }

    /// Writes row `k` of the 8x8 block of `BYTES`-sized elements (4 or 2) at `src` (rows
    /// `src_stride` elements apart) as column `k` of the block at `dst` (rows `dst_stride`
    /// apart); the bits are moved, never interpreted.
    ///
    /// # Safety
    ///
    /// Both blocks are valid for their accesses, the source initialized; the CPU supports AVX2
    /// ([`has_transpose8`]).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(crate) unsafe fn transpose8<const BYTES: usize>(
        src: *const u8,
        src_stride: usize,
        dst: *mut u8,
        dst_stride: usize,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            if BYTES == 4 {
                let (src, dst) = (src.cast::<f32>(), dst.cast::<f32>());
                let r: [__m256; 8] =
                    core::array::from_fn(|k| _mm256_loadu_ps(src.add(k * src_stride)));
                // Interleave pairs of rows, then pairs of pairs, then the 128-bit halves.
                let t: [__m256; 8] = core::array::from_fn(|i| {
                    let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                    if i % 2 == 0 {
                        _mm256_unpacklo_ps(a, b)
                    } else {
                        _mm256_unpackhi_ps(a, b)
                    }
                });
                let u = [
                    _mm256_shuffle_ps::<0x44>(t[0], t[2]),
                    _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
                    _mm256_shuffle_ps::<0x44>(t[1], t[3]),
                    _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
                    _mm256_shuffle_ps::<0x44>(t[4], t[6]),
                    _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
                    _mm256_shuffle_ps::<0x44>(t[5], t[7]),
                    _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
                ];
                for j in 0..4 {
                    let lo = _mm256_permute2f128_ps::<0x20>(u[j], u[j + 4]);
                    let hi = _mm256_permute2f128_ps::<0x31>(u[j], u[j + 4]);
                    _mm256_storeu_ps(dst.add(j * dst_stride), lo);
                    _mm256_storeu_ps(dst.add((j + 4) * dst_stride), hi);
                }
            } else {
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
                let u: [__m128i; 8] = core::array::from_fn(|i| {
                    let (q, hi) = (i % 4, i / 4 * 4);
                    let (a, b) = (t[hi + q / 2], t[hi + q / 2 + 2]);
                    if q % 2 == 0 {
                        _mm_unpacklo_epi32(a, b)
                    } else {
                        _mm_unpackhi_epi32(a, b)
                    }
                });
                for q in 0..4 {
                    let lo = _mm_unpacklo_epi64(u[q], u[q + 4]);
                    let hi = _mm_unpackhi_epi64(u[q], u[q + 4]);
                    _mm_storeu_si128(dst.add(2 * q * dst_stride).cast(), lo);
                    _mm_storeu_si128(dst.add((2 * q + 1) * dst_stride).cast(), hi);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod portable {
    use macerator::{Scalar, Simd, Vector};

    use super::Half;

    /// No in-register conversion: the caller converts lane by lane.
    ///
    /// # Safety
    ///
    /// None needed; the signature matches the x86 version.
    #[inline(always)]
    pub(crate) unsafe fn widen<S: Simd, H: Half>(_: *const H) -> Option<Vector<S, f32>> {
        None
    }

    /// No in-register conversion: the caller converts lane by lane.
    ///
    /// # Safety
    ///
    /// None needed; the signature matches the x86 version.
    #[inline(always)]
    pub(crate) unsafe fn narrow<S: Simd, H: Half>(_: *mut H, _: Vector<S, f32>) -> bool {
        false
    }

    /// A plain store.
    ///
    /// # Safety
    ///
    /// `p` is valid for a vector's writes.
    #[inline(always)]
    pub(crate) unsafe fn store_stream<S: Simd, T: Scalar>(p: *mut T, v: Vector<S, T>) {
        // SAFETY: the caller's contract.
        unsafe { macerator::vstore_unaligned(p, v) }
    }

    #[inline(always)]
    pub(crate) fn store_fence() {}

    /// No combined sum: the caller reduces each vector.
    #[inline(always)]
    pub(crate) fn sum3<S: Simd>(_: [Vector<S, f32>; 3]) -> Option<[f64; 3]> {
        None
    }

    #[inline(always)]
    pub(crate) fn prefetch<T>(_: *const T) {}

    pub(crate) fn has_transpose8() -> bool {
        false
    }

    /// Never called ([`has_transpose8`] is `false`).
    ///
    /// # Safety
    ///
    /// None needed.
    pub(crate) unsafe fn transpose8<const BYTES: usize>(
        _: *const u8,
        _: usize,
        _: *mut u8,
        _: usize,
    ) {
        unreachable!("no 8x8 transposes here")
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) use portable::*;
