//! The inner loops of the CPU kernels, over contiguous slices of [`Real`] values.
//!
//! Sums run in `LANES` independent accumulators (which LLVM turns into vector registers) over
//! blocks of `BLOCK` elements, and each block's partial sums are added into f64 totals, so the
//! rounding error stays at the level of one block whatever the length of the row.
//!
//! Every function is generic over the activation code `ACT` so that the branch on it is resolved
//! at compile time and the loops stay vectorizable.

use core::mem::MaybeUninit;

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

/// `row` as f32, when `R` is f32 and the CPU has the instructions of [`super::simd`].
#[inline(always)]
fn as_f32_simd<R: Real>(row: &[R]) -> Option<&[f32]> {
    #[cfg(target_arch = "x86_64")]
    if core::any::TypeId::of::<R>() == core::any::TypeId::of::<f32>()
        && super::simd::lanes_apply::<f32>()
    {
        // SAFETY: R is f32.
        return Some(unsafe { core::slice::from_raw_parts(row.as_ptr().cast::<f32>(), row.len()) });
    }
    None
}

#[inline(always)]
fn to_f32<R: Real>(v: R) -> f32 {
    v.to_f64() as f32
}

/// [`normalize`] over `n` values through [`super::simd::normalize`] when that applies (f32
/// on AVX2, `n >= 8`); `dst` may be `src`. Returns whether it ran.
///
/// # Safety
///
/// `src` is valid for `n` reads and `dst` for `n` writes, and they are the same or disjoint.
#[inline(always)]
unsafe fn simd_normalize<R: Real, const ACT: u32>(
    src: *const R,
    dst: *mut R,
    n: usize,
    k: R,
    a: R,
    b: R,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if as_f32_simd::<R>(&[]).is_some() {
        let (k, a, b) = (to_f32(k), to_f32(a), to_f32(b));
        let (src, dst) = (src.cast::<f32>(), dst.cast::<f32>());
        // SAFETY: R is f32 and the CPU has AVX2, FMA and F16C (as_f32_simd: lanes_apply);
        // the pointers as this function's contract says.
        return unsafe { super::simd::normalize::<f32, ACT>(src, dst, n, k, a, b) };
    }
    let _ = (src, dst, n, k, a, b);
    false
}

/// The backward's elementwise pass through [`super::simd::backward_apply`] when that applies
/// (as for [`simd_normalize`]); `dx` may be `dy`. Returns whether it ran.
///
/// # Safety
///
/// `dy` is valid for `x.len()` reads and `dx` for `x.len()` writes; `dx` is `dy` or disjoint
/// from both inputs.
#[inline(always)]
unsafe fn simd_backward_apply<R: Real, const ACT: u32>(
    x: &[R],
    dy: *const R,
    dx: *mut R,
    coefs: [R; 5],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if as_f32_simd(x).is_some() {
        let (c, n) = (coefs.map(to_f32), x.len());
        let (x, dy, dx) = (x.as_ptr().cast::<f32>(), dy.cast::<f32>(), dx.cast::<f32>());
        // SAFETY: R is f32 and the CPU has AVX2, FMA and F16C (as_f32_simd: lanes_apply);
        // dy and dx as this function's contract says.
        return unsafe { super::simd::backward_apply::<f32, ACT>(x, dy, dx, n, c) };
    }
    let _ = (x, dy, dx, coefs);
    false
}

/// Splits the next piece of a run of rows of `$s` values, `$pos..$pos + $len`, at the row
/// ends: runs `$body` with `$row` the row index and `$range` the piece's part of it (relative
/// to the piece), then moves `$pos` (a `usize` place) past the piece. A macro for the reason
/// the chunk macros are.
macro_rules! row_pieces {
    ($pos:expr, $len:expr, $s:expr, |$row:ident, $range:ident| $body:expr) => {{
        let (start, len, s): (usize, usize, usize) = ($pos, $len, $s);
        let mut i = 0;
        while i < len {
            let $row = (start + i) / s;
            let end = (($row + 1) * s - start).min(len);
            let $range = i..end;
            $body;
            i = end;
        }
        // Unread after the last piece, and f32 and f64 runs are one piece.
        #[allow(unused_assignments)]
        {
            $pos += len;
        }
    }};
}
pub(crate) use row_pieces;

/// Adds `Σ (x - k)` and `Σ (x - k)²` over `row` into `acc`.
#[inline(always)]
pub(crate) fn shifted_sums<R: Real>(row: &[R], k: R, acc: &mut [f64; 2]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(row) = as_f32_simd(row) {
        // SAFETY: the CPU has AVX2, FMA and F16C (as_f32_simd: lanes_apply).
        return unsafe { super::simd::shifted_sums(row, to_f32(k), acc) };
    }
    for block in row.chunks(BLOCK) {
        let mut s1 = [R::ZERO; LANES];
        let mut s2 = [R::ZERO; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for chunk in &mut chunks {
            let chunk: &[R; LANES] = chunk.try_into().expect("exact chunk");
            // Separate loops over the lanes, so that each becomes one vector operation.
            let d: [R; LANES] = core::array::from_fn(|j| chunk[j] - k);
            for j in 0..LANES {
                s1[j] += d[j];
            }
            for j in 0..LANES {
                s2[j] += d[j] * d[j];
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
            let chunk: &[R; LANES] = chunk.try_into().expect("exact chunk");
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
pub(crate) fn normalize<R: Real, const ACT: u32>(
    src: &[R],
    dst: &mut [MaybeUninit<R>],
    k: R,
    a: R,
    b: R,
) {
    for (y, &x) in dst.iter_mut().zip(src) {
        y.write(activate::<R, ACT>((x - k) * a + b));
    }
}

/// [`normalize`], with non-temporal stores when `stream` asks for them and the CPU and the
/// element type have them (f32 with AVX2), prefetching `ahead` (see
/// [`super::simd::normalize_stream`]); returns whether it streamed (the caller then fences).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn normalize_out<R: Real, const ACT: u32>(
    src: &[R],
    dst: &mut [MaybeUninit<R>],
    k: R,
    a: R,
    b: R,
    stream: bool,
    ahead: &[R],
) -> bool {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if stream && let Some(src32) = as_f32_simd(src) {
        // SAFETY: R is f32 (as_f32_simd), so dst is f32 storage too.
        let dst32 = unsafe {
            core::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<MaybeUninit<f32>>(), dst.len())
        };
        let (k, a, b) = (to_f32(k), to_f32(a), to_f32(b));
        // SAFETY: R is f32 (as_f32_simd).
        let ahead =
            unsafe { core::slice::from_raw_parts(ahead.as_ptr().cast::<f32>(), ahead.len()) };
        // SAFETY: the CPU has AVX2 and FMA (as_f32_simd: lanes_apply).
        unsafe { super::simd::normalize_stream::<ACT>(src32, dst32, k, a, b, ahead) }
        return true;
    }
    let (n, out) = (src.len(), dst.as_mut_ptr().cast::<R>());
    // SAFETY: src and dst (exclusively borrowed, so disjoint) hold n values (asserted).
    if unsafe { simd_normalize::<R, ACT>(src.as_ptr(), out, n, k, a, b) } {
        return false;
    }
    let _ = (stream, ahead);
    normalize::<R, ACT>(src, dst, k, a, b);
    false
}

/// `data = act((data - k) * a + b)`, in place.
#[inline(always)]
pub(crate) fn normalize_inplace<R: Real, const ACT: u32>(data: &mut [R], k: R, a: R, b: R) {
    let p = data.as_mut_ptr();
    // SAFETY: p is data's, valid for its length of reads and writes.
    if unsafe { simd_normalize::<R, ACT>(p, p, data.len(), k, a, b) } {
        return;
    }
    for v in data.iter_mut() {
        *v = activate::<R, ACT>((*v - k) * a + b);
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
    #[cfg(target_arch = "x86_64")]
    if let (Some(xs), Some(gs)) = (as_f32_simd(x), as_f32_simd(dy)) {
        let (k, a, b) = (to_f32(k), to_f32(a), to_f32(b));
        // SAFETY: the CPU has AVX2, FMA and F16C (as_f32_simd: lanes_apply); backward_sums
        // itself checks the lengths.
        return unsafe { super::simd::backward_sums::<f32, ACT>(xs, gs, k, a, b, acc) };
    }
    for (xb, gb) in x.chunks(BLOCK).zip(dy.chunks(BLOCK)) {
        let mut p = [R::ZERO; LANES];
        let mut q = [R::ZERO; LANES];
        let mut t = [R::ZERO; LANES];
        let mut xc = xb.chunks_exact(LANES);
        let mut gc = gb.chunks_exact(LANES);
        for (xs, gs) in (&mut xc).zip(&mut gc) {
            let xs: &[R; LANES] = xs.try_into().expect("exact chunk");
            let gs: &[R; LANES] = gs.try_into().expect("exact chunk");
            let d: [R; LANES] = core::array::from_fn(|j| xs[j] - k);
            let dz: [R; LANES] =
                core::array::from_fn(|j| activate_grad::<R, ACT>(d[j] * a + b, gs[j]));
            for j in 0..LANES {
                p[j] += dz[j] * d[j];
            }
            for j in 0..LANES {
                q[j] += dz[j];
            }
            for j in 0..LANES {
                t[j] += d[j];
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

/// [`backward_apply`] writing `dx` over `dy`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_apply_inplace<R: Real, const ACT: u32>(
    x: &[R],
    dy_dx: &mut [R],
    k: R,
    a: R,
    b: R,
    cx: R,
    c0: R,
) {
    assert_eq!(x.len(), dy_dx.len());
    let p = dy_dx.as_mut_ptr();
    // SAFETY: p is dy_dx's, x's length (asserted), exclusively borrowed (disjoint from x).
    if unsafe { simd_backward_apply::<R, ACT>(x, p, p, [k, a, b, cx, c0]) } {
        return;
    }
    for (g, &xv) in dy_dx.iter_mut().zip(x) {
        let d = xv - k;
        let dz = activate_grad::<R, ACT>(d * a + b, *g);
        *g = a * dz + cx * d + c0;
    }
}

/// `dx = a * dz + cx * (x - k) + c0`, with `dz` as in [`backward_sums`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_apply<R: Real, const ACT: u32>(
    x: &[R],
    dy: &[R],
    dx: &mut [MaybeUninit<R>],
    k: R,
    a: R,
    b: R,
    cx: R,
    c0: R,
) {
    assert!(x.len() == dy.len() && dy.len() == dx.len());
    let coefs = [k, a, b, cx, c0];
    let out = dx.as_mut_ptr().cast::<R>();
    // SAFETY: dy and dx have x's length (asserted); dx is exclusively borrowed, so disjoint.
    if unsafe { simd_backward_apply::<R, ACT>(x, dy.as_ptr(), out, coefs) } {
        return;
    }
    for ((out, &xv), &g) in dx.iter_mut().zip(x).zip(dy) {
        let d = xv - k;
        let dz = activate_grad::<R, ACT>(d * a + b, g);
        out.write(a * dz + cx * d + c0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of 512 values over runs of rows of various lengths visit every value once, with
    /// the row it belongs to.
    #[test]
    fn row_pieces_tile_the_run() {
        for s in [1, 3, 8, 49, 512, 600, 1031] {
            let len = 7 * s;
            let mut seen = vec![usize::MAX; len];
            let mut pos = 0;
            for piece in (0..len).collect::<Vec<_>>().chunks(512) {
                let start = piece[0];
                row_pieces!(pos, piece.len(), s, |row, range| {
                    for i in range {
                        assert_eq!(seen[start + i], usize::MAX, "value {} twice", start + i);
                        seen[start + i] = row;
                    }
                });
            }
            let expected: Vec<usize> = (0..len).map(|i| i / s).collect();
            assert_eq!(seen, expected, "rows of {s}");
        }
    }

    fn inputs(n: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..n)
            .map(|i| ((i * 7919) % 23) as f32 * 0.37 - 4.0)
            .collect();
        let dy = (0..n)
            .map(|i| ((i * 104_729) % 17) as f32 * 0.21 - 1.7)
            .collect();
        (x, dy)
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{what}[{i}]: {g} != {w}"
            );
        }
    }

    /// The elementwise passes (vectorized with an overlapping last vector where the CPU allows,
    /// in place and not) give the scalar formulas' values at every length around the vector
    /// width, with and without ReLU.
    #[test]
    fn elementwise_passes_match_the_formulas_at_every_length() {
        let (k, a, b, cx, c0) = (0.5f32, 1.3f32, -0.2f32, 0.07f32, -0.01f32);
        for n in (0..41).chain([300]) {
            let (x, dy) = inputs(n);
            let z: Vec<f32> = x.iter().map(|&v| (v - k) * a + b).collect();
            let relu: Vec<f32> = z.iter().map(|&v| v.max(0.0)).collect();
            let dx = |act_relu: bool| -> Vec<f32> {
                x.iter()
                    .zip(&dy)
                    .zip(&z)
                    .map(|((&v, &g), &zv)| {
                        let dz = if act_relu && zv <= 0.0 { 0.0 } else { g };
                        a * dz + cx * (v - k) + c0
                    })
                    .collect()
            };

            let mut out = vec![MaybeUninit::uninit(); n];
            normalize_out::<f32, ACT_NONE>(&x, &mut out, k, a, b, false, &[]);
            // SAFETY: the pass wrote every element of `out`.
            close(unsafe { elem_init(&out) }, &z, "normalize");
            let mut out = vec![MaybeUninit::uninit(); n];
            normalize_out::<f32, ACT_RELU>(&x, &mut out, k, a, b, false, &[]);
            // SAFETY: the pass wrote every element of `out`.
            close(unsafe { elem_init(&out) }, &relu, "normalize relu");
            let mut data = x.clone();
            normalize_inplace::<f32, ACT_RELU>(&mut data, k, a, b);
            close(&data, &relu, "normalize in place");

            for (relu_on, want) in [(false, dx(false)), (true, dx(true))] {
                let mut out = vec![MaybeUninit::uninit(); n];
                let mut data = dy.clone();
                if relu_on {
                    backward_apply::<f32, ACT_RELU>(&x, &dy, &mut out, k, a, b, cx, c0);
                    backward_apply_inplace::<f32, ACT_RELU>(&x, &mut data, k, a, b, cx, c0);
                } else {
                    backward_apply::<f32, ACT_NONE>(&x, &dy, &mut out, k, a, b, cx, c0);
                    backward_apply_inplace::<f32, ACT_NONE>(&x, &mut data, k, a, b, cx, c0);
                }
                // SAFETY: the pass wrote every element of `out`.
                close(unsafe { elem_init(&out) }, &want, "dx");
                close(&data, &want, "dx in place");
            }

            // SiLU, through the cache, streamed and in place, and its gradient.
            let sigmoid = |v: f32| 1.0 / (1.0 + (-v as f64).exp()) as f32;
            let silu: Vec<f32> = z.iter().map(|&v| v * sigmoid(v)).collect();
            for stream in [false, true] {
                let mut out = vec![MaybeUninit::uninit(); n];
                let streamed = normalize_out::<f32, ACT_SILU>(&x, &mut out, k, a, b, stream, &[]);
                #[cfg(target_arch = "x86_64")]
                if streamed {
                    super::super::simd::store_fence();
                }
                // SAFETY: the pass wrote every element of `out`.
                close(unsafe { elem_init(&out) }, &silu, "normalize silu");
            }
            let mut data = x.clone();
            normalize_inplace::<f32, ACT_SILU>(&mut data, k, a, b);
            close(&data, &silu, "normalize silu in place");
            let want: Vec<f32> = x
                .iter()
                .zip(&dy)
                .zip(&z)
                .map(|((&v, &g), &zv)| {
                    let sg = sigmoid(zv);
                    let dz = g * sg * (1.0 + zv * (1.0 - sg));
                    a * dz + cx * (v - k) + c0
                })
                .collect();
            let mut out = vec![MaybeUninit::uninit(); n];
            let mut data = dy.clone();
            backward_apply::<f32, ACT_SILU>(&x, &dy, &mut out, k, a, b, cx, c0);
            backward_apply_inplace::<f32, ACT_SILU>(&x, &mut data, k, a, b, cx, c0);
            // SAFETY: the pass wrote every element of `out`.
            close(unsafe { elem_init(&out) }, &want, "dx silu");
            close(&data, &want, "dx silu in place");
            let mut acc = [0f64; 3];
            backward_sums::<f32, ACT_SILU>(&x, &dy, k, a, b, &mut acc);
            let (mut p, mut q) = (0f64, 0f64);
            for ((&v, &g), &zv) in x.iter().zip(&dy).zip(&z) {
                let sg = sigmoid(zv) as f64;
                let dz = g as f64 * sg * (1.0 + zv as f64 * (1.0 - sg));
                p += dz * (v - k) as f64;
                q += dz;
            }
            assert!(
                (acc[0] - p).abs() <= 1e-4 * (1.0 + p.abs()),
                "silu sums: {} != {p}",
                acc[0]
            );
            assert!(
                (acc[1] - q).abs() <= 1e-4 * (1.0 + q.abs()),
                "silu sums: {} != {q}",
                acc[1]
            );
        }
    }

    /// # Safety
    ///
    /// Every element must be initialized.
    unsafe fn elem_init(v: &[MaybeUninit<f32>]) -> &[f32] {
        // SAFETY: the caller's contract.
        unsafe { super::super::elem::assume_init_ref(v) }
    }
}
