//! A channels-first group's rows in one call, straight from the stored values: the entry
//! points to [`super::simd_rows`] (short rows) and [`super::simd`] (long rows) over slices, for
//! the element types and activations they cover ([`applies`] says when). Elsewhere the
//! kernels go row by row through [`super::rows`], f16 and bf16 widened into f32 buffers.
//!
//! Element types: f32 rows of up to [`MAX_ROW`] values (longer f32 rows keep the row kernels,
//! which stream large outputs around the cache), and f16 and bf16 rows of any length, converted
//! to f32 in registers; on x86-64 with AVX2, FMA and F16C, with any activation.
//!
//! Rows go in batches of [`BATCH`], whose per-row coefficients `a = rstd γ_c` and
//! `b = β_c - mean a` (`mean` shifted by the group's `k`, as in the row kernels) sit on the
//! stack.

// Elsewhere than on x86-64 nothing applies, and the helpers go unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_macros))]

use core::mem::MaybeUninit;

#[cfg(target_arch = "x86_64")]
use super::simd::with_lanes;

/// Rows per batch.
const BATCH: usize = 64;

/// f32 rows up to this length go through here: the short-row sums are f32 within a row, as
/// they are within a block of the row kernels (longer rows are summed in blocks).
pub(crate) const MAX_ROW: usize = 256;

/// Whether this module's functions run for stored element type `T`, activation `ACT` and rows
/// of `s` values (they return `false` or `None`, having done nothing, where this is `false`).
#[inline(always)]
pub(crate) fn applies<T: 'static, const ACT: u32>(s: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if s > 0 && (s <= MAX_ROW || core::any::TypeId::of::<T>() != core::any::TypeId::of::<f32>()) {
        return super::simd::lanes_apply::<T>();
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

/// `[Σ (x - k), Σ (x - k)²]` over `run`, summed in f32 in blocks of 256 and in f64 across them.
#[inline(always)]
pub(crate) fn shifted_sums<T: 'static, const ACT: u32>(
    run: &[T],
    s: usize,
    k: f64,
) -> Option<[f64; 2]> {
    if !applies::<T, ACT>(s) {
        return None;
    }
    let mut acc = [0f64; 2];
    #[cfg(target_arch = "x86_64")]
    with_lanes!(T, |L| {
        // SAFETY: T is L (with_lanes), so `run` holds as many L; the CPU has AVX2, FMA and
        // F16C (applies: lanes_apply).
        unsafe {
            let run = core::slice::from_raw_parts(run.as_ptr().cast::<L>(), run.len());
            super::simd::shifted_sums::<L>(run, k as f32, &mut acc)
        }
    });
    let _ = (run, k);
    Some(acc)
}

/// `dst = act((src - k) a + b)` over the `len` values (rows of `s`) of a group whose channels
/// have `gamma` and `beta`; `dst` may be `src`.
///
/// # Safety
///
/// `src` is valid for `len` reads and `dst` for `len` writes, the same or disjoint.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn normalize<T: 'static, const ACT: u32>(
    src: *const T,
    dst: *mut T,
    len: usize,
    s: usize,
    k: f64,
    gamma: &[f64],
    beta: &[f64],
    [mean_d, rstd]: [f64; 2],
) -> bool {
    if !applies::<T, ACT>(s) {
        return false;
    }
    // Checked: a product that wrapped could match `len` and send the rows past it.
    assert_eq!(
        Some(len),
        gamma.len().checked_mul(s),
        "a group's rows and channels"
    );
    #[cfg(target_arch = "x86_64")]
    with_lanes!(T, |L| {
        let (src, dst, k) = (src.cast::<L>(), dst.cast::<L>(), k as f32);
        batches!(gamma, beta, mean_d, rstd, |j0, a, b| {
            // SAFETY: T is L (with_lanes); the CPU has AVX2, FMA and F16C (applies:
            // lanes_apply); the batch's rows are within the len values (asserted) that the
            // caller vouches for, a and b one per row.
            unsafe {
                let (src, dst) = (src.add(j0 * s), dst.add(j0 * s));
                if s <= MAX_ROW {
                    super::simd_rows::normalize_rows::<L, ACT>(src, dst, s, k, a, b)
                } else {
                    for (j, (&aj, &bj)) in a.iter().zip(b).enumerate() {
                        let (src, dst) = (src.add(j * s), dst.add(j * s));
                        super::simd::normalize::<L, ACT>(src, dst, s, k, aj, bj);
                    }
                }
            }
        });
    });
    let _ = (src, dst, k, mean_d, rstd);
    true
}

/// [`normalize`] into `dst`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn normalize_out<T: 'static, const ACT: u32>(
    src: &[T],
    dst: &mut [MaybeUninit<T>],
    s: usize,
    k: f64,
    gamma: &[f64],
    beta: &[f64],
    stats: [f64; 2],
) -> bool {
    assert_eq!(src.len(), dst.len());
    let (len, dst) = (src.len(), dst.as_mut_ptr().cast::<T>());
    // SAFETY: dst is a distinct, exclusively borrowed slice of src's length.
    unsafe { normalize::<T, ACT>(src.as_ptr(), dst, len, s, k, gamma, beta, stats) }
}

/// [`normalize`] over `data`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn normalize_inplace<T: 'static, const ACT: u32>(
    data: &mut [T],
    s: usize,
    k: f64,
    gamma: &[f64],
    beta: &[f64],
    stats: [f64; 2],
) -> bool {
    let (len, p) = (data.len(), data.as_mut_ptr());
    // SAFETY: p is data's, held mutably here.
    unsafe { normalize::<T, ACT>(p, p, len, s, k, gamma, beta, stats) }
}

/// Adds each row's `[Σ dz (x - k), Σ dz]` into `sums` (one per channel) and returns
/// `Σ (x - k)` over the group, or `None` (nothing done) where [`applies`] is `false`; `dz`
/// as in [`super::rows::backward_sums`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_sums<T: 'static, const ACT: u32>(
    x: &[T],
    dy: &[T],
    s: usize,
    k: f64,
    gamma: &[f64],
    beta: &[f64],
    [mean_d, rstd]: [f64; 2],
    sums: &mut [[f64; 2]],
) -> Option<f64> {
    if !applies::<T, ACT>(s) {
        return None;
    }
    // Checked: a product that wrapped could match and send the rows past x and dy.
    let rows_fit = gamma.len().checked_mul(s) == Some(x.len());
    assert!(rows_fit && dy.len() == x.len() && sums.len() == gamma.len());
    let mut total = 0.0;
    #[cfg(target_arch = "x86_64")]
    with_lanes!(T, |L| {
        let (x, dy, k) = (x.as_ptr().cast::<L>(), dy.as_ptr().cast::<L>(), k as f32);
        batches!(gamma, beta, mean_d, rstd, |j0, a, b| {
            let sums = &mut sums[j0..j0 + a.len()];
            // SAFETY: T is L (with_lanes); the CPU has AVX2, FMA and F16C (applies:
            // lanes_apply); the batch's rows are within x and dy (asserted), a, b and sums one
            // per row.
            unsafe {
                let (x, dy) = (x.add(j0 * s), dy.add(j0 * s));
                if s <= MAX_ROW {
                    total +=
                        super::simd_rows::backward_sums_rows::<L, ACT>(x, dy, s, k, a, b, sums);
                } else {
                    // Long rows: summed in blocks, in f64 across them.
                    for (j, sum) in sums.iter_mut().enumerate() {
                        let xs = core::slice::from_raw_parts(x.add(j * s), s);
                        let gs = core::slice::from_raw_parts(dy.add(j * s), s);
                        let mut acc = [0f64; 3];
                        super::simd::backward_sums::<L, ACT>(xs, gs, k, a[j], b[j], &mut acc);
                        sum[0] += acc[0];
                        sum[1] += acc[1];
                        total += acc[2];
                    }
                }
            }
        });
    });
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
unsafe fn backward_apply<T: 'static, const ACT: u32>(
    x: &[T],
    dy: *const T,
    dx: *mut T,
    s: usize,
    [k, cx, c0]: [f64; 3],
    gamma: &[f64],
    beta: &[f64],
    [mean_d, rstd]: [f64; 2],
) -> bool {
    if !applies::<T, ACT>(s) {
        return false;
    }
    // Checked, as in `normalize`.
    assert_eq!(
        Some(x.len()),
        gamma.len().checked_mul(s),
        "a group's rows and channels"
    );
    #[cfg(target_arch = "x86_64")]
    with_lanes!(T, |L| {
        let (x, dy, dx) = (x.as_ptr().cast::<L>(), dy.cast::<L>(), dx.cast::<L>());
        let coefs = [k, cx, c0].map(|v| v as f32);
        batches!(gamma, beta, mean_d, rstd, |j0, a, b| {
            // SAFETY: T is L (with_lanes); the CPU has AVX2, FMA and F16C (applies:
            // lanes_apply); the batch's rows are within x (asserted) and the x.len() values of
            // dy and dx the caller vouches for, a and b one per row.
            unsafe {
                let (x, dy, dx) = (x.add(j0 * s), dy.add(j0 * s), dx.add(j0 * s));
                if s <= MAX_ROW {
                    super::simd_rows::backward_apply_rows::<L, ACT>(x, dy, dx, s, coefs, a, b)
                } else {
                    let [k, cx, c0] = coefs;
                    for (j, (&aj, &bj)) in a.iter().zip(b).enumerate() {
                        let (x, dy, dx) = (x.add(j * s), dy.add(j * s), dx.add(j * s));
                        let row = [k, aj, bj, cx, c0];
                        super::simd::backward_apply::<L, ACT>(x, dy, dx, s, row);
                    }
                }
            }
        });
    });
    let _ = (x, dy, dx, k, cx, c0, mean_d, rstd);
    true
}

/// [`backward_apply`] into `dx`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_apply_out<T: 'static, const ACT: u32>(
    x: &[T],
    dy: &[T],
    dx: &mut [MaybeUninit<T>],
    s: usize,
    coefs: [f64; 3],
    gamma: &[f64],
    beta: &[f64],
    stats: [f64; 2],
) -> bool {
    assert!(dy.len() == x.len() && dx.len() == x.len());
    let dx = dx.as_mut_ptr().cast::<T>();
    // SAFETY: dy has x's length; dx is a distinct, exclusively borrowed slice of it too.
    unsafe { backward_apply::<T, ACT>(x, dy.as_ptr(), dx, s, coefs, gamma, beta, stats) }
}

/// [`backward_apply`] over `dy_dx`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_apply_inplace<T: 'static, const ACT: u32>(
    x: &[T],
    dy_dx: &mut [T],
    s: usize,
    coefs: [f64; 3],
    gamma: &[f64],
    beta: &[f64],
    stats: [f64; 2],
) -> bool {
    assert_eq!(dy_dx.len(), x.len());
    let p = dy_dx.as_mut_ptr();
    // SAFETY: p is dy_dx's (x's length), held mutably here.
    unsafe { backward_apply::<T, ACT>(x, p, p, s, coefs, gamma, beta, stats) }
}

#[cfg(test)]
mod tests {
    use half::{bf16, f16};

    use super::*;
    use crate::cpu::rows::{ACT_NONE, ACT_RELU, ACT_SILU};

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

    /// Every pass of this module on `g` (`[rows, s]`, `[k, cx, c0]`, `[mean_d, rstd]`), with
    /// the values stored as `T` (`to` and `from` convert): y, y in place, the sums' total, the
    /// per-row sums, dx, dx in place.
    #[allow(clippy::type_complexity)]
    fn passes<T: Copy + 'static, const ACT: u32>(
        g: &Group,
        [rows, s]: [usize; 2],
        coefs: [f32; 3],
        stats: [f64; 2],
        to: fn(f32) -> T,
        from: fn(T) -> f32,
    ) -> (
        Vec<f32>,
        Vec<f32>,
        Option<f64>,
        Vec<[f64; 2]>,
        Vec<f32>,
        Vec<f32>,
    ) {
        let (gamma, beta, k) = (&g.gamma, &g.beta, coefs[0] as f64);
        let x: Vec<T> = g.x.iter().map(|&v| to(v)).collect();
        let dy: Vec<T> = g.dy.iter().map(|&v| to(v)).collect();
        let coefs = coefs.map(|v| v as f64);
        // Outputs start as NaN, so that a value left unwritten fails the caller's checks.
        let mut out = vec![MaybeUninit::new(to(f32::NAN)); x.len()];
        normalize_out::<T, ACT>(&x, &mut out, s, k, gamma, beta, stats);
        let mut data = x.clone();
        normalize_inplace::<T, ACT>(&mut data, s, k, gamma, beta, stats);
        let mut sums = vec![[0f64; 2]; rows];
        let total = backward_sums::<T, ACT>(&x, &dy, s, k, gamma, beta, stats, &mut sums);
        let mut dx = vec![MaybeUninit::new(to(f32::NAN)); x.len()];
        backward_apply_out::<T, ACT>(&x, &dy, &mut dx, s, coefs, gamma, beta, stats);
        let mut dy_dx = dy.clone();
        backward_apply_inplace::<T, ACT>(&x, &mut dy_dx, s, coefs, gamma, beta, stats);
        // SAFETY: both were initialized (to NaN) when made.
        let (out, dx) = unsafe { (elem_init(out), elem_init(dx)) };
        let back = |v: Vec<T>| v.into_iter().map(from).collect();
        (back(out), back(data), total, sums, back(dx), back(dy_dx))
    }

    /// # Safety
    ///
    /// Every element must be initialized.
    unsafe fn elem_init<T>(v: Vec<MaybeUninit<T>>) -> Vec<T> {
        // SAFETY: the caller's contract.
        unsafe { crate::cpu::elem::assume_init(v) }
    }

    /// Rows of every length from 1 to 40 and a few longer ones, in groups that span more than
    /// one batch of coefficients, stored as `T`: each row gets its own channel's coefficients,
    /// every value is written once (none before the tail, none past the row), in place and
    /// not, with each activation; the sums match f64 sums row by row. `tol` is the relative
    /// error allowed on y and dx (the rounding of `T`).
    fn check_group_passes<T: Copy + 'static>(
        lens: &[usize],
        to: fn(f32) -> T,
        from: fn(T) -> f32,
        tol: f64,
    ) {
        let (k, mean_d, rstd, cx, c0) = (0.5f32, 0.3f64, 1.7f64, 0.07f32, -0.01f32);
        let stats = [mean_d, rstd];
        let close = |got: &[f32], want: &[f64], what: &str| {
            assert_eq!(got.len(), want.len(), "{what}: length");
            for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
                    "{what}[{i}]: {g} != {w}"
                );
            }
        };
        for &s in lens {
            for rows in [1, 3, BATCH + 5] {
                let mut g = group(rows, s);
                // The reference sees the stored values.
                for v in g.x.iter_mut().chain(g.dy.iter_mut()) {
                    *v = from(to(*v));
                }
                let (x, dy, gamma, beta) = (&g.x, &g.dy, &g.gamma, &g.beta);
                let coef = |j: usize| {
                    let a = rstd * gamma[j];
                    (a, beta[j] - mean_d * a)
                };
                let d = |i: usize| (x[i] - k) as f64;
                let z: Vec<f64> = (0..x.len())
                    .map(|i| d(i) * coef(i / s).0 + coef(i / s).1)
                    .collect();
                let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
                let dz = |i: usize, act: u32| match act {
                    ACT_RELU if z[i] <= 0.0 => 0.0,
                    ACT_SILU => {
                        let sg = sigmoid(z[i]);
                        dy[i] as f64 * sg * (1.0 + z[i] * (1.0 - sg))
                    }
                    _ => dy[i] as f64,
                };
                for act in [ACT_NONE, ACT_RELU, ACT_SILU] {
                    let what = format!("s {s}, {rows} rows, activation {act}");
                    let y: Vec<f64> = z
                        .iter()
                        .map(|&v| match act {
                            ACT_RELU => v.max(0.0),
                            ACT_SILU => v * sigmoid(v),
                            _ => v,
                        })
                        .collect();
                    let dx: Vec<f64> = (0..x.len())
                        .map(|i| coef(i / s).0 * dz(i, act) + cx as f64 * d(i) + c0 as f64)
                        .collect();
                    let mut want_sums = vec![[0f64; 2]; rows];
                    for i in 0..x.len() {
                        want_sums[i / s][0] += dz(i, act) * d(i);
                        want_sums[i / s][1] += dz(i, act);
                    }
                    let want_total: f64 = (0..x.len()).map(d).sum();

                    let (coefs, rows_s) = ([k, cx, c0], [rows, s]);
                    let (out, data, total, sums, dx_out, dy_dx) = match act {
                        ACT_RELU => passes::<T, ACT_RELU>(&g, rows_s, coefs, stats, to, from),
                        ACT_SILU => passes::<T, ACT_SILU>(&g, rows_s, coefs, stats, to, from),
                        _ => passes::<T, ACT_NONE>(&g, rows_s, coefs, stats, to, from),
                    };
                    close(&out, &y, &format!("y, {what}"));
                    close(&data, &y, &format!("y in place, {what}"));
                    close(&dx_out, &dx, &format!("dx, {what}"));
                    close(&dy_dx, &dx, &format!("dx in place, {what}"));
                    let total = total.expect("applies");
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
    fn group_passes_match_the_formulas_row_by_row() {
        if !applies::<f32, ACT_NONE>(8) {
            return; // no AVX2 here: the callers go row by row
        }
        let short: Vec<usize> = (1..=40).chain([49, 64, 255, 256]).collect();
        check_group_passes::<f32>(&short, |v| v, |v| v, 2e-5);
        // 16-bit rows of any length: the short-row kernels, then the long-row ones.
        let any: Vec<usize> = short.iter().copied().chain([257, 300, 1024]).collect();
        check_group_passes::<f16>(&any, f16::from_f32, f16::to_f32, 1e-3);
        check_group_passes::<bf16>(&any, bf16::from_f32, bf16::to_f32, 8e-3);
    }

    #[test]
    fn other_types_and_lengths_are_left_to_the_row_kernels() {
        assert!(!applies::<f64, ACT_NONE>(16));
        assert!(!applies::<f32, ACT_NONE>(0));
        assert!(!applies::<f32, ACT_NONE>(MAX_ROW + 1));
        assert!(!applies::<bf16, ACT_NONE>(0));
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
