//! A group's rows in one call, for short rows (7x7, 8x8, 4x4 maps: `S` of a few dozen values) with
//! AVX2, FMA and F16C, stored as f32, f16 or bf16 ([`Lanes`]). Called a row at a time, the kernels
//! of [`super::simd`] pay for every row their set-up, three horizontal sums in f64 and a scalar
//! tail; here a row costs the broadcast of its channel's coefficients, its vectors, and for the
//! sums one combined horizontal sum.
//!
//! Rows are `s` values apart, row `j` at `j * s`; `a` and `b` hold one coefficient per row, so
//! their length is the number of rows. A row shorter than 8, or the last part of a longer one,
//! is read with partial loads (the lanes past it are neither read nor written), or, where a
//! row has 8 values or more, as one more whole vector overlapping its predecessor. Rows of one
//! value (`[N, C]` inputs, 1x1 maps) run the other way: a vector spans 8 rows, with 8 rows'
//! coefficients loaded from `a` and `b`.

use core::arch::x86_64::*;

use super::rows::ACT_NONE;
use super::simd::{Lanes, activate, activate_grad, lane_mask, map_vectors};

/// `dz = dy act'(z)` with `z = d a + b` (`dy` itself without an activation).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn masked_grad<const ACT: u32>(d: __m256, dy: __m256, a: __m256, b: __m256) -> __m256 {
    if ACT == ACT_NONE {
        return dy;
    }
    activate_grad::<ACT>(_mm256_fmadd_ps(d, a, b), dy)
}

/// `dst = act((src - k) a[j] + b[j])` on every row `j`; `dst` may be `src`.
///
/// # Safety
///
/// The CPU must support AVX2, FMA and F16C; `a` and `b` have the same length, `src` is valid for
/// `a.len() * s` reads and `dst` for as many writes, and they are the same or disjoint.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn normalize_rows<T: Lanes, const ACT: u32>(
    src: *const T,
    dst: *mut T,
    s: usize,
    k: f32,
    a: &[f32],
    b: &[f32],
) {
    assert_eq!(a.len(), b.len(), "one coefficient of each per row");
    let kv = _mm256_set1_ps(k);
    if s == 1 {
        // One value a row: vectors run across rows, with the coefficients' vectors.
        let f = |v: __m256, av: __m256, bv: __m256| {
            activate::<ACT>(_mm256_fmadd_ps(_mm256_sub_ps(v, kv), av, bv))
        };
        let (n, a, b) = (a.len(), a.as_ptr(), b.as_ptr());
        let whole = map_vectors(
            n,
            // SAFETY: i + 8 <= n: inside src (the caller's n * 1 values), a and b.
            |i| unsafe {
                f(
                    T::load(src.add(i)),
                    _mm256_loadu_ps(a.add(i)),
                    _mm256_loadu_ps(b.add(i)),
                )
            },
            // SAFETY: i + 8 <= n, inside dst.
            |i, v| unsafe { T::store(dst.add(i), v) },
        );
        if !whole {
            // SAFETY: the n < 8 values of src, a, b and dst.
            unsafe {
                let v = f(
                    T::load_partial(src, n),
                    f32::load_partial(a, n),
                    f32::load_partial(b, n),
                );
                T::store_partial(dst, n, v);
            }
        }
        return;
    }
    for (j, (&aj, &bj)) in a.iter().zip(b).enumerate() {
        let (av, bv) = (_mm256_set1_ps(aj), _mm256_set1_ps(bj));
        // SAFETY: row j is within the caller's a.len() * s values.
        let (src, dst) = unsafe { (src.add(j * s), dst.add(j * s)) };
        let f = |v: __m256| activate::<ACT>(_mm256_fmadd_ps(_mm256_sub_ps(v, kv), av, bv));
        let whole = map_vectors(
            s,
            // SAFETY: i + 8 <= s, inside row j of src.
            |i| f(unsafe { T::load(src.add(i)) }),
            // SAFETY: i + 8 <= s, inside row j of dst.
            |i, v| unsafe { T::store(dst.add(i), v) },
        );
        if !whole {
            // SAFETY: the row's s < 8 values.
            unsafe { T::store_partial(dst, s, f(T::load_partial(src, s))) };
        }
    }
}

/// Adds `[Σ dz (x - k), Σ dz]` of row `j` into `sums[j]`, for every row, and returns
/// `Σ (x - k)` over all rows; `dz` as in [`super::simd::backward_sums`]. Each row is summed in
/// f32, so rows are at most the blocks of the row kernels (256 values).
///
/// # Safety
///
/// The CPU must support AVX2, FMA and F16C; `a`, `b` and `sums` have the same length, and `x` and
/// `dy` are valid for `sums.len() * s` reads.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn backward_sums_rows<T: Lanes, const ACT: u32>(
    x: *const T,
    dy: *const T,
    s: usize,
    k: f32,
    a: &[f32],
    b: &[f32],
    sums: &mut [[f64; 2]],
) -> f64 {
    assert!(
        a.len() == sums.len() && b.len() == sums.len(),
        "one coefficient of each per row"
    );
    if s == 1 {
        // One value a row: its sums are its own terms.
        let mut total = 0f64;
        for (j, sum) in sums.iter_mut().enumerate() {
            // SAFETY: j < sums.len(), the caller's row count.
            let (xv, g) = unsafe { ((*x.add(j)).get(), (*dy.add(j)).get()) };
            let d = xv - k;
            // mul_add: z rounded once, as in the vector passes, so that both agree on the
            // sign of a z next to 0.
            let dz = super::rows::activate_grad::<f32, ACT>(d.mul_add(a[j], b[j]), g);
            sum[0] += (dz * d) as f64;
            sum[1] += dz as f64;
            total += d as f64;
        }
        return total;
    }
    let kv = _mm256_set1_ps(k);
    let whole = s - s % 8;
    let mask = lane_mask(s % 8);
    let mut total = _mm256_setzero_pd();
    for (j, sum) in sums.iter_mut().enumerate() {
        let (av, bv) = (_mm256_set1_ps(a[j]), _mm256_set1_ps(b[j]));
        // SAFETY: row j is within the caller's sums.len() * s values.
        let (x, dy) = unsafe { (x.add(j * s), dy.add(j * s)) };
        let (mut p, mut q, mut t) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let mut add = |d: __m256, dz: __m256| {
            p = _mm256_fmadd_ps(dz, d, p);
            q = _mm256_add_ps(q, dz);
            t = _mm256_add_ps(t, d);
        };
        let grad = |d: __m256, g: __m256| masked_grad::<ACT>(d, g, av, bv);
        let mut i = 0;
        // Two vectors' gradients a step (they overlap), added in order.
        while i + 16 <= whole {
            // SAFETY: i + 16 <= s.
            let (d0, d1, g0, g1) = unsafe {
                (
                    _mm256_sub_ps(T::load(x.add(i)), kv),
                    _mm256_sub_ps(T::load(x.add(i + 8)), kv),
                    T::load(dy.add(i)),
                    T::load(dy.add(i + 8)),
                )
            };
            let (dz0, dz1) = (grad(d0, g0), grad(d1, g1));
            add(d0, dz0);
            add(d1, dz1);
            i += 16;
        }
        while i < whole {
            // SAFETY: i + 8 <= s.
            let (xv, g) = unsafe { (T::load(x.add(i)), T::load(dy.add(i))) };
            let d = _mm256_sub_ps(xv, kv);
            add(d, grad(d, g));
            i += 8;
        }
        if whole < s {
            // SAFETY: the row's last s - whole values.
            let (xv, g) = unsafe {
                (
                    T::load_partial(x.add(whole), s - whole),
                    T::load_partial(dy.add(whole), s - whole),
                )
            };
            // The lanes past the row load as 0, so their x - k is cleared too.
            let d = _mm256_and_ps(_mm256_sub_ps(xv, kv), _mm256_castsi256_ps(mask));
            add(d, grad(d, g));
        }
        // [p0+p1, p2+p3, q0+q1, q2+q3 | ..] with [t0+t1, t2+t3, t0+t1, t2+t3 | ..], summed
        // again pairwise: [P, Q, T, T] in each half.
        let h = _mm256_hadd_ps(_mm256_hadd_ps(p, q), _mm256_hadd_ps(t, t));
        let pqt = _mm256_cvtps_pd(_mm_add_ps(
            _mm256_castps256_ps128(h),
            _mm256_extractf128_ps::<1>(h),
        ));
        total = _mm256_add_pd(total, pqt);
        let mut lanes = [0f64; 4];
        // SAFETY: lanes holds 4 f64.
        unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), pqt) };
        sum[0] += lanes[0];
        sum[1] += lanes[1];
    }
    let mut lanes = [0f64; 4];
    // SAFETY: lanes holds 4 f64.
    unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), total) };
    lanes[2]
}

/// `dx = a[j] dz + cx (x - k) + c0` on every row `j`, `dz` as in [`backward_sums_rows`]; `dx`
/// may be `dy`.
///
/// # Safety
///
/// The CPU must support AVX2, FMA and F16C; `a` and `b` have the same length, `x` and `dy` are
/// valid for `a.len() * s` reads and `dx` for as many writes, and `dx` is `dy` or disjoint from
/// both inputs.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn backward_apply_rows<T: Lanes, const ACT: u32>(
    x: *const T,
    dy: *const T,
    dx: *mut T,
    s: usize,
    [k, cx, c0]: [f32; 3],
    a: &[f32],
    b: &[f32],
) {
    assert_eq!(a.len(), b.len(), "one coefficient of each per row");
    let (kv, cxv, c0v) = (_mm256_set1_ps(k), _mm256_set1_ps(cx), _mm256_set1_ps(c0));
    let grad = |xv: __m256, g: __m256, av: __m256, bv: __m256| {
        let d = _mm256_sub_ps(xv, kv);
        let dz = masked_grad::<ACT>(d, g, av, bv);
        _mm256_fmadd_ps(cxv, d, _mm256_fmadd_ps(av, dz, c0v))
    };
    if s == 1 {
        // One value a row: vectors run across rows, with the coefficients' vectors.
        let (n, a, b) = (a.len(), a.as_ptr(), b.as_ptr());
        let whole = map_vectors(
            n,
            // SAFETY: i + 8 <= n: inside x and dy (the caller's n * 1 values), a and b.
            |i| unsafe {
                let (xv, g) = (T::load(x.add(i)), T::load(dy.add(i)));
                grad(xv, g, _mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)))
            },
            // SAFETY: i + 8 <= n, inside dx.
            |i, v| unsafe { T::store(dx.add(i), v) },
        );
        if !whole {
            // SAFETY: the n < 8 values of x, dy, a, b and dx.
            unsafe {
                let v = grad(
                    T::load_partial(x, n),
                    T::load_partial(dy, n),
                    f32::load_partial(a, n),
                    f32::load_partial(b, n),
                );
                T::store_partial(dx, n, v);
            }
        }
        return;
    }
    for (j, (&aj, &bj)) in a.iter().zip(b).enumerate() {
        let (av, bv) = (_mm256_set1_ps(aj), _mm256_set1_ps(bj));
        // SAFETY: row j is within the caller's a.len() * s values.
        let (x, dy, dx) = unsafe { (x.add(j * s), dy.add(j * s), dx.add(j * s)) };
        let f = |xv: __m256, g: __m256| grad(xv, g, av, bv);
        let whole = map_vectors(
            s,
            // SAFETY: i + 8 <= s, inside row j of x and dy.
            |i| unsafe { f(T::load(x.add(i)), T::load(dy.add(i))) },
            // SAFETY: i + 8 <= s, inside row j of dx.
            |i, v| unsafe { T::store(dx.add(i), v) },
        );
        if !whole {
            // SAFETY: the row's s < 8 values.
            unsafe {
                let v = f(T::load_partial(x, s), T::load_partial(dy, s));
                T::store_partial(dx, s, v);
            }
        }
    }
}
