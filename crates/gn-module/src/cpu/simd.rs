//! Hand-vectorized loops for x86-64 with AVX2, FMA and F16C: the statistics and the backward's
//! per-channel sums (LLVM pairs the two running sums of one lane instead of running eight
//! lanes of one sum), and the elementwise passes on short rows (LLVM's 32-wide unrolled loop
//! leaves most of a 49-value row to its scalar epilogue).
//!
//! They read and write f32, f16 or bf16 ([`Lanes`]), computing in f32: 16-bit values are
//! converted in registers, which costs a few instructions a vector where widening into a
//! buffer and narrowing back cost two more stores and loads per value.
//!
//! Same blocking as the generic code: 16 lanes summed in f32 over blocks of `BLOCK` values,
//! each block's sums widened to f64.
//!
//! Every function here that executes AVX2, FMA or F16C instructions is a `#[target_feature]`
//! function, so the compiler checks that its callers either have the features too or call it in
//! `unsafe` code (after [`lanes_apply`] or [`super::simd_level`]). Safe ones are sound for any
//! arguments; the `unsafe` ones state their contracts under `# Safety`.

use core::any::TypeId;
use core::arch::x86_64::*;

use half::{bf16, f16};

use super::SimdLevel;
use super::rows::{ACT_NONE, ACT_RELU, ACT_SILU};

/// Whether the kernels here run for stored element type `T`: f32, f16 or bf16, where
/// [`super::simd_level`] is [`SimdLevel::Avx2`] (a CPU with AVX2, FMA and F16C).
#[inline(always)]
pub(crate) fn lanes_apply<T: 'static>() -> bool {
    let t = TypeId::of::<T>();
    (t == TypeId::of::<f32>() || t == TypeId::of::<f16>() || t == TypeId::of::<bf16>())
        && super::simd_level() == SimdLevel::Avx2
}

/// Runs `$body` with `$l` the type alias of `$t` among the lane types (f32, f16, bf16), once
/// [`lanes_apply`] has said that `$t` is one of them; panics for any other type (a check on
/// `TypeId`s, resolved at compile time), so that callers may cast `$t` data to `$l`.
macro_rules! with_lanes {
    ($t:ty, |$l:ident| $body:expr) => {{
        use core::any::TypeId;
        if TypeId::of::<$t>() == TypeId::of::<f32>() {
            type $l = f32;
            $body
        } else if TypeId::of::<$t>() == TypeId::of::<half::f16>() {
            type $l = half::f16;
            $body
        } else {
            assert!(
                TypeId::of::<$t>() == TypeId::of::<half::bf16>(),
                "not a lane type"
            );
            type $l = half::bf16;
            $body
        }
    }};
}
pub(crate) use with_lanes;

/// An element read and written 8 at a time as 8 f32 lanes.
///
/// The methods are `#[target_feature]` functions (AVX2 and F16C): callers compiled with those
/// features inline them.
pub(crate) trait Lanes: Copy + 'static {
    /// 8 values from `p` as f32.
    ///
    /// # Safety
    ///
    /// The CPU supports AVX2 and F16C; `p` is valid for 8 reads.
    unsafe fn load(p: *const Self) -> __m256;

    /// `v` rounded to the element (to nearest, ties to even) into `p`.
    ///
    /// # Safety
    ///
    /// The CPU supports AVX2 and F16C; `p` is valid for 8 writes.
    unsafe fn store(p: *mut Self, v: __m256);

    /// The first `n` values from `p` as f32, the other lanes 0.
    ///
    /// # Safety
    ///
    /// The CPU supports AVX2 and F16C; `n` is below 8 and `p` is valid for `n` reads.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load_partial(p: *const Self, n: usize) -> __m256 {
        debug_assert!(n < 8);
        let mut buf = [Self::put(0.0); 8];
        // SAFETY: the caller's contract (n < 8: buf holds 8).
        unsafe {
            core::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
            Self::load(buf.as_ptr())
        }
    }

    /// The first `n` lanes of `v` into `p`.
    ///
    /// # Safety
    ///
    /// The CPU supports AVX2 and F16C; `n` is below 8 and `p` is valid for `n` writes.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn store_partial(p: *mut Self, n: usize, v: __m256) {
        debug_assert!(n < 8);
        let mut buf = [Self::put(0.0); 8];
        // SAFETY: the caller's contract (n < 8: buf holds 8).
        unsafe {
            Self::store(buf.as_mut_ptr(), v);
            core::ptr::copy_nonoverlapping(buf.as_ptr(), p, n);
        }
    }

    /// One value as f32.
    fn get(self) -> f32;

    /// One f32 value rounded to the element.
    fn put(v: f32) -> Self;
}

impl Lanes for f32 {
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load(p: *const Self) -> __m256 {
        // SAFETY: the caller's contract.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn store(p: *mut Self, v: __m256) {
        // SAFETY: the caller's contract.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load_partial(p: *const Self, n: usize) -> __m256 {
        // SAFETY: the caller's contract (n < 8, p valid for n reads); the masked-off lanes are
        // not read.
        unsafe { _mm256_maskload_ps(p, lane_mask(n)) }
    }
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn store_partial(p: *mut Self, n: usize, v: __m256) {
        // SAFETY: the caller's contract (n < 8, p valid for n writes); the masked-off lanes are
        // not written.
        unsafe { _mm256_maskstore_ps(p, lane_mask(n), v) }
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
    #[inline(always)]
    fn put(v: f32) -> Self {
        v
    }
}

impl Lanes for f16 {
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load(p: *const Self) -> __m256 {
        // SAFETY: the caller's contract (8 values of 2 bytes).
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast::<__m128i>()) })
    }
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn store(p: *mut Self, v: __m256) {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
        // SAFETY: the caller's contract (8 values of 2 bytes).
        unsafe { _mm_storeu_si128(p.cast::<__m128i>(), h) }
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn put(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Lanes for bf16 {
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load(p: *const Self) -> __m256 {
        // SAFETY: the caller's contract (8 values of 2 bytes).
        let h = _mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(p.cast::<__m128i>()) });
        // bf16 is the upper half of an f32.
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
    }
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn store(p: *mut Self, v: __m256) {
        let r = round_bf16(_mm256_castps_si256(v));
        // packus works within 128-bit lanes: [r0-3 r0-3 | r4-7 r4-7], then r0-7 in front.
        let packed = _mm256_permute4x64_epi64::<0b00_00_10_00>(_mm256_packus_epi32(r, r));
        // SAFETY: the caller's contract (8 values of 2 bytes).
        unsafe { _mm_storeu_si128(p.cast::<__m128i>(), _mm256_castsi256_si128(packed)) }
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn put(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// `e^x` in each lane, after Cephes' `expf`: `x = n ln 2 + r` with `|r| <= ln 2 / 2`, `e^r` by a
/// degree-6 polynomial, `2^n` through the exponent bits; within a few ulp of `expf`, 0 below
/// -87.3 (where f32 results stop being normal) and infinite above 88.7, as `expf`. A NaN lane
/// gives a finite value: the callers keep NaN through `z` itself.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp(x: __m256) -> __m256 {
    let overflow = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(88.72));
    // Computed on [-88, 88], where 2^n stays within the exponent's range.
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-88.0)),
        _mm256_set1_ps(88.0),
    );
    let n = _mm256_floor_ps(_mm256_fmadd_ps(
        x,
        _mm256_set1_ps(core::f32::consts::LOG2_E),
        _mm256_set1_ps(0.5),
    ));
    // ln 2 in two parts, so that n ln 2 is subtracted without rounding error.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let one = _mm256_set1_ps(1.0);
    let er = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, one));
    let bits = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    let e = _mm256_mul_ps(er, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(bits)));
    _mm256_blendv_ps(e, _mm256_set1_ps(f32::INFINITY), overflow)
}

/// `1 / (1 + e^-z)` in each lane.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn sigmoid(z: __m256) -> __m256 {
    let one = _mm256_set1_ps(1.0);
    let minus_z = _mm256_xor_ps(z, _mm256_set1_ps(-0.0));
    // A division, not a reciprocal estimate refined: SiLU's derivative multiplies
    // 1 - sigmoid(z) by z, which would scale the estimate's last-bit error up.
    _mm256_div_ps(one, _mm256_add_ps(one, exp(minus_z)))
}

/// `act(z)` in each lane, as [`super::rows::activate`]: ReLU keeps NaN (maxps returns its
/// second operand when either is NaN), SiLU is `z sigmoid(z)`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn activate<const ACT: u32>(z: __m256) -> __m256 {
    match ACT {
        ACT_RELU => _mm256_max_ps(_mm256_setzero_ps(), z),
        ACT_SILU => _mm256_mul_ps(z, sigmoid(z)),
        _ => z,
    }
}

/// `dy act'(z)` in each lane, as [`super::rows::activate_grad`]: ReLU's derivative is 0 at 0
/// (and for NaN), SiLU's `s (1 + z (1 - s))` with `s = sigmoid(z)`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn activate_grad<const ACT: u32>(z: __m256, dy: __m256) -> __m256 {
    match ACT {
        ACT_RELU => _mm256_and_ps(dy, _mm256_cmp_ps::<_CMP_GT_OQ>(z, _mm256_setzero_ps())),
        ACT_SILU => {
            let (one, s) = (_mm256_set1_ps(1.0), sigmoid(z));
            let slope = _mm256_fmadd_ps(z, _mm256_sub_ps(one, s), one);
            _mm256_mul_ps(_mm256_mul_ps(dy, s), slope)
        }
        _ => dy,
    }
}

/// Lanes `0..rem` set (`rem` in `0..8`).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn lane_mask(rem: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(rem as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// The bf16 bits of 8 f32 values (in the low half of each 32-bit lane): to nearest, ties to
/// even, NaN kept quiet, as `bf16::from_f32`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn round_bf16(v: __m256i) -> __m256i {
    let high = _mm256_srli_epi32::<16>(v);
    let lsb = _mm256_and_si256(high, _mm256_set1_epi32(1));
    let bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
    let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(v, bias));
    // A NaN's rounding could carry into the exponent (or clear a low payload): keep its
    // top half, made quiet.
    let f = _mm256_castsi256_ps(v);
    let is_nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(f, f));
    let nan = _mm256_or_si256(high, _mm256_set1_epi32(0x40));
    _mm256_blendv_epi8(rounded, nan, is_nan)
}

const BLOCK: usize = 256;

/// Sum of the 8 lanes of `v`, in f64.
#[inline]
#[target_feature(enable = "avx")]
fn widen_sum(v: __m256) -> f64 {
    let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
    let s = _mm256_add_pd(lo, hi);
    let pair = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd::<1>(s));
    _mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair)))
}

/// `Σ (x - k)` and `Σ (x - k)²` added into `acc`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn shifted_sums<T: Lanes>(row: &[T], k: f32, acc: &mut [f64; 2]) {
    let kv = _mm256_set1_ps(k);
    for block in row.chunks(BLOCK) {
        let (mut s1a, mut s1b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut s2a, mut s2b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut chunks = block.chunks_exact(16);
        for c in &mut chunks {
            // SAFETY: `c` holds 16 values; the CPU features are this function's.
            let (v0, v1) = unsafe {
                (
                    _mm256_sub_ps(T::load(c.as_ptr()), kv),
                    _mm256_sub_ps(T::load(c.as_ptr().add(8)), kv),
                )
            };
            s1a = _mm256_add_ps(s1a, v0);
            s1b = _mm256_add_ps(s1b, v1);
            s2a = _mm256_fmadd_ps(v0, v0, s2a);
            s2b = _mm256_fmadd_ps(v1, v1, s2b);
        }
        let (mut t1, mut t2) = (
            widen_sum(_mm256_add_ps(s1a, s1b)),
            widen_sum(_mm256_add_ps(s2a, s2b)),
        );
        for &x in chunks.remainder() {
            let d = x.get() - k;
            t1 += d as f64;
            t2 += (d * d) as f64;
        }
        acc[0] += t1;
        acc[1] += t2;
    }
}

/// `Σ dz (x - k)`, `Σ dz` and `Σ (x - k)` added into `acc`, with `dz = dy act'(z)`,
/// `z = (x - k) a + b`.
///
/// # Panics
///
/// If `x` and `dy` differ in length.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn backward_sums<T: Lanes, const ACT: u32>(
    x: &[T],
    dy: &[T],
    k: f32,
    a: f32,
    b: f32,
    acc: &mut [f64; 3],
) {
    // The loads below take both remainders to be as long as each other.
    assert_eq!(x.len(), dy.len(), "x and dy lengths");
    let (kv, av, bv) = (_mm256_set1_ps(k), _mm256_set1_ps(a), _mm256_set1_ps(b));
    for (xb, gb) in x.chunks(BLOCK).zip(dy.chunks(BLOCK)) {
        let (mut p, mut q, mut t) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let grad = |d: __m256, dy: __m256| {
            if ACT == ACT_NONE {
                dy
            } else {
                activate_grad::<ACT>(_mm256_fmadd_ps(d, av, bv), dy)
            }
        };
        // Two vectors' gradients a step (they overlap), added in order.
        let mut xc = xb.chunks_exact(16);
        let mut gc = gb.chunks_exact(16);
        for (xs, gs) in (&mut xc).zip(&mut gc) {
            // SAFETY: both chunks hold 16 values; the CPU features are this function's.
            let [(d0, g0), (d1, g1)] = [0, 8].map(|o| unsafe {
                (
                    _mm256_sub_ps(T::load(xs.as_ptr().add(o)), kv),
                    T::load(gs.as_ptr().add(o)),
                )
            });
            let (dz0, dz1) = (grad(d0, g0), grad(d1, g1));
            for (d, dz) in [(d0, dz0), (d1, dz1)] {
                p = _mm256_fmadd_ps(dz, d, p);
                q = _mm256_add_ps(q, dz);
                t = _mm256_add_ps(t, d);
            }
        }
        // A last whole vector, then the values past it one by one.
        let (xr, gr) = (xc.remainder(), gc.remainder());
        let whole = xr.len() / 8 * 8;
        if whole == 8 {
            // SAFETY: both remainders hold at least 8 values (x and dy have one length).
            let (d, g) = unsafe {
                (
                    _mm256_sub_ps(T::load(xr.as_ptr()), kv),
                    T::load(gr.as_ptr()),
                )
            };
            let dz = grad(d, g);
            p = _mm256_fmadd_ps(dz, d, p);
            q = _mm256_add_ps(q, dz);
            t = _mm256_add_ps(t, d);
        }
        let (mut tp, mut tq, mut tt) = (widen_sum(p), widen_sum(q), widen_sum(t));
        for (&xv, &g) in xr[whole..].iter().zip(&gr[whole..]) {
            let (d, g) = (xv.get() - k, g.get());
            // z rounded once, as in the vectors.
            let dz = super::rows::activate_grad::<f32, ACT>(d.mul_add(a, b), g);
            tp += (dz * d) as f64;
            tq += dz as f64;
            tt += d as f64;
        }
        acc[0] += tp;
        acc[1] += tq;
        acc[2] += tt;
    }
}

/// `dst = act((src - k) a + b)` with non-temporal stores: for outputs
/// too large to stay in cache, writing around the cache saves reading every destination line
/// from memory first.
///
/// `ahead` (empty, or values the caller reads next) is prefetched in step with `src`: this pass
/// reads `src` from cache, so memory would otherwise sit idle while it runs.
///
/// The caller issues a store fence ([`store_fence`]) before anything else reads `dst`.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn normalize_stream<const ACT: u32>(
    src: &[f32],
    dst: &mut [core::mem::MaybeUninit<f32>],
    k: f32,
    a: f32,
    b: f32,
    ahead: &[f32],
) {
    let n = src.len().min(dst.len());
    // z rounded once, as in the vectors.
    let scalar = |x: f32| super::rows::activate::<f32, ACT>((x - k).mul_add(a, b));
    // Scalar stores up to the first 32-byte boundary of the destination.
    let head = dst.as_ptr().align_offset(32).min(n);
    for i in 0..head {
        dst[i].write(scalar(src[i]));
    }
    let (kv, av, bv) = (_mm256_set1_ps(k), _mm256_set1_ps(a), _mm256_set1_ps(b));
    let mut i = head;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, the length of both; dst + i is 32-byte aligned (head alignment,
        // 8 floats per step); the prefetched address is inside `ahead`.
        unsafe {
            // One prefetch per 64-byte line.
            if (i - head) & 8 == 0 && i < ahead.len() {
                _mm_prefetch::<_MM_HINT_T0>(ahead.as_ptr().add(i).cast::<i8>());
            }
            let v = _mm256_loadu_ps(src.as_ptr().add(i));
            let z = activate::<ACT>(_mm256_fmadd_ps(_mm256_sub_ps(v, kv), av, bv));
            _mm256_stream_ps(dst.as_mut_ptr().add(i).cast::<f32>(), z);
        }
        i += 8;
    }
    for j in i..n {
        dst[j].write(scalar(src[j]));
    }
}

/// Writes `compute(i)` at `store(i, ..)` for the 8-value vectors of `0..n`. The last vector
/// overlaps its predecessor when 8 does not divide `n`, and it is computed first and stored
/// last, so it reads the inputs as they were even when the output overwrites an input: a short
/// row costs whole vectors and no scalar tail. Returns `false`, having run nothing, when
/// `n < 8`.
#[inline(always)]
pub(crate) fn map_vectors(
    n: usize,
    compute: impl Fn(usize) -> __m256,
    mut store: impl FnMut(usize, __m256),
) -> bool {
    if n < 8 {
        return false;
    }
    let tail = (!n.is_multiple_of(8)).then(|| compute(n - 8));
    let mut i = 0;
    // Two vectors a step: their long computations (SiLU's exp and division) overlap.
    while i + 16 <= n {
        let (v0, v1) = (compute(i), compute(i + 8));
        store(i, v0);
        store(i + 8, v1);
        i += 16;
    }
    while i + 8 <= n {
        store(i, compute(i));
        i += 8;
    }
    if let Some(v) = tail {
        store(n - 8, v);
    }
    true
}

/// `dst = act((src - k) a + b)` over `n` values, through the cache;
/// `dst` may be `src`. For rows shorter than 8, `false` (nothing written).
///
/// # Safety
///
/// The CPU must support AVX2, FMA and F16C; `src` is valid for `n` reads and `dst` for `n`
/// writes, and they are the same or disjoint.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn normalize<T: Lanes, const ACT: u32>(
    src: *const T,
    dst: *mut T,
    n: usize,
    k: f32,
    a: f32,
    b: f32,
) -> bool {
    let (kv, av, bv) = (_mm256_set1_ps(k), _mm256_set1_ps(a), _mm256_set1_ps(b));
    map_vectors(
        n,
        |i| {
            // SAFETY: i + 8 <= n.
            let v = unsafe { T::load(src.add(i)) };
            activate::<ACT>(_mm256_fmadd_ps(_mm256_sub_ps(v, kv), av, bv))
        },
        // SAFETY: i + 8 <= n.
        |i, v| unsafe { T::store(dst.add(i), v) },
    )
}

/// `dx = a dz + cx (x - k) + c0` over `n` values, `dz` as in [`backward_sums`]; `dx` may be
/// `dy`. For rows shorter than 8, `false` (nothing written).
///
/// # Safety
///
/// The CPU must support AVX2, FMA and F16C; `x` and `dy` are valid for `n` reads and `dx` for
/// `n` writes; `dx` is `dy` or disjoint from both inputs.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn backward_apply<T: Lanes, const ACT: u32>(
    x: *const T,
    dy: *const T,
    dx: *mut T,
    n: usize,
    [k, a, b, cx, c0]: [f32; 5],
) -> bool {
    let (kv, av, bv, cxv, c0v) = (
        _mm256_set1_ps(k),
        _mm256_set1_ps(a),
        _mm256_set1_ps(b),
        _mm256_set1_ps(cx),
        _mm256_set1_ps(c0),
    );
    map_vectors(
        n,
        |i| {
            // SAFETY: i + 8 <= n.
            let (xv, mut dz) = unsafe { (T::load(x.add(i)), T::load(dy.add(i))) };
            let d = _mm256_sub_ps(xv, kv);
            if ACT != ACT_NONE {
                dz = activate_grad::<ACT>(_mm256_fmadd_ps(d, av, bv), dz);
            }
            _mm256_fmadd_ps(cxv, d, _mm256_fmadd_ps(av, dz, c0v))
        },
        // SAFETY: i + 8 <= n.
        |i, v| unsafe { T::store(dx.add(i), v) },
    )
}

/// 8 values from `p + i` when `m` is 8, else the `m` there (the other lanes 0).
///
/// # Safety
///
/// The CPU supports AVX2 and F16C; `m` is at most 8 and `p + i` is valid for `m` reads.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn load_at<T: Lanes>(p: *const T, i: usize, m: usize) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe {
        if m == 8 {
            T::load(p.add(i))
        } else {
            T::load_partial(p.add(i), m)
        }
    }
}

/// The first `m` (8, or fewer) lanes of `v` to `p + i`.
///
/// # Safety
///
/// The CPU supports AVX2 and F16C; `m` is at most 8 and `p + i` is valid for `m` writes.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn store_at<T: Lanes>(p: *mut T, i: usize, m: usize, v: __m256) {
    // SAFETY: the caller's contract.
    unsafe {
        if m == 8 {
            T::store(p.add(i), v)
        } else {
            T::store_partial(p.add(i), m, v)
        }
    }
}

/// `step(i, m)` over the columns `0..n`: whole vectors (`m` = 8), then the last `m < 8`.
#[inline(always)]
fn for_columns(n: usize, mut step: impl FnMut(usize, usize)) {
    let mut i = 0;
    while i + 8 <= n {
        step(i, 8);
        i += 8;
    }
    if i < n {
        step(i, n - i);
    }
}

/// Per column `i < n` (a channel at one position of a channels-last input):
/// `s1[i] += x[i] - k[i]` and `s2[i] += (x[i] - k[i])²`.
///
/// # Safety
///
/// The CPU must support AVX2, FMA and F16C; `x`, `k`, `s1` and `s2` are valid for `n`
/// elements, `s1` and `s2` writable and disjoint from the others.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn add_col_sums<T: Lanes>(
    x: *const T,
    k: *const f32,
    s1: *mut f32,
    s2: *mut f32,
    n: usize,
) {
    // SAFETY: i + m <= n.
    for_columns(n, |i, m| unsafe {
        let d = _mm256_sub_ps(load_at(x, i, m), load_at(k, i, m));
        store_at(s1, i, m, _mm256_add_ps(load_at(s1, i, m), d));
        store_at(s2, i, m, _mm256_fmadd_ps(d, d, load_at(s2, i, m)));
    });
}

/// Per column `i < n`: `dst[i] = act((x[i] - k[i]) a[i] + b[i])`.
///
/// # Safety
///
/// The CPU must support AVX2, FMA and F16C; `x`, `k`, `a` and `b` are valid for `n` reads and
/// `dst` for `n` writes, disjoint from `x`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn normalize_cols<T: Lanes, const ACT: u32>(
    x: *const T,
    dst: *mut T,
    n: usize,
    [k, a, b]: [*const f32; 3],
) {
    let f = |xv: __m256, kv: __m256, av: __m256, bv: __m256| {
        activate::<ACT>(_mm256_fmadd_ps(_mm256_sub_ps(xv, kv), av, bv))
    };
    let whole = map_vectors(
        n,
        // SAFETY: i + 8 <= n.
        |i| unsafe {
            f(
                T::load(x.add(i)),
                f32::load(k.add(i)),
                f32::load(a.add(i)),
                f32::load(b.add(i)),
            )
        },
        // SAFETY: i + 8 <= n.
        |i, v| unsafe { T::store(dst.add(i), v) },
    );
    if !whole {
        // SAFETY: the n < 8 values.
        unsafe {
            let v = f(
                T::load_partial(x, n),
                f32::load_partial(k, n),
                f32::load_partial(a, n),
                f32::load_partial(b, n),
            );
            T::store_partial(dst, n, v);
        }
    }
}

/// Per column `i < n`, with `d = x[i] - k[i]` and `dz = dy[i] act'(d a[i] + b[i])`:
/// `p[i] += dz d`, `q[i] += dz`, `t[i] += d`.
///
/// # Safety
///
/// The CPU must support AVX2, FMA and F16C; every pointer is valid for `n` elements, the sums
/// writable and disjoint from the others.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn backward_col_sums<T: Lanes, const ACT: u32>(
    x: *const T,
    dy: *const T,
    n: usize,
    [k, a, b]: [*const f32; 3],
    [p, q, t]: [*mut f32; 3],
) {
    // SAFETY: i + m <= n.
    for_columns(n, |i, m| unsafe {
        let d = _mm256_sub_ps(load_at(x, i, m), load_at(k, i, m));
        let g = load_at(dy, i, m);
        let dz = if ACT == ACT_NONE {
            g
        } else {
            let z = _mm256_fmadd_ps(d, load_at(a, i, m), load_at(b, i, m));
            activate_grad::<ACT>(z, g)
        };
        store_at(p, i, m, _mm256_fmadd_ps(dz, d, load_at(p, i, m)));
        store_at(q, i, m, _mm256_add_ps(load_at(q, i, m), dz));
        store_at(t, i, m, _mm256_add_ps(load_at(t, i, m), d));
    });
}

/// Per column `i < n`: `dx[i] = a[i] dz + cx[i] d + c0[i]`, `d` and `dz` as in
/// [`backward_col_sums`].
///
/// # Safety
///
/// The CPU must support AVX2, FMA and F16C; the inputs are valid for `n` reads and `dx` for `n`
/// writes, disjoint from them.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn backward_apply_cols<T: Lanes, const ACT: u32>(
    x: *const T,
    dy: *const T,
    dx: *mut T,
    n: usize,
    [k, a, b, cx, c0]: [*const f32; 5],
) {
    let f = |xv: __m256, g: __m256, [kv, av, bv, cxv, c0v]: [__m256; 5]| {
        let d = _mm256_sub_ps(xv, kv);
        let dz = if ACT == ACT_NONE {
            g
        } else {
            activate_grad::<ACT>(_mm256_fmadd_ps(d, av, bv), g)
        };
        _mm256_fmadd_ps(cxv, d, _mm256_fmadd_ps(av, dz, c0v))
    };
    let whole = map_vectors(
        n,
        // SAFETY: i + 8 <= n.
        |i| unsafe {
            let coefs = [k, a, b, cx, c0].map(|ptr| f32::load(ptr.add(i)));
            f(T::load(x.add(i)), T::load(dy.add(i)), coefs)
        },
        // SAFETY: i + 8 <= n.
        |i, v| unsafe { T::store(dx.add(i), v) },
    );
    if !whole {
        // SAFETY: the n < 8 values.
        unsafe {
            let coefs = [k, a, b, cx, c0].map(|ptr| f32::load_partial(ptr, n));
            let v = f(T::load_partial(x, n), T::load_partial(dy, n), coefs);
            T::store_partial(dx, n, v);
        }
    }
}

/// Orders the non-temporal stores before later loads and stores.
pub(crate) fn store_fence() {
    // SAFETY: SSE is part of x86-64.
    unsafe { _mm_sfence() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vector function of this module, for [`lanes_of`].
    #[derive(Clone, Copy)]
    enum VecFn {
        Exp,
        Silu,
        /// SiLU's derivative times 1.
        SiluGrad,
    }

    /// 8 lanes of `f` at `x`.
    #[target_feature(enable = "avx2,fma")]
    fn lanes_of(f: VecFn, x: [f32; 8]) -> [f32; 8] {
        // SAFETY: x holds 8 floats.
        let v = unsafe { _mm256_loadu_ps(x.as_ptr()) };
        let y = match f {
            VecFn::Exp => exp(v),
            VecFn::Silu => activate::<ACT_SILU>(v),
            VecFn::SiluGrad => activate_grad::<ACT_SILU>(v, _mm256_set1_ps(1.0)),
        };
        let mut out = [0f32; 8];
        // SAFETY: out holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), y) };
        out
    }

    /// The column kernels (forward and backward) at `n` columns, for every `n` from 1 to 40,
    /// with values stored as `T`: the sums and every output column match the f64 formulas
    /// (each activation), and nothing past the `n` columns is read into the sums or written.
    fn check_columns<T: Lanes + PartialEq + core::fmt::Debug>(tol: f64) {
        for n in 1..=40 {
            let x: Vec<T> = (0..n)
                .map(|i| T::put(((i * 7) % 11) as f32 * 0.4 - 2.0))
                .collect();
            let k: Vec<f32> = (0..n).map(|i| 0.1 * (i % 3) as f32).collect();
            let a: Vec<f32> = (0..n).map(|i| 0.5 + 0.1 * (i % 4) as f32).collect();
            let b: Vec<f32> = (0..n).map(|i| -0.2 + 0.05 * (i % 5) as f32).collect();
            // One more slot than the columns: the last must stay as it was.
            let (mut s1, mut s2) = (vec![1.0f32; n + 1], vec![2.0f32; n + 1]);
            // SAFETY: the CPU has the features (the caller checked lanes_apply); n values each,
            // the sums one more.
            unsafe {
                add_col_sums::<T>(x.as_ptr(), k.as_ptr(), s1.as_mut_ptr(), s2.as_mut_ptr(), n)
            };
            for i in 0..n {
                let d = (x[i].get() - k[i]) as f64;
                assert!(
                    (s1[i] as f64 - (1.0 + d)).abs() <= 1e-6 * (1.0 + d.abs()),
                    "s1[{i}], n {n}"
                );
                assert!(
                    (s2[i] as f64 - (2.0 + d * d)).abs() <= 1e-5 * (1.0 + d * d),
                    "s2[{i}], n {n}"
                );
            }
            assert_eq!((s1[n], s2[n]), (1.0, 2.0), "past the columns, n {n}");
            for act in [ACT_NONE, ACT_RELU, ACT_SILU] {
                let sentinel = T::put(7.0);
                let mut dst = vec![sentinel; n + 1];
                let coefs = [k.as_ptr(), a.as_ptr(), b.as_ptr()];
                // SAFETY: as above.
                unsafe {
                    match act {
                        ACT_RELU => {
                            normalize_cols::<T, ACT_RELU>(x.as_ptr(), dst.as_mut_ptr(), n, coefs)
                        }
                        ACT_SILU => {
                            normalize_cols::<T, ACT_SILU>(x.as_ptr(), dst.as_mut_ptr(), n, coefs)
                        }
                        _ => normalize_cols::<T, ACT_NONE>(x.as_ptr(), dst.as_mut_ptr(), n, coefs),
                    }
                }
                for i in 0..n {
                    let z = (x[i].get() - k[i]) as f64 * a[i] as f64 + b[i] as f64;
                    let want = match act {
                        ACT_RELU => z.max(0.0),
                        ACT_SILU => z / (1.0 + (-z).exp()),
                        _ => z,
                    };
                    let got = dst[i].get() as f64;
                    assert!(
                        (got - want).abs() <= tol * (1.0 + want.abs()),
                        "y[{i}], n {n}, act {act}: {got} != {want}"
                    );
                }
                assert_eq!(dst[n], sentinel, "written past the columns, n {n}");

                // The backward's columns, with cx and c0 per column too.
                let dy: Vec<T> = (0..n)
                    .map(|i| T::put(((i * 5) % 7) as f32 * 0.3 - 0.9))
                    .collect();
                let cx: Vec<f32> = (0..n).map(|i| 0.07 - 0.01 * (i % 3) as f32).collect();
                let c0: Vec<f32> = (0..n).map(|i| -0.01 * (i % 2) as f32).collect();
                let mut sums = [
                    vec![1.0f32; n + 1],
                    vec![2.0f32; n + 1],
                    vec![3.0f32; n + 1],
                ];
                let mut dx = vec![sentinel; n + 1];
                let sum_ptrs = sums.each_mut().map(|v| v.as_mut_ptr());
                let all = [k.as_ptr(), a.as_ptr(), b.as_ptr(), cx.as_ptr(), c0.as_ptr()];
                let (xp, gp, dxp) = (x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
                // SAFETY: as above.
                unsafe {
                    match act {
                        ACT_RELU => {
                            backward_col_sums::<T, ACT_RELU>(xp, gp, n, coefs, sum_ptrs);
                            backward_apply_cols::<T, ACT_RELU>(xp, gp, dxp, n, all);
                        }
                        ACT_SILU => {
                            backward_col_sums::<T, ACT_SILU>(xp, gp, n, coefs, sum_ptrs);
                            backward_apply_cols::<T, ACT_SILU>(xp, gp, dxp, n, all);
                        }
                        _ => {
                            backward_col_sums::<T, ACT_NONE>(xp, gp, n, coefs, sum_ptrs);
                            backward_apply_cols::<T, ACT_NONE>(xp, gp, dxp, n, all);
                        }
                    }
                }
                for i in 0..n {
                    let d = (x[i].get() - k[i]) as f64;
                    let z = d * a[i] as f64 + b[i] as f64;
                    let g = dy[i].get() as f64;
                    let dz = match act {
                        ACT_RELU if z <= 0.0 => 0.0,
                        ACT_SILU => {
                            let sg = 1.0 / (1.0 + (-z).exp());
                            g * sg * (1.0 + z * (1.0 - sg))
                        }
                        _ => g,
                    };
                    let want = [1.0 + dz * d, 2.0 + dz, 3.0 + d];
                    for (q, w) in want.iter().enumerate() {
                        let got = sums[q][i] as f64;
                        assert!(
                            (got - w).abs() <= 1e-5 * (1.0 + w.abs()),
                            "sum {q}[{i}], n {n}, act {act}"
                        );
                    }
                    let want = a[i] as f64 * dz + cx[i] as f64 * d + c0[i] as f64;
                    let got = dx[i].get() as f64;
                    assert!(
                        (got - want).abs() <= tol * (1.0 + want.abs()),
                        "dx[{i}], n {n}, act {act}: {got} != {want}"
                    );
                }
                assert_eq!(
                    [sums[0][n], sums[1][n], sums[2][n]],
                    [1.0, 2.0, 3.0],
                    "n {n}"
                );
                assert_eq!(dx[n], sentinel, "dx written past the columns, n {n}");
            }
        }
    }

    #[test]
    fn column_kernels_match_the_formulas() {
        if !lanes_apply::<f32>() {
            return;
        }
        check_columns::<f32>(1e-6);
        check_columns::<f16>(1e-3);
        check_columns::<bf16>(8e-3);
    }

    /// The vector `exp` is within 4 ulp of f64's over the range it computes (from -87.3, where
    /// f32 results stop being normal, to 88), and 0 or finite outside it; SiLU and its
    /// derivative follow the f64 formulas there, and keep NaN.
    #[test]
    fn exp_and_silu_match_f64() {
        if !lanes_apply::<f32>() {
            return;
        }
        let xs: Vec<f32> = (0..=200_000)
            .map(|i| -87.3 + 175.3 * i as f32 / 200_000.0)
            .collect();
        for chunk in xs.chunks_exact(8) {
            let x: [f32; 8] = chunk.try_into().unwrap();
            // SAFETY: the CPU has AVX2 and FMA (lanes_apply, above).
            let got = unsafe { lanes_of(VecFn::Exp, x) };
            for (&v, &g) in x.iter().zip(&got) {
                let want = (v as f64).exp();
                let ulp = (want as f32).abs() * f32::EPSILON;
                assert!(
                    (g as f64 - want).abs() <= 4.0 * ulp as f64,
                    "exp({v}) = {g}, want {want}"
                );
            }
            // SAFETY: as above.
            let (silu, grad) = unsafe { (lanes_of(VecFn::Silu, x), lanes_of(VecFn::SiluGrad, x)) };
            for ((&z, &y), &dz) in x.iter().zip(&silu).zip(&grad) {
                let z = z as f64;
                let s = 1.0 / (1.0 + (-z).exp());
                let (want_y, want_dz) = (z * s, s * (1.0 + z * (1.0 - s)));
                assert!(
                    (y as f64 - want_y).abs() <= 1e-6 * (1.0 + want_y.abs()),
                    "silu({z})"
                );
                assert!(
                    (dz as f64 - want_dz).abs() <= 1e-6 * (1.0 + want_dz.abs()),
                    "silu'({z})"
                );
            }
        }
        let edges = [-1e30, -100.0, -88.0, 88.0, 100.0, 1e30, f32::NAN, 0.0];
        // SAFETY: as above.
        let (e, silu) = unsafe { (lanes_of(VecFn::Exp, edges), lanes_of(VecFn::Silu, edges)) };
        assert_eq!(&e[..3], &[0.0; 3]);
        assert!(e[3].is_finite() && e[4] == f32::INFINITY && e[5] == f32::INFINITY);
        assert_eq!(e[7], 1.0);
        assert_eq!(&silu[3..6], &[88.0, 100.0, 1e30]);
        assert!(silu[6].is_nan() && silu[7] == 0.0);
        // Large negative z: z sigmoid(z) is 0 (to within f32's smallest normals).
        assert!(
            silu[..3].iter().all(|v| *v <= 0.0 && *v > -1e-36),
            "{silu:?}"
        );
    }
}
