//! A channels-first group's rows in one call, for short rows: the entry points to
//! [`super::simd_rows`] over slices, for the element types and activations it covers (f32 on
//! a CPU with AVX2 and FMA, no activation or ReLU; [`applies`] says when). Elsewhere the
//! kernels go row by row through [`super::rows`].
//!
//! Rows go in batches of [`BATCH`], whose per-row coefficients `a = rstd γ_c` and
//! `b = β_c - mean a` (`mean` shifted by the group's `k`, as in the row kernels) sit on the
//! stack.

// Elsewhere than on x86-64 nothing applies, and the helpers go unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_macros))]

use core::mem::MaybeUninit;

use super::elem::Real;

/// Rows per batch.
const BATCH: usize = 64;

/// Rows up to this length go through here: the backward's sums are f32 within a row, as they
/// are within a block of the row kernels.
pub(crate) const MAX_ROW: usize = 256;

/// Whether this module's functions run for element type `R`, activation `ACT` and rows of `s`
/// values (they return `false`, having done nothing, where this is `false`).
#[inline(always)]
pub(crate) fn applies<R: Real, const ACT: u32>(s: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if ACT != super::rows::ACT_SILU
        && (1..=MAX_ROW).contains(&s)
        && core::any::TypeId::of::<R>() == core::any::TypeId::of::<f32>()
    {
        return std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
    }
    let _ = s;
    false
}

/// The group's coefficients, batch by batch: runs `$body` with `$j0` the first row of the
/// batch and `$a`, `$b` its rows' coefficients as f32 slices. A macro, not a function taking a
/// closure: a closure that LLVM does not inline is compiled without the caller's AVX2.
macro_rules! batches {
    (
        $gamma:expr, $beta:expr, $mean_d:expr, $rstd:expr,
        |$j0:ident, $a:ident, $b:ident| $body:block
    ) => {{
        let (mut a_buf, mut b_buf) = ([0f32; BATCH], [0f32; BATCH]);
        let (gamma, beta): (&[f64], &[f64]) = ($gamma, $beta);
        let (mean_d, rstd): (f64, f64) = ($mean_d, $rstd);
        let mut $j0 = 0;
        while $j0 < gamma.len() {
            let len = (gamma.len() - $j0).min(BATCH);
            for j in 0..len {
                let aj = rstd * gamma[$j0 + j];
                a_buf[j] = aj as f32;
                b_buf[j] = (beta[$j0 + j] - mean_d * aj) as f32;
            }
            let ($a, $b) = (&a_buf[..len], &b_buf[..len]);
            $body
            $j0 += len;
        }
    }};
}

/// `super::simd_rows::$f::<ACT>(args)` for the two activations it has (`ACT` is the caller's
/// const generic, none or ReLU once [`applies`] has said so).
#[cfg(target_arch = "x86_64")]
macro_rules! simd_call {
    ($f:ident($($arg:expr),* $(,)?)) => {
        if ACT == super::rows::ACT_RELU {
            super::simd_rows::$f::<{ super::rows::ACT_RELU }>($($arg),*)
        } else {
            super::simd_rows::$f::<{ super::rows::ACT_NONE }>($($arg),*)
        }
    };
}

/// `R` as f32, once [`applies`] has said so.
#[inline(always)]
fn f32_ptr<R: Real>(p: *const R) -> *const f32 {
    debug_assert_eq!(core::any::TypeId::of::<R>(), core::any::TypeId::of::<f32>());
    p.cast()
}

/// `dst = act((src - k) a + b)` over the `len` values (rows of `s`) of a group whose channels
/// have `gamma` and `beta`; `dst` may be `src`.
///
/// # Safety
///
/// `src` is valid for `len` reads and `dst` for `len` writes, the same or disjoint.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn normalize<R: Real, const ACT: u32>(
    src: *const R,
    dst: *mut R,
    len: usize,
    s: usize,
    k: R,
    gamma: &[f64],
    beta: &[f64],
    [mean_d, rstd]: [f64; 2],
) -> bool {
    if !applies::<R, ACT>(s) {
        return false;
    }
    assert_eq!(len, gamma.len() * s, "a group's rows and channels");
    #[cfg(target_arch = "x86_64")]
    {
        let (src, dst) = (f32_ptr(src), dst.cast::<f32>());
        let k = k.to_f64() as f32;
        batches!(gamma, beta, mean_d, rstd, |j0, a, b| {
            // SAFETY: applies() checked R (f32) and the CPU; the batch's rows are within the
            // len values (asserted) that the caller vouches for.
            unsafe {
                let (src, dst) = (src.add(j0 * s), dst.add(j0 * s));
                simd_call!(normalize_rows(src, dst, s, k, a, b))
            }
        });
    }
    let _ = (src, dst, k, mean_d, rstd);
    true
}

/// [`normalize`] into `dst`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn normalize_out<R: Real, const ACT: u32>(
    src: &[R],
    dst: &mut [MaybeUninit<R>],
    s: usize,
    k: R,
    gamma: &[f64],
    beta: &[f64],
    stats: [f64; 2],
) -> bool {
    assert_eq!(src.len(), dst.len());
    let (len, dst) = (src.len(), dst.as_mut_ptr().cast::<R>());
    // SAFETY: dst is a distinct, exclusively borrowed slice of src's length.
    unsafe { normalize::<R, ACT>(src.as_ptr(), dst, len, s, k, gamma, beta, stats) }
}

/// [`normalize`] over `data`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn normalize_inplace<R: Real, const ACT: u32>(
    data: &mut [R],
    s: usize,
    k: R,
    gamma: &[f64],
    beta: &[f64],
    stats: [f64; 2],
) -> bool {
    let (len, p) = (data.len(), data.as_mut_ptr());
    // SAFETY: p is data's, held mutably here.
    unsafe { normalize::<R, ACT>(p, p, len, s, k, gamma, beta, stats) }
}

/// Adds each row's `[Σ dz (x - k), Σ dz]` into `sums` (one per channel) and returns
/// `Σ (x - k)` over the group, or `None` (nothing done) where [`applies`] is `false`; `dz`
/// as in [`super::rows::backward_sums`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_sums<R: Real, const ACT: u32>(
    x: &[R],
    dy: &[R],
    s: usize,
    k: R,
    gamma: &[f64],
    beta: &[f64],
    [mean_d, rstd]: [f64; 2],
    sums: &mut [[f64; 2]],
) -> Option<f64> {
    if !applies::<R, ACT>(s) {
        return None;
    }
    assert!(x.len() == gamma.len() * s && dy.len() == x.len() && sums.len() == gamma.len());
    let mut total = 0.0;
    #[cfg(target_arch = "x86_64")]
    {
        let (x, dy) = (f32_ptr(x.as_ptr()), f32_ptr(dy.as_ptr()));
        let k = k.to_f64() as f32;
        batches!(gamma, beta, mean_d, rstd, |j0, a, b| {
            let sums = &mut sums[j0..j0 + a.len()];
            // SAFETY: applies() checked R (f32) and the CPU; the batch's rows are within x and
            // dy (asserted).
            total += unsafe {
                let (x, dy) = (x.add(j0 * s), dy.add(j0 * s));
                simd_call!(backward_sums_rows(x, dy, s, k, a, b, sums))
            };
        });
    }
    let _ = (x, dy, k, mean_d, rstd, sums);
    Some(total)
}

/// `dx = a dz + cx (x - k) + c0` over the group's rows (`x.len()` values); `dx` may be `dy`.
///
/// # Safety
///
/// `dy` is valid for `x.len()` reads and `dx` for as many writes; `dx` is `dy` or disjoint
/// from both inputs.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn backward_apply<R: Real, const ACT: u32>(
    x: &[R],
    dy: *const R,
    dx: *mut R,
    s: usize,
    [k, cx, c0]: [R; 3],
    gamma: &[f64],
    beta: &[f64],
    [mean_d, rstd]: [f64; 2],
) -> bool {
    if !applies::<R, ACT>(s) {
        return false;
    }
    assert_eq!(x.len(), gamma.len() * s, "a group's rows and channels");
    #[cfg(target_arch = "x86_64")]
    {
        let (x, dy, dx) = (f32_ptr(x.as_ptr()), f32_ptr(dy), dx.cast::<f32>());
        let coefs = [k, cx, c0].map(|v| v.to_f64() as f32);
        batches!(gamma, beta, mean_d, rstd, |j0, a, b| {
            // SAFETY: applies() checked R (f32) and the CPU; the batch's rows are within x
            // (asserted) and the x.len() values of dy and dx the caller vouches for.
            unsafe {
                let (x, dy, dx) = (x.add(j0 * s), dy.add(j0 * s), dx.add(j0 * s));
                simd_call!(backward_apply_rows(x, dy, dx, s, coefs, a, b))
            }
        });
    }
    let _ = (x, dy, dx, k, cx, c0, mean_d, rstd);
    true
}

/// [`backward_apply`] into `dx`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_apply_out<R: Real, const ACT: u32>(
    x: &[R],
    dy: &[R],
    dx: &mut [MaybeUninit<R>],
    s: usize,
    coefs: [R; 3],
    gamma: &[f64],
    beta: &[f64],
    stats: [f64; 2],
) -> bool {
    assert!(dy.len() == x.len() && dx.len() == x.len());
    let dx = dx.as_mut_ptr().cast::<R>();
    // SAFETY: dy has x's length; dx is a distinct, exclusively borrowed slice of it too.
    unsafe { backward_apply::<R, ACT>(x, dy.as_ptr(), dx, s, coefs, gamma, beta, stats) }
}

/// [`backward_apply`] over `dy_dx`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_apply_inplace<R: Real, const ACT: u32>(
    x: &[R],
    dy_dx: &mut [R],
    s: usize,
    coefs: [R; 3],
    gamma: &[f64],
    beta: &[f64],
    stats: [f64; 2],
) -> bool {
    assert_eq!(dy_dx.len(), x.len());
    let p = dy_dx.as_mut_ptr();
    // SAFETY: p is dy_dx's (x's length), held mutably here.
    unsafe { backward_apply::<R, ACT>(x, p, p, s, coefs, gamma, beta, stats) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::rows::{ACT_NONE, ACT_RELU};

    /// A group of `rows` rows of `s` values, with its channels' gamma and beta.
    struct Group {
        x: Vec<f32>,
        dy: Vec<f32>,
        gamma: Vec<f64>,
        beta: Vec<f64>,
    }

    fn group(rows: usize, s: usize) -> Group {
        let n = rows * s;
        Group {
            x: (0..n)
                .map(|i| ((i * 7919) % 23) as f32 * 0.37 - 4.0)
                .collect(),
            dy: (0..n)
                .map(|i| ((i * 104_729) % 17) as f32 * 0.21 - 1.7)
                .collect(),
            gamma: (0..rows).map(|j| 0.5 + 0.1 * (j % 7) as f64).collect(),
            beta: (0..rows).map(|j| -0.3 + 0.05 * (j % 5) as f64).collect(),
        }
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 2e-5 * (1.0 + w.abs()),
                "{what}[{i}]: {g} != {w}"
            );
        }
    }

    /// Every pass of this module on `g` (`[rows, s]`, `[k, cx, c0]`, `[mean_d, rstd]`): y, y in
    /// place, the sums' total, the per-row sums, dx, dx in place.
    #[allow(clippy::type_complexity)]
    fn passes<const ACT: u32>(
        g: &Group,
        [rows, s]: [usize; 2],
        coefs: [f32; 3],
        stats: [f64; 2],
    ) -> (
        Vec<f32>,
        Vec<f32>,
        Option<f64>,
        Vec<[f64; 2]>,
        Vec<f32>,
        Vec<f32>,
    ) {
        let (x, dy, gamma, beta, k) = (&g.x, &g.dy, &g.gamma, &g.beta, coefs[0]);
        // Outputs start as NaN, so that a value left unwritten fails the caller's checks.
        let mut out = vec![MaybeUninit::new(f32::NAN); x.len()];
        normalize_out::<f32, ACT>(x, &mut out, s, k, gamma, beta, stats);
        let mut data = x.clone();
        normalize_inplace::<f32, ACT>(&mut data, s, k, gamma, beta, stats);
        let mut sums = vec![[0f64; 2]; rows];
        let total = backward_sums::<f32, ACT>(x, dy, s, k, gamma, beta, stats, &mut sums);
        let mut dx = vec![MaybeUninit::new(f32::NAN); x.len()];
        backward_apply_out::<f32, ACT>(x, dy, &mut dx, s, coefs, gamma, beta, stats);
        let mut dy_dx = dy.clone();
        backward_apply_inplace::<f32, ACT>(x, &mut dy_dx, s, coefs, gamma, beta, stats);
        // SAFETY: both were initialized (to NaN) when made.
        let (out, dx) = unsafe { (elem_init(out), elem_init(dx)) };
        (out, data, total, sums, dx, dy_dx)
    }

    /// # Safety
    ///
    /// Every element must be initialized.
    unsafe fn elem_init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
        // SAFETY: the caller's contract.
        unsafe { crate::cpu::elem::assume_init(v) }
    }

    /// Rows of every length from 1 to 40 and a few longer ones, in groups that span more than
    /// one batch of coefficients: each row gets its own channel's coefficients, every value is
    /// written once (none before the tail, none past the row), in place and not, with and
    /// without ReLU; the sums match f64 sums row by row.
    #[test]
    fn group_passes_match_the_formulas_row_by_row() {
        if !applies::<f32, ACT_NONE>(8) {
            return; // no AVX2 here: the callers go row by row
        }
        let (k, mean_d, rstd, cx, c0) = (0.5f32, 0.3f64, 1.7f64, 0.07f32, -0.01f32);
        let stats = [mean_d, rstd];
        for s in (1..=40).chain([49, 64, 255, 256]) {
            for rows in [1, 3, BATCH + 5] {
                let g = group(rows, s);
                let (x, dy, gamma, beta) = (&g.x, &g.dy, &g.gamma, &g.beta);
                let coef = |j: usize| {
                    let a = rstd * gamma[j];
                    (a, beta[j] - mean_d * a)
                };
                let d = |i: usize| (x[i] - k) as f64;
                let z: Vec<f64> = (0..x.len())
                    .map(|i| d(i) * coef(i / s).0 + coef(i / s).1)
                    .collect();
                let dz = |i: usize, relu: bool| {
                    if relu && z[i] <= 0.0 {
                        0.0
                    } else {
                        dy[i] as f64
                    }
                };
                for relu in [false, true] {
                    let what = format!("s {s}, {rows} rows, relu {relu}");
                    let y: Vec<f64> = z
                        .iter()
                        .map(|&v| if relu { v.max(0.0) } else { v })
                        .collect();
                    let dx: Vec<f64> = (0..x.len())
                        .map(|i| coef(i / s).0 * dz(i, relu) + cx as f64 * d(i) + c0 as f64)
                        .collect();
                    let mut want_sums = vec![[0f64; 2]; rows];
                    for i in 0..x.len() {
                        want_sums[i / s][0] += dz(i, relu) * d(i);
                        want_sums[i / s][1] += dz(i, relu);
                    }
                    let want_total: f64 = (0..x.len()).map(d).sum();

                    let (coefs, rows_s) = ([k, cx, c0], [rows, s]);
                    let (out, data, total, sums, dx_out, dy_dx) = if relu {
                        passes::<ACT_RELU>(&g, rows_s, coefs, stats)
                    } else {
                        passes::<ACT_NONE>(&g, rows_s, coefs, stats)
                    };
                    close(&out, &y, &format!("y, {what}"));
                    close(&data, &y, &format!("y in place, {what}"));
                    close(&dx_out, &dx, &format!("dx, {what}"));
                    close(&dy_dx, &dx, &format!("dx in place, {what}"));
                    let total = total.expect("f32 rows on AVX2");
                    assert!((total - want_total).abs() <= 1e-4 * (1.0 + want_total.abs()));
                    for (j, (got, want)) in sums.iter().zip(&want_sums).enumerate() {
                        for q in 0..2 {
                            assert!(
                                (got[q] - want[q]).abs() <= 1e-4 * (1.0 + want[q].abs()),
                                "sums[{j}][{q}], {what}: {} != {}",
                                got[q],
                                want[q]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn other_types_activations_and_lengths_are_left_to_the_row_kernels() {
        assert!(!applies::<f64, ACT_NONE>(16));
        assert!(!applies::<f32, { crate::cpu::rows::ACT_SILU }>(16));
        assert!(!applies::<f32, ACT_NONE>(0));
        assert!(!applies::<f32, ACT_NONE>(MAX_ROW + 1));
        let mut data = vec![1.0f64; 32];
        let (g, b) = ([1.0; 2], [0.0; 2]);
        assert!(!normalize_inplace::<f64, ACT_NONE>(
            &mut data,
            16,
            1.0,
            &g,
            &b,
            [0.0, 1.0]
        ));
        assert_eq!(
            data,
            vec![1.0; 32],
            "nothing written when it does not apply"
        );
    }
}
