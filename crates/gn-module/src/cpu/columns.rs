//! The passes over position rows of channels-last inputs (one value per channel, per-value
//! coefficients and per-column sums), and over channels-first rows shorter than a vector taken
//! as one run: the column counterparts of `passes.rs`'s row passes.

use macerator::{Simd, Vector};

use super::passes::{grad, load, store};
use super::simd::{Elem, LaneRange, Real, lanes};

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
        LaneRange::new(iota, at.from, at.n).keep(v)
    }
}

/// A pass over a row of columns, one vector's place at a time.
trait Columns<S: Simd> {
    type E: Elem;
    /// The pass at the columns `at`.
    ///
    /// # Safety
    ///
    /// `at` is inside the row the pass was made for.
    unsafe fn at(&self, at: At);
}

/// Runs `pass` over a row of `n` columns: whole vectors in a loop whose width is the
/// instruction set's constant (no per-vector tests: measured, on the rows of channels-last
/// inputs, where this is the statistics pass), then the rest as one vector ([`At::rest`]).
///
/// # Safety
///
/// The pass's pointers hold `n` values.
#[inline(always)]
unsafe fn columns<S: Simd, P: Columns<S>>(n: usize, pass: &P) {
    let l = lanes::<S, P::E>();
    let mut i = 0;
    // SAFETY: whole vectors below n, then the rest inside the n values.
    unsafe {
        while i + l <= n {
            pass.at(At { i, n: l, from: 0 });
            i += l;
        }
        if i < n {
            pass.at(At::rest(n, l, i));
        }
    }
}

/// [`col_sums`]' pass.
struct Sums<S: Simd, E: Elem> {
    x: *const E,
    k: *const E::R,
    sums: [*mut E::R; 2],
    iota: Vector<S, E::R>,
}

impl<S: Simd, E: Elem> Columns<S> for Sums<S, E> {
    type E = E;
    #[inline(always)]
    unsafe fn at(&self, at: At) {
        let (i, m, [s1, s2]) = (at.i, at.n, self.sums);
        // SAFETY: the caller's contract.
        unsafe {
            let d = own(
                self.iota,
                at,
                load::<S, E>(self.x, i, m) - load::<S, E::R>(self.k, i, m),
            );
            store(s1, i, m, load::<S, E::R>(s1, i, m) + d);
            store(s2, i, m, d.mul_add(d, load::<S, E::R>(s2, i, m)));
        }
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
    // SAFETY: the caller's contract.
    unsafe { columns(n, &Sums::<S, E> { x, k, sums, iota }) }
}

/// [`col_backward_sums`]' pass.
struct BackwardSums<S: Simd, E: Elem, const ACT: u32> {
    x: *const E,
    dy: *const E,
    coefs: [*const E::R; 3],
    sums: [*mut E::R; 3],
    iota: Vector<S, E::R>,
}

impl<S: Simd, E: Elem, const ACT: u32> Columns<S> for BackwardSums<S, E, ACT> {
    type E = E;
    #[inline(always)]
    unsafe fn at(&self, at: At) {
        let (i, m, [k, a, b], [p, q, t]) = (at.i, at.n, self.coefs, self.sums);
        // SAFETY: the caller's contract.
        unsafe {
            let d = load::<S, E>(self.x, i, m) - load::<S, E::R>(k, i, m);
            let dy = load::<S, E>(self.dy, i, m);
            let (a, b) = (load::<S, E::R>(a, i, m), load::<S, E::R>(b, i, m));
            let [dz] = grad::<S, E::R, ACT, 1>([d], [dy], a, b);
            let (d, dz) = (own(self.iota, at, d), own(self.iota, at, dz));
            store(p, i, m, dz.mul_add(d, load::<S, E::R>(p, i, m)));
            store(q, i, m, load::<S, E::R>(q, i, m) + dz);
            store(t, i, m, load::<S, E::R>(t, i, m) + d);
        }
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
    let pass = BackwardSums::<S, E, ACT> {
        x,
        dy,
        coefs,
        sums,
        iota,
    };
    // SAFETY: the caller's contract.
    unsafe { columns(n, &pass) }
}
