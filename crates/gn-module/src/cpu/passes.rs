//! The passes over a run of values that every kernel is made of, generic over the instruction
//! set `S`, the element `E` and the activation `ACT`: the statistics' sums, the normalization,
//! the backward's sums and its elementwise pass. Coefficients are one value for the whole run
//! (a channels-first row: a [`Vector`] splat) or one per value (a channels-last position row,
//! or short channels-first rows: [`PerValue`]).
//!
//! No closures here: a closure that LLVM does not inline is compiled without the instruction
//! set of the kernel around it, and so are the intrinsics it calls. Everything is
//! `#[inline(always)]` down to macerator's operations.

use macerator::{Scalar, Simd, Vector, vload_unaligned, vstore_unaligned};

use super::isa;
use super::simd::{
    Elem, MAX_LANES, Real, activate, activate_grad, lane_range, lanes, load_n, store_n,
};
use crate::activation::Activation;

/// Values summed in the arithmetic type before the sums move to f64.
pub(super) const BLOCK: usize = 256;

/// `n` values of `E` from `p + i` (`n` the lanes, or fewer: the other lanes 0).
///
/// # Safety
///
/// `p + i` is valid for `n` reads.
#[inline(always)]
pub(super) unsafe fn load<S: Simd, E: Elem>(p: *const E, i: usize, n: usize) -> Vector<S, E::R> {
    // SAFETY: the caller's contract.
    unsafe {
        if n == lanes::<S, E>() {
            E::load(p.add(i))
        } else {
            load_n(p.add(i), n)
        }
    }
}

/// The first `n` lanes of `v` to `p + i` (`n` the lanes, or fewer).
///
/// # Safety
///
/// `p + i` is valid for `n` writes.
#[inline(always)]
pub(super) unsafe fn store<S: Simd, E: Elem>(p: *mut E, i: usize, n: usize, v: Vector<S, E::R>) {
    // SAFETY: the caller's contract.
    unsafe {
        if n == lanes::<S, E>() {
            E::store(p.add(i), v)
        } else {
            store_n(p.add(i), n, v)
        }
    }
}

/// [`load`] of arithmetic values (coefficients, accumulators).
///
/// # Safety
///
/// As [`load`].
#[inline(always)]
pub(super) unsafe fn load_r<S: Simd, R: Real>(p: *const R, i: usize, n: usize) -> Vector<S, R> {
    // SAFETY: the caller's contract; buf holds MAX_LANES >= n values.
    unsafe {
        if n == R::lanes::<S>() {
            vload_unaligned(p.add(i))
        } else {
            let mut buf = [R::default(); MAX_LANES];
            core::ptr::copy_nonoverlapping(p.add(i), buf.as_mut_ptr(), n);
            vload_unaligned(buf.as_ptr())
        }
    }
}

/// [`store`] of arithmetic values.
///
/// # Safety
///
/// As [`store`].
#[inline(always)]
pub(super) unsafe fn store_r<S: Simd, R: Real>(p: *mut R, i: usize, n: usize, v: Vector<S, R>) {
    // SAFETY: the caller's contract; buf holds MAX_LANES >= n values.
    unsafe {
        if n == R::lanes::<S>() {
            vstore_unaligned(p.add(i), v)
        } else {
            let mut buf = [R::default(); MAX_LANES];
            vstore_unaligned(buf.as_mut_ptr(), v);
            core::ptr::copy_nonoverlapping(buf.as_ptr(), p.add(i), n);
        }
    }
}

/// `v` in the lanes `from..to`, 0 elsewhere (`iota` from [`super::simd::iota`]).
#[inline(always)]
pub(super) fn keep<S: Simd, R: Real>(
    iota: Vector<S, R>,
    from: usize,
    to: usize,
    v: Vector<S, R>,
) -> Vector<S, R> {
    lane_range(iota, from, to).select(v, R::default().splat())
}

/// A coefficient of a pass at the lanes `i..i + n`.
pub(super) trait Coef<S: Simd, R: Real>: Copy {
    /// # Safety
    ///
    /// `i..i + n` is inside the run the coefficient was made for.
    unsafe fn at(self, i: usize, n: usize) -> Vector<S, R>;
}

impl<S: Simd, R: Real> Coef<S, R> for Vector<S, R> {
    #[inline(always)]
    unsafe fn at(self, _: usize, _: usize) -> Self {
        self
    }
}

/// One coefficient per value of the run, from a pointer to them.
#[derive(Clone, Copy)]
pub(super) struct PerValue<R>(pub *const R);

impl<S: Simd, R: Real> Coef<S, R> for PerValue<R> {
    #[inline(always)]
    unsafe fn at(self, i: usize, n: usize) -> Vector<S, R> {
        // SAFETY: the caller's contract (the pointer holds the run's values).
        unsafe { load_r(self.0, i, n) }
    }
}

/// An elementwise pass: an output vector from the inputs at the lanes `i..i + n`.
pub(super) trait Pass<S: Simd> {
    type E: Elem;
    /// # Safety
    ///
    /// `i..i + n` is inside the pass's run.
    unsafe fn compute(&self, i: usize, n: usize) -> Vector<S, <Self::E as Elem>::R>;
    fn out(&self) -> *mut Self::E;
}

/// `y = act((x - k) a + b)`.
pub(super) struct Normalize<E, C, const ACT: u32> {
    pub x: *const E,
    pub y: *mut E,
    pub k: C,
    pub a: C,
    pub b: C,
}

impl<S: Simd, E: Elem, C: Coef<S, E::R>, const ACT: u32> Pass<S> for Normalize<E, C, ACT> {
    type E = E;
    #[inline(always)]
    unsafe fn compute(&self, i: usize, n: usize) -> Vector<S, E::R> {
        // SAFETY: the caller's contract (x and the coefficients hold the run).
        unsafe {
            let d = load::<S, E>(self.x, i, n) - self.k.at(i, n);
            activate::<S, E::R, ACT>(d.mul_add(self.a.at(i, n), self.b.at(i, n)))
        }
    }
    #[inline(always)]
    fn out(&self) -> *mut E {
        self.y
    }
}

/// `dx = a dz + cx (x - k) + c0` with `dz = dy act'((x - k) a + b)`.
pub(super) struct BackwardApply<E, C, const ACT: u32> {
    pub x: *const E,
    pub dy: *const E,
    pub dx: *mut E,
    /// `[k, a, b, cx, c0]`.
    pub coefs: [C; 5],
}

impl<S: Simd, E: Elem, C: Coef<S, E::R>, const ACT: u32> Pass<S> for BackwardApply<E, C, ACT> {
    type E = E;
    #[inline(always)]
    unsafe fn compute(&self, i: usize, n: usize) -> Vector<S, E::R> {
        let [k, a, b, cx, c0] = self.coefs;
        // SAFETY: the caller's contract (the inputs and coefficients hold the run).
        unsafe {
            let d = load::<S, E>(self.x, i, n) - k.at(i, n);
            let a = a.at(i, n);
            let dz = activate_grad::<S, E::R, ACT>(
                d.mul_add(a, b.at(i, n)),
                load::<S, E>(self.dy, i, n),
            );
            cx.at(i, n).mul_add(d, a.mul_add(dz, c0.at(i, n)))
        }
    }
    #[inline(always)]
    fn out(&self) -> *mut E {
        self.dx
    }
}

/// Runs `pass` over a run of `n` values. The last vector overlaps its predecessor when the
/// lanes do not divide `n`; it is computed first and stored last, so that it reads the inputs
/// as they were when the output overwrites an input. Runs shorter than a vector go through a
/// partial one.
///
/// # Safety
///
/// The pass's pointers hold `n` values; its output is one of its inputs or disjoint from them.
#[inline(always)]
pub(super) unsafe fn map<S: Simd, P: Pass<S>>(n: usize, pass: &P) {
    let (l, out) = (lanes::<S, P::E>(), pass.out());
    // SAFETY: every vector is inside 0..n, the caller's contract.
    unsafe {
        if n < l {
            if n > 0 {
                store(out, 0, n, pass.compute(0, n));
            }
            return;
        }
        let tail = if n.is_multiple_of(l) {
            None
        } else {
            Some(pass.compute(n - l, l))
        };
        let mut i = 0;
        // Two vectors a step: their long computations (SiLU's exp and division) overlap.
        while i + 2 * l <= n {
            let (v0, v1) = (pass.compute(i, l), pass.compute(i + l, l));
            store(out, i, l, v0);
            store(out, i + l, l, v1);
            i += 2 * l;
        }
        if i + l <= n {
            store(out, i, l, pass.compute(i, l));
        }
        if let Some(v) = tail {
            store(out, n - l, l, v);
        }
    }
}

/// [`map`] with stores around the cache (where the instruction set has them), prefetching
/// `ahead` (values the caller reads next) in step: the pass reads its inputs from cache, so
/// memory would otherwise sit idle. The caller fences ([`isa::store_fence`]).
///
/// # Safety
///
/// As [`map`], the output disjoint from the inputs.
#[inline(always)]
pub(super) unsafe fn map_stream<S: Simd, P: Pass<S>>(n: usize, pass: &P, ahead: &[P::E]) {
    let (l, out) = (lanes::<S, P::E>(), pass.out());
    let bytes = l * size_of::<P::E>();
    // Below l for an element-aligned output.
    let head = out.align_offset(bytes).min(n).min(l - 1);
    let per_line = (64 / bytes).max(1) * l;
    // SAFETY: runs of at least l values: a vector at 0, whole vectors from an aligned output,
    // a vector ending at n, all inside 0..n; shorter runs: one partial vector; prefetches
    // never fault.
    unsafe {
        if n < l {
            if n > 0 {
                store(out, 0, n, pass.compute(0, n));
            }
            return;
        }
        // The unaligned head and the tail as whole vectors overlapping the aligned ones (the
        // output is disjoint from the inputs, so a value written twice is the same value),
        // not partial vectors through a buffer.
        if head > 0 {
            store(out, 0, l, pass.compute(0, l));
        }
        let mut i = head;
        while i + l <= n {
            if (i - head).is_multiple_of(per_line) && i < ahead.len() {
                isa::prefetch(ahead.as_ptr().add(i));
            }
            P::E::store_stream(out.add(i), pass.compute(i, l));
            i += l;
        }
        if i < n {
            store(out, n - l, l, pass.compute(n - l, l));
        }
    }
}

/// The last `rem` (below the lanes) of the values before `end` from `p`: a whole vector ending
/// at `end` where there is one, else a partial one; with the range of its lanes holding them.
///
/// # Safety
///
/// `p` is valid for `end` reads.
#[inline(always)]
unsafe fn tail<S: Simd, E: Elem>(
    p: *const E,
    end: usize,
    rem: usize,
) -> (Vector<S, E::R>, usize, usize) {
    let l = lanes::<S, E>();
    // SAFETY: the caller's contract; end >= l in the first case, rem <= end in the second.
    unsafe {
        if end >= l {
            (E::load(p.add(end - l)), l - rem, l)
        } else {
            (load_n(p.add(end - rem), rem), 0, rem)
        }
    }
}

/// `[Σ (x - k), Σ (x - k)²]` over the `n` values from `p`, summed in the arithmetic type in
/// blocks and in f64 across them.
///
/// # Safety
///
/// `p` is valid for `n` reads.
#[inline(always)]
pub(super) unsafe fn sums<S: Simd, E: Elem>(
    p: *const E,
    n: usize,
    k: E::R,
    iota: Vector<S, E::R>,
) -> [f64; 2] {
    let (l, kv, zero) = (
        lanes::<S, E>(),
        k.splat::<S>(),
        E::R::default().splat::<S>(),
    );
    let mut acc = [0f64; 2];
    let mut i = 0;
    while i < n {
        let end = (i + BLOCK).min(n);
        let (mut s1, mut s1b, mut s2, mut s2b) = (zero, zero, zero, zero);
        // SAFETY: every read is below n.
        unsafe {
            while i + 2 * l <= end {
                let (d0, d1) = (E::load(p.add(i)) - kv, E::load(p.add(i + l)) - kv);
                (s1, s1b) = (s1 + d0, s1b + d1);
                (s2, s2b) = (d0.mul_add(d0, s2), d1.mul_add(d1, s2b));
                i += 2 * l;
            }
            if i + l <= end {
                let d = E::load(p.add(i)) - kv;
                (s1, s2) = (s1 + d, d.mul_add(d, s2));
                i += l;
            }
            if i < end {
                let (v, from, to) = tail::<S, E>(p, end, end - i);
                let d = keep(iota, from, to, v - kv);
                (s1, s2) = (s1 + d, d.mul_add(d, s2));
                i = end;
            }
        }
        acc[0] += (s1 + s1b).reduce_add().to_f64();
        acc[1] += (s2 + s2b).reduce_add().to_f64();
    }
    acc
}

/// `dz = dy act'(d a + b)`.
#[inline(always)]
fn grad<S: Simd, R: Real, const ACT: u32>(
    d: Vector<S, R>,
    dy: Vector<S, R>,
    a: Vector<S, R>,
    b: Vector<S, R>,
) -> Vector<S, R> {
    activate_grad::<S, R, ACT>(d.mul_add(a, b), dy)
}

/// `[Σ dz (x - k), Σ dz, Σ (x - k)]` over `n` values (the last without an activation only),
/// with `dz = dy act'(z)` and `z = (x - k) a + b` the pre-activation output.
///
/// # Safety
///
/// `x` and `dy` are valid for `n` reads.
#[inline(always)]
pub(super) unsafe fn backward_sums<S: Simd, E: Elem, const ACT: u32>(
    x: *const E,
    dy: *const E,
    n: usize,
    [k, a, b]: [Vector<S, E::R>; 3],
    iota: Vector<S, E::R>,
) -> [f64; 3] {
    let (l, zero) = (lanes::<S, E>(), E::R::default().splat::<S>());
    let with_t = ACT == Activation::CODE_NONE;
    let mut acc = [0f64; 3];
    let mut i = 0;
    while i < n {
        let end = (i + BLOCK).min(n);
        let (mut p, mut q, mut t) = (zero, zero, zero);
        // SAFETY: every read is below n.
        unsafe {
            // Two vectors' gradients a step (they overlap), added in order.
            while i + 2 * l <= end {
                let (d0, d1) = (E::load(x.add(i)) - k, E::load(x.add(i + l)) - k);
                let dz0 = grad::<S, E::R, ACT>(d0, E::load(dy.add(i)), a, b);
                let dz1 = grad::<S, E::R, ACT>(d1, E::load(dy.add(i + l)), a, b);
                (p, q) = (dz0.mul_add(d0, p), q + dz0);
                (p, q) = (dz1.mul_add(d1, p), q + dz1);
                if with_t {
                    t = t + d0 + d1;
                }
                i += 2 * l;
            }
            if i + l <= end {
                let d = E::load(x.add(i)) - k;
                let dz = grad::<S, E::R, ACT>(d, E::load(dy.add(i)), a, b);
                (p, q, t) = (dz.mul_add(d, p), q + dz, if with_t { t + d } else { t });
                i += l;
            }
            if i < end {
                let rem = end - i;
                let (xv, from, to) = tail::<S, E>(x, end, rem);
                let (g, ..) = tail::<S, E>(dy, end, rem);
                // Lanes outside the values: d and dy 0, so dz is 0 too.
                let d = keep(iota, from, to, xv - k);
                let dz = grad::<S, E::R, ACT>(d, keep(iota, from, to, g), a, b);
                (p, q, t) = (dz.mul_add(d, p), q + dz, if with_t { t + d } else { t });
                i = end;
            }
        }
        // One combined horizontal sum (t is 0 with an activation).
        let [sp, sq, st] = E::R::sum3([p, q, t]);
        acc = [acc[0] + sp, acc[1] + sq, acc[2] + st];
    }
    acc
}

/// A vector's place in a row of columns: `i` its first column, `n` its columns (the lanes, or
/// fewer for a row shorter than a vector), `from` its first column no earlier vector covered
/// (the last vector of a row overlaps its predecessor).
#[derive(Clone, Copy)]
pub(super) struct At {
    pub i: usize,
    pub n: usize,
    pub from: usize,
}

impl At {
    /// The vector covering the columns `done..n` of a row of `n` (`n - done` below the lanes
    /// `l`): a whole vector ending at `n` where the row has one, else a partial one.
    #[inline(always)]
    fn rest(n: usize, l: usize, done: usize) -> Self {
        if n < l {
            Self { i: 0, n, from: 0 }
        } else {
            Self {
                i: n - l,
                n: l,
                from: l - (n - done),
            }
        }
    }
}

/// `v` in the columns `at` covers first, 0 in the others (for sums).
#[inline(always)]
pub(super) fn own<S: Simd, R: Real>(iota: Vector<S, R>, at: At, v: Vector<S, R>) -> Vector<S, R> {
    if at.from == 0 && at.n == R::lanes::<S>() {
        v
    } else {
        keep(iota, at.from, at.n, v)
    }
}

/// [`col_sums`] at the columns `at`.
///
/// # Safety
///
/// As [`col_sums`], `at` inside the `n` values.
#[inline(always)]
unsafe fn col_sums_at<S: Simd, E: Elem>(
    x: *const E,
    k: *const E::R,
    [s1, s2]: [*mut E::R; 2],
    iota: Vector<S, E::R>,
    at: At,
) {
    let (i, m) = (at.i, at.n);
    // SAFETY: the caller's contract.
    unsafe {
        let d = own(iota, at, load::<S, E>(x, i, m) - load_r(k, i, m));
        store_r(s1, i, m, load_r::<S, E::R>(s1, i, m) + d);
        store_r(s2, i, m, d.mul_add(d, load_r(s2, i, m)));
    }
}

/// Per column of the `n` from `x`: `s1 += x - k`, `s2 += (x - k)²`.
///
/// # Safety
///
/// Every pointer is valid for `n` values, the sums writable and disjoint from the others.
#[inline(always)]
pub(super) unsafe fn col_sums<S: Simd, E: Elem>(
    x: *const E,
    n: usize,
    k: *const E::R,
    sums: [*mut E::R; 2],
    iota: Vector<S, E::R>,
) {
    let l = lanes::<S, E>();
    let full = At {
        i: 0,
        n: l,
        from: 0,
    };
    let mut i = 0;
    // SAFETY: whole vectors below n, then the rest inside the n values.
    unsafe {
        // Whole vectors with the width known here: no per-vector tests (measured: the rows
        // of channels-last inputs, where this loop is the statistics pass).
        while i + l <= n {
            col_sums_at::<S, E>(x, k, sums, iota, At { i, ..full });
            i += l;
        }
        if i < n {
            col_sums_at::<S, E>(x, k, sums, iota, At::rest(n, l, i));
        }
    }
}

/// [`col_backward_sums`] at the columns `at`.
///
/// # Safety
///
/// As [`col_backward_sums`], `at` inside the `n` values.
#[inline(always)]
unsafe fn col_backward_sums_at<S: Simd, E: Elem, const ACT: u32>(
    [x, dy]: [*const E; 2],
    [k, a, b]: [*const E::R; 3],
    [p, q, t]: [*mut E::R; 3],
    iota: Vector<S, E::R>,
    at: At,
) {
    let (i, m) = (at.i, at.n);
    // SAFETY: the caller's contract.
    unsafe {
        let d = load::<S, E>(x, i, m) - load_r(k, i, m);
        let dz = grad::<S, E::R, ACT>(d, load::<S, E>(dy, i, m), load_r(a, i, m), load_r(b, i, m));
        let (d, dz) = (own(iota, at, d), own(iota, at, dz));
        store_r(p, i, m, dz.mul_add(d, load_r(p, i, m)));
        store_r(q, i, m, load_r::<S, E::R>(q, i, m) + dz);
        store_r(t, i, m, load_r::<S, E::R>(t, i, m) + d);
    }
}

/// Per column of the `n` from `x` and `dy`: `p += dz d`, `q += dz`, `t += d`, with `d = x - k`
/// and `dz = dy act'(d a + b)`.
///
/// # Safety
///
/// Every pointer is valid for `n` values, the sums writable and disjoint from the others.
#[inline(always)]
pub(super) unsafe fn col_backward_sums<S: Simd, E: Elem, const ACT: u32>(
    x: *const E,
    dy: *const E,
    n: usize,
    coefs: [*const E::R; 3],
    sums: [*mut E::R; 3],
    iota: Vector<S, E::R>,
) {
    let l = lanes::<S, E>();
    let full = At {
        i: 0,
        n: l,
        from: 0,
    };
    let mut i = 0;
    // SAFETY: whole vectors below n, then the rest inside the n values.
    unsafe {
        while i + l <= n {
            let at = At { i, ..full };
            col_backward_sums_at::<S, E, ACT>([x, dy], coefs, sums, iota, at);
            i += l;
        }
        if i < n {
            let at = At::rest(n, l, i);
            col_backward_sums_at::<S, E, ACT>([x, dy], coefs, sums, iota, at);
        }
    }
}

#[cfg(test)]
#[path = "passes_tests.rs"]
mod tests;
