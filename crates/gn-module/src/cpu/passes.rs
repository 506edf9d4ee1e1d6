//! The passes over a run of values that every kernel is made of, generic over the instruction
//! set `S`, the element `E` and the activation `ACT`: the statistics' sums, the normalization,
//! the backward's sums and its elementwise pass. Coefficients are one value for the whole run
//! (a channels-first row: a [`Vector`] splat) or one per value (a channels-last position row,
//! or short channels-first rows: [`PerValue`]).
//!
//! No closures here: a closure that LLVM does not inline is compiled without the instruction
//! set of the kernel around it, and so are the intrinsics it calls. Everything is
//! `#[inline(always)]` down to macerator's operations.

use macerator::{Scalar, Simd, Vector};

use super::activation::{activate, activate_grad};
use super::isa;
use super::simd::{Elem, LaneRange, Real, lanes, load_n, store_n};
use crate::activation::Activation;

/// Values summed in the arithmetic type before the sums move to f64.
pub(super) const BLOCK: usize = 256;

/// `n` values of `E` from `p + i` (`n` the lanes, or fewer: the other lanes 0). Also for
/// arithmetic values (coefficients, accumulators): a [`Real`] is its own element.
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
        unsafe { load::<S, R>(self.0, i, n) }
    }
}

/// An elementwise pass: `N` output vectors from the inputs at the lanes `i..i + n`,
/// `i + n..i + 2n`, .. (`N` vectors at once so that their long computations, SiLU's exp and
/// division, overlap).
pub(super) trait Pass<S: Simd> {
    type E: Elem;
    /// # Safety
    ///
    /// `i..i + N n` is inside the pass's run.
    unsafe fn compute<const N: usize>(
        &self,
        i: usize,
        n: usize,
    ) -> [Vector<S, <Self::E as Elem>::R>; N];
    fn out(&self) -> *mut Self::E;
    /// Whether [`map_stream`] computes two vectors a step (for SiLU).
    const PAIRS: bool = false;
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
    const PAIRS: bool = ACT == Activation::CODE_SILU;
    #[inline(always)]
    unsafe fn compute<const N: usize>(&self, i: usize, n: usize) -> [Vector<S, E::R>; N] {
        let mut z = [E::R::default().splat(); N];
        for (k, z) in z.iter_mut().enumerate() {
            let j = i + k * n;
            // SAFETY: the caller's contract (x and the coefficients hold the run).
            unsafe {
                let d = load::<S, E>(self.x, j, n) - self.k.at(j, n);
                *z = d.mul_add(self.a.at(j, n), self.b.at(j, n));
            }
        }
        activate::<S, E::R, ACT, N>(z)
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
    unsafe fn compute<const N: usize>(&self, i: usize, n: usize) -> [Vector<S, E::R>; N] {
        let [k, a, b, cx, c0] = self.coefs;
        let zero = E::R::default().splat();
        let (mut d, mut av, mut z, mut dy) = ([zero; N], [zero; N], [zero; N], [zero; N]);
        for m in 0..N {
            let j = i + m * n;
            // SAFETY: the caller's contract (the inputs and coefficients hold the run).
            unsafe {
                d[m] = load::<S, E>(self.x, j, n) - k.at(j, n);
                av[m] = a.at(j, n);
                z[m] = d[m].mul_add(av[m], b.at(j, n));
                dy[m] = load::<S, E>(self.dy, j, n);
            }
        }
        let mut dz = activate_grad::<S, E::R, ACT, N>(z, dy);
        for m in 0..N {
            let j = i + m * n;
            // SAFETY: as above.
            unsafe { dz[m] = cx.at(j, n).mul_add(d[m], av[m].mul_add(dz[m], c0.at(j, n))) };
        }
        dz
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
                store(out, 0, n, pass.compute::<1>(0, n)[0]);
            }
            return;
        }
        let tail = if n.is_multiple_of(l) {
            None
        } else {
            Some(pass.compute::<1>(n - l, l)[0])
        };
        let mut i = 0;
        // Two vectors a step: their long computations (SiLU's exp and division) overlap.
        while i + 2 * l <= n {
            let [v0, v1] = pass.compute::<2>(i, l);
            store(out, i, l, v0);
            store(out, i + l, l, v1);
            i += 2 * l;
        }
        if i + l <= n {
            store(out, i, l, pass.compute::<1>(i, l)[0]);
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
                store(out, 0, n, pass.compute::<1>(0, n)[0]);
            }
            return;
        }
        // The unaligned head and the tail as whole vectors overlapping the aligned ones (the
        // output is disjoint from the inputs, so a value written twice is the same value),
        // not partial vectors through a buffer.
        if head > 0 {
            store(out, 0, l, pass.compute::<1>(0, l)[0]);
        }
        let mut i = head;
        // Two vectors a step for SiLU: 13-15% faster on the streamed f32 SiLU forwards (set
        // F's stream2 rounds). One otherwise: with two for every pass, the ndarray
        // [8,256,56,56] forward+backward without an activation measured 28-42% slower in
        // three interleaved sets, not understood.
        if P::PAIRS {
            while i + 2 * l <= n {
                for j in [i, i + l] {
                    if (j - head).is_multiple_of(per_line) && j < ahead.len() {
                        isa::prefetch(ahead.as_ptr().add(j));
                    }
                }
                let [v0, v1] = pass.compute::<2>(i, l);
                P::E::store_stream(out.add(i), v0);
                P::E::store_stream(out.add(i + l), v1);
                i += 2 * l;
            }
        }
        while i + l <= n {
            if (i - head).is_multiple_of(per_line) && i < ahead.len() {
                isa::prefetch(ahead.as_ptr().add(i));
            }
            P::E::store_stream(out.add(i), pass.compute::<1>(i, l)[0]);
            i += l;
        }
        if i < n {
            store(out, n - l, l, pass.compute::<1>(n - l, l)[0]);
        }
    }
}

/// The last `rem` (below the lanes) of the values before `end` from `p`: a whole vector ending
/// at `end` where there is one (its first `l - rem` lanes counted before), else a partial one;
/// [`TailLanes`] is the range of its lanes holding them.
///
/// # Safety
///
/// `p` is valid for `end` reads.
#[inline(always)]
unsafe fn tail<S: Simd, E: Elem>(p: *const E, end: usize, rem: usize) -> Vector<S, E::R> {
    // SAFETY: the caller's contract; end >= l in the first case, rem <= end in the second.
    unsafe {
        if end >= lanes::<S, E>() {
            E::load(p.add(end - lanes::<S, E>()))
        } else {
            load_n(p.add(end - rem), rem)
        }
    }
}

/// The lanes of [`tail`]'s vector that hold a run's last values, for runs of `n` values
/// (`iota` from [`super::simd::iota`]). They depend on `n` only (blocks are whole vectors), so
/// callers over many rows of one length build this once, not once a row.
pub(super) type TailLanes<S, R> = LaneRange<S, R>;

/// [`TailLanes`] of runs of `n` values of `E`.
#[inline(always)]
pub(super) fn tail_lanes<S: Simd, E: Elem>(n: usize, iota: Vector<S, E::R>) -> TailLanes<S, E::R> {
    let l = lanes::<S, E>();
    let (from, to) = if n < l { (0, n) } else { (l - n % l, l) };
    LaneRange::new(iota, from, to)
}

/// `[Σ (x - k), Σ (x - k)²]` over the `n` values from `p`, summed in the arithmetic type in
/// blocks and in f64 across them; `tail_range` is [`tail_lanes`] of `n`.
///
/// # Safety
///
/// `p` is valid for `n` reads.
#[inline(always)]
pub(super) unsafe fn sums<S: Simd, E: Elem>(
    p: *const E,
    n: usize,
    k: E::R,
    tail_range: TailLanes<S, E::R>,
) -> [f64; 2] {
    debug_assert!(
        BLOCK.is_multiple_of(lanes::<S, E>()),
        "tails only at the run's end"
    );
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
            // Four vectors a step into two pairs of sums: the loop's own instructions were a
            // third of it at two (this pass reads every value once from memory, and the
            // sums' latency is covered at two chains each).
            while i + 4 * l <= end {
                let (d0, d1) = (E::load(p.add(i)) - kv, E::load(p.add(i + l)) - kv);
                let (d2, d3) = (
                    E::load(p.add(i + 2 * l)) - kv,
                    E::load(p.add(i + 3 * l)) - kv,
                );
                (s1, s1b) = (s1 + d0 + d2, s1b + d1 + d3);
                s2 = d2.mul_add(d2, d0.mul_add(d0, s2));
                s2b = d3.mul_add(d3, d1.mul_add(d1, s2b));
                i += 4 * l;
            }
            if i + 2 * l <= end {
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
                let d = tail_range.keep(tail::<S, E>(p, end, end - i) - kv);
                (s1, s2) = (s1 + d, d.mul_add(d, s2));
                i = end;
            }
        }
        acc[0] += (s1 + s1b).reduce_add().to_f64();
        acc[1] += (s2 + s2b).reduce_add().to_f64();
    }
    acc
}

/// `dz = dy act'(d a + b)` for `N` vectors at once.
#[inline(always)]
pub(super) fn grad<S: Simd, R: Real, const ACT: u32, const N: usize>(
    d: [Vector<S, R>; N],
    dy: [Vector<S, R>; N],
    a: Vector<S, R>,
    b: Vector<S, R>,
) -> [Vector<S, R>; N] {
    let mut z = d;
    for z in &mut z {
        *z = z.mul_add(a, b);
    }
    activate_grad::<S, R, ACT, N>(z, dy)
}

/// `[Σ dz (x - k), Σ dz, Σ (x - k)]` over `n` values (the last without an activation only),
/// with `dz = dy act'(z)` and `z = (x - k) a + b` the pre-activation output; `tail_range` is
/// [`tail_lanes`] of `n`.
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
    tail_range: TailLanes<S, E::R>,
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
                let dy = [E::load(dy.add(i)), E::load(dy.add(i + l))];
                let [dz0, dz1] = grad::<S, E::R, ACT, 2>([d0, d1], dy, a, b);
                (p, q) = (dz0.mul_add(d0, p), q + dz0);
                (p, q) = (dz1.mul_add(d1, p), q + dz1);
                if with_t {
                    t = t + d0 + d1;
                }
                i += 2 * l;
            }
            if i + l <= end {
                let d = E::load(x.add(i)) - k;
                let [dz] = grad::<S, E::R, ACT, 1>([d], [E::load(dy.add(i))], a, b);
                (p, q, t) = (dz.mul_add(d, p), q + dz, if with_t { t + d } else { t });
                i += l;
            }
            if i < end {
                let rem = end - i;
                // Lanes outside the values: d and dy 0, so dz is 0 too.
                let d = tail_range.keep(tail::<S, E>(x, end, rem) - k);
                let dy = tail_range.keep(tail::<S, E>(dy, end, rem));
                let [dz] = grad::<S, E::R, ACT, 1>([d], [dy], a, b);
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

#[cfg(test)]
#[path = "passes_tests.rs"]
mod tests;
