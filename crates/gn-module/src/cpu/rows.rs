//! The inner loops of the CPU kernels, over contiguous slices of [`Real`] values.
//!
//! Sums run in `LANES` independent accumulators (which LLVM turns into vector registers) over
//! blocks of `BLOCK` elements, and each block's partial sums are added into f64 totals, so the
//! rounding error stays at the level of one block whatever the length of the row.
//!
//! Every function is generic over the activation code `ACT` so that the branch on it is resolved
//! at compile time and the loops stay vectorizable.

use super::elem::Real;

/// `Activation::None`, `Relu` and `Silu` as the kernels see them.
pub(crate) const ACT_NONE: u32 = 0;
pub(crate) const ACT_RELU: u32 = 1;
pub(crate) const ACT_SILU: u32 = 2;

const LANES: usize = 16;
const BLOCK: usize = 256;

#[inline(always)]
fn sigmoid<R: Real>(z: R) -> R {
    R::ONE / (R::ONE + (-z).exp())
}

/// `act(z)`. ReLU keeps NaN (as PyTorch does).
#[inline(always)]
pub(crate) fn activate<R: Real, const ACT: u32>(z: R) -> R {
    match ACT {
        ACT_RELU => {
            if z < R::ZERO {
                R::ZERO
            } else {
                z
            }
        }
        ACT_SILU => z * sigmoid(z),
        _ => z,
    }
}

/// `dy * act'(z)`. ReLU's derivative at 0 is 0, as PyTorch's.
#[inline(always)]
pub(crate) fn activate_grad<R: Real, const ACT: u32>(z: R, dy: R) -> R {
    match ACT {
        ACT_RELU => {
            if z > R::ZERO {
                dy
            } else {
                R::ZERO
            }
        }
        ACT_SILU => {
            let s = sigmoid(z);
            dy * s * (R::ONE + z * (R::ONE - s))
        }
        _ => dy,
    }
}

/// Adds `Σ (x - k)` and `Σ (x - k)²` over `row` into `acc`.
#[inline(always)]
pub(crate) fn shifted_sums<R: Real>(row: &[R], k: R, acc: &mut [f64; 2]) {
    for block in row.chunks(BLOCK) {
        let mut s1 = [R::ZERO; LANES];
        let mut s2 = [R::ZERO; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for chunk in &mut chunks {
            for j in 0..LANES {
                let d = chunk[j] - k;
                s1[j] += d;
                s2[j] += d * d;
            }
        }
        let (mut t1, mut t2) = (0f64, 0f64);
        for &x in chunks.remainder() {
            let d = x - k;
            t1 += d.to_f64();
            t2 += (d * d).to_f64();
        }
        for j in 0..LANES {
            t1 += s1[j].to_f64();
            t2 += s2[j].to_f64();
        }
        acc[0] += t1;
        acc[1] += t2;
    }
}

/// Adds `Σ (x - k)` over `row` into `acc`.
#[inline(always)]
pub(crate) fn shifted_sum<R: Real>(row: &[R], k: R, acc: &mut f64) {
    for block in row.chunks(BLOCK) {
        let mut s1 = [R::ZERO; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for chunk in &mut chunks {
            for j in 0..LANES {
                s1[j] += chunk[j] - k;
            }
        }
        let mut t1 = 0f64;
        for &x in chunks.remainder() {
            t1 += (x - k).to_f64();
        }
        for s in s1 {
            t1 += s.to_f64();
        }
        *acc += t1;
    }
}

/// `dst = act((src - k) * a + b)`.
#[inline(always)]
pub(crate) fn normalize<R: Real, const ACT: u32>(src: &[R], dst: &mut [R], k: R, a: R, b: R) {
    for (y, &x) in dst.iter_mut().zip(src) {
        *y = activate::<R, ACT>((x - k) * a + b);
    }
}

/// Adds `Σ dz (x - k)`, `Σ dz` and `Σ (x - k)` into `acc`, where `dz = dy * act'(z)` and
/// `z = (x - k) * a + b` is the pre-activation output.
#[inline(always)]
pub(crate) fn backward_sums<R: Real, const ACT: u32>(
    x: &[R],
    dy: &[R],
    k: R,
    a: R,
    b: R,
    acc: &mut [f64; 3],
) {
    for (xb, gb) in x.chunks(BLOCK).zip(dy.chunks(BLOCK)) {
        let mut p = [R::ZERO; LANES];
        let mut q = [R::ZERO; LANES];
        let mut t = [R::ZERO; LANES];
        let mut xc = xb.chunks_exact(LANES);
        let mut gc = gb.chunks_exact(LANES);
        for (xs, gs) in (&mut xc).zip(&mut gc) {
            for j in 0..LANES {
                let d = xs[j] - k;
                let dz = activate_grad::<R, ACT>(d * a + b, gs[j]);
                p[j] += dz * d;
                q[j] += dz;
                t[j] += d;
            }
        }
        let (mut tp, mut tq, mut tt) = (0f64, 0f64, 0f64);
        for (&x, &g) in xc.remainder().iter().zip(gc.remainder()) {
            let d = x - k;
            let dz = activate_grad::<R, ACT>(d * a + b, g);
            tp += (dz * d).to_f64();
            tq += dz.to_f64();
            tt += d.to_f64();
        }
        for j in 0..LANES {
            tp += p[j].to_f64();
            tq += q[j].to_f64();
            tt += t[j].to_f64();
        }
        acc[0] += tp;
        acc[1] += tq;
        acc[2] += tt;
    }
}

/// `dx = a * dz + cx * (x - k) + c0`, with `dz` as in [`backward_sums`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_apply<R: Real, const ACT: u32>(
    x: &[R],
    dy: &[R],
    dx: &mut [R],
    k: R,
    a: R,
    b: R,
    cx: R,
    c0: R,
) {
    for ((out, &xv), &g) in dx.iter_mut().zip(x).zip(dy) {
        let d = xv - k;
        let dz = activate_grad::<R, ACT>(d * a + b, g);
        *out = a * dz + cx * d + c0;
    }
}
