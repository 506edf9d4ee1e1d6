//! The activations on vectors, written once for every instruction set macerator dispatches
//! to: ReLU, SiLU and its `exp`, and their derivatives. Each takes `N` vectors and runs every
//! step on all `N` before the next, so that the long computations of two vectors (SiLU's exp
//! and division) overlap: the row passes call them with `N = 2` in their whole-vector loops.
//!
//! Everything here is `#[inline(always)]`, as in `simd.rs`.

use macerator::{Scalar, Simd, Vector};

use super::simd::Real;
use crate::activation::Activation;

/// `e^x` in each lane of `N` vectors, after Cephes' `expf`: `x = n ln 2 + r` with
/// `|r| <= ln 2 / 2`, `e^r` by a degree-6 polynomial, `2^n` through the exponent bits; within 4
/// ulp of the exact value, 0 below -87.3 (where f32 results stop being normal) and infinite
/// above 88.7, as `expf`. A NaN lane gives a finite value: the callers keep NaN through `z`
/// itself. Each step runs on all `N` vectors before the next, so that their latencies overlap
/// (this and the functions below take arrays for that).
#[inline(always)]
pub(crate) fn exp_f32<S: Simd, const N: usize>(x: [Vector<S, f32>; N]) -> [Vector<S, f32>; N] {
    // 1.5 * 2^23: adding it rounds to an integer, which then sits in the low mantissa bits.
    let round = 12_582_912f32.splat::<S>();
    let (mut t, mut r, mut p) = (x, x, [1.987_569_1e-4f32.splat::<S>(); N]);
    for k in 0..N {
        // Computed on [-88, 88], where 2^n stays within the exponent's range.
        let x = x[k].max((-88f32).splat()).min(88f32.splat());
        t[k] = x.mul_add(core::f32::consts::LOG2_E.splat(), round);
        let n = t[k] - round;
        // ln 2 in two parts, so that n ln 2 is subtracted without rounding error.
        r[k] = n.mul_add(
            2.121_944_4e-4f32.splat(),
            n.mul_add((-0.693_359_4f32).splat(), x),
        );
    }
    for c in [
        1.398_199_9e-3f32,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        for k in 0..N {
            p[k] = p[k].mul_add(r[k], c.splat());
        }
    }
    for k in 0..N {
        let er = p[k].mul_add(r[k] * r[k], r[k] + 1f32.splat());
        // The bits of t + 127 end in n + 127 (0..=254): shifted into the exponent, they are 2^n.
        let pow2n = ((t[k] + 127f32.splat()).reinterpret::<u32>() << 23).reinterpret::<f32>();
        let overflow = x[k].gt(88.72f32.splat());
        t[k] = overflow.select(f32::INFINITY.splat(), er * pow2n);
    }
    t
}

/// `1 / (1 + e^-z)` in each lane: a division, not a reciprocal estimate refined, since SiLU's
/// derivative multiplies `1 - sigmoid(z)` by `z`, which would scale the estimate's error up.
#[inline(always)]
pub(crate) fn sigmoid<S: Simd, R: Real, const N: usize>(z: [Vector<S, R>; N]) -> [Vector<S, R>; N] {
    let (one, zero) = (R::from_f64(1.0).splat::<S>(), R::default().splat::<S>());
    let mut e = z;
    for e in &mut e {
        *e = zero - *e;
    }
    let mut e = R::exp(e);
    for e in &mut e {
        *e = one / (one + *e);
    }
    e
}

/// `act(z)` in each lane: ReLU keeps NaN (as PyTorch does), SiLU is `z sigmoid(z)`.
#[inline(always)]
pub(crate) fn activate<S: Simd, R: Real, const ACT: u32, const N: usize>(
    mut z: [Vector<S, R>; N],
) -> [Vector<S, R>; N] {
    let zero = R::default().splat::<S>();
    match ACT {
        Activation::CODE_RELU => {
            for z in &mut z {
                // max(0, z) keeps NaN where macerator has the instruction (x86 returns its
                // second operand for NaN, NEON and SIMD128 propagate NaN); its scalar emulation
                // (f32::max) would drop NaN, so the comparison there.
                *z = match R::is_min_max_accelerated::<S>() {
                    true => zero.max(*z),
                    false => z.lt(zero).select(zero, *z),
                };
            }
        }
        Activation::CODE_SILU => {
            let s = sigmoid(z);
            for k in 0..N {
                z[k] *= s[k];
            }
        }
        _ => {}
    }
    z
}

/// `dy act'(z)` in each lane: ReLU's derivative is 0 at 0 (as PyTorch's) and for NaN, SiLU's
/// `s (1 + z (1 - s))` with `s = sigmoid(z)`.
#[inline(always)]
pub(crate) fn activate_grad<S: Simd, R: Real, const ACT: u32, const N: usize>(
    z: [Vector<S, R>; N],
    mut dy: [Vector<S, R>; N],
) -> [Vector<S, R>; N] {
    let (zero, one) = (R::default().splat::<S>(), R::from_f64(1.0).splat::<S>());
    match ACT {
        Activation::CODE_RELU => {
            for k in 0..N {
                dy[k] = z[k].gt(zero).select(dy[k], zero);
            }
        }
        Activation::CODE_SILU => {
            let s = sigmoid(z);
            for k in 0..N {
                dy[k] = dy[k] * s[k] * z[k].mul_add(one - s[k], one);
            }
        }
        _ => {}
    }
    dy
}

#[cfg(test)]
mod tests {
    use crate::cpu::simd::tests::{Func, archs, run};

    /// On every instruction set here: the vector `exp` is within 4 ulp of f64's over the range
    /// it computes (from -87.3, where f32 results stop being normal, to 88), and 0 or infinite
    /// outside it; SiLU and its derivative follow the f64 formulas there, and keep NaN; ReLU
    /// keeps NaN, its derivative is 0 at 0 and for NaN.
    #[test]
    fn exp_and_activations_match_f64_on_every_instruction_set() {
        let xs: Vec<f32> = (0..=200_000)
            .map(|i| -87.3 + 175.3 * i as f32 / 200_000.0)
            .collect();
        for arch in archs() {
            let e = run(arch, &xs, Func::Exp);
            let (silu, grad) = (run(arch, &xs, Func::Silu), run(arch, &xs, Func::SiluGrad));
            for (i, &v) in xs.iter().enumerate() {
                let want = (v as f64).exp();
                let ulp = (want as f32).abs() * f32::EPSILON;
                let g = e[i] as f64;
                assert!(
                    (g - want).abs() <= 4.0 * ulp as f64,
                    "{arch:?}: exp({v}) = {g}"
                );
                let z = v as f64;
                let s = 1.0 / (1.0 + (-z).exp());
                let (want_y, want_dz) = (z * s, s * (1.0 + z * (1.0 - s)));
                let (y, dz) = (silu[i] as f64, grad[i] as f64);
                assert!(
                    (y - want_y).abs() <= 1e-6 * (1.0 + want_y.abs()),
                    "{arch:?} silu({z})"
                );
                assert!(
                    (dz - want_dz).abs() <= 1e-6 * (1.0 + want_dz.abs()),
                    "{arch:?} silu'({z})"
                );
            }
            let edges = [-1e30, -100.0, -88.0, 88.0, 100.0, 1e30, f32::NAN, 0.0];
            let (e, silu) = (run(arch, &edges, Func::Exp), run(arch, &edges, Func::Silu));
            assert_eq!(&e[..3], &[0.0; 3], "{arch:?}");
            assert!(e[3].is_finite() && e[4] == f32::INFINITY && e[5] == f32::INFINITY);
            assert_eq!(e[7], 1.0);
            assert_eq!(&silu[3..6], &[88.0, 100.0, 1e30], "{arch:?}");
            assert!(silu[6].is_nan() && silu[7] == 0.0, "{arch:?}");
            assert!(
                silu[..3].iter().all(|v| *v <= 0.0 && *v > -1e-36),
                "{silu:?}"
            );
            let relu_in = [
                -1.0,
                0.0,
                -0.0,
                2.0,
                f32::NAN,
                f32::NEG_INFINITY,
                1e-40,
                -1e-40,
            ];
            let (r, rg) = (
                run(arch, &relu_in, Func::Relu),
                run(arch, &relu_in, Func::ReluGrad),
            );
            assert_eq!(&r[..4], &[0.0, 0.0, -0.0, 2.0]);
            assert!(
                r[4].is_nan() && r[5] == 0.0 && r[6] == 1e-40 && r[7] == 0.0,
                "{arch:?}"
            );
            assert_eq!(rg, [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0], "{arch:?}");
        }
    }
}
