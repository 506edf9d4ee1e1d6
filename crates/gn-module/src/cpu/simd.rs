//! The kernels' vector layer on top of macerator: the element types as vectors of their
//! arithmetic type ([`Elem`], [`Real`]), partial vectors for the ends of rows, and the
//! activations (ReLU, SiLU and its `exp`), written once for every instruction set macerator
//! dispatches to (AVX2, AVX-512, NEON, SIMD128, scalar).
//!
//! Everything here is `#[inline(always)]`: it must inline into the kernel that macerator's
//! dispatch compiled for the instruction set, or it would be compiled without it.

use core::marker::PhantomData;
use core::mem::MaybeUninit;

use half::{bf16, f16};
use macerator::{
    ReduceAdd, Scalar, Simd, VAdd, VDiv, VMul, VMulAdd, VOrd, VSelect, VSub, Vector,
    vload_unaligned, vstore_unaligned,
};

use super::isa;
use crate::activation::Activation;

/// The most lanes of a vector of any element (f32 in AVX-512's 64 bytes).
pub(crate) const MAX_LANES: usize = 16;

/// The arithmetic type of the kernels: f32 (for f32, f16 and bf16 storage) or f64, itself an
/// element (of its own arithmetic type).
pub(crate) trait Real:
    Elem<R = Self>
    + VAdd
    + VSub
    + VMul
    + VDiv
    + VMulAdd
    + VOrd
    + VSelect
    + ReduceAdd
    + PartialOrd
    + Send
    + Sync
    + core::fmt::Debug
{
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// `e^x` in each lane (see [`exp_f32`] for f32).
    fn exp<S: Simd, const N: usize>(x: [Vector<S, Self>; N]) -> [Vector<S, Self>; N];
    /// The sums of the lanes of three vectors, in f64.
    #[inline(always)]
    fn sum3<S: Simd>(v: [Vector<S, Self>; 3]) -> [f64; 3] {
        v.map(|v| v.reduce_add().to_f64())
    }
}

impl Real for f32 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp<S: Simd, const N: usize>(x: [Vector<S, Self>; N]) -> [Vector<S, Self>; N] {
        exp_f32(x)
    }
    #[inline(always)]
    fn sum3<S: Simd>(v: [Vector<S, Self>; 3]) -> [f64; 3] {
        isa::sum3(v).unwrap_or_else(|| v.map(|v| v.reduce_add().to_f64()))
    }
}

impl Real for f64 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    /// Lane by lane (f64 is the rare type; its `exp` keeps libm's accuracy).
    #[inline(always)]
    fn exp<S: Simd, const N: usize>(mut x: [Vector<S, Self>; N]) -> [Vector<S, Self>; N] {
        for x in &mut x {
            let mut buf = [0f64; MAX_LANES];
            // SAFETY: buf holds MAX_LANES >= lanes values.
            unsafe { vstore_unaligned(buf.as_mut_ptr(), *x) };
            for v in &mut buf[..f64::lanes::<S>()] {
                *v = v.exp();
            }
            // SAFETY: as above.
            *x = unsafe { vload_unaligned(buf.as_ptr()) };
        }
        x
    }
}

/// A tensor element the kernels read and write: f32, f64, f16 or bf16 (floats without padding,
/// which the transposes move as raw bits), loaded and stored as vectors of [`Elem::R`].
pub(crate) trait Elem: Scalar + Send + Sync + 'static {
    type R: Real;

    fn to_r(self) -> Self::R;

    /// `lanes::<S, Self>()` values from `p`.
    ///
    /// # Safety
    ///
    /// `p` is valid for that many reads.
    unsafe fn load<S: Simd>(p: *const Self) -> Vector<S, Self::R>;

    /// `v` rounded to the element (to nearest, ties to even; NaN stays NaN) into `p`.
    ///
    /// # Safety
    ///
    /// `p` is valid for `lanes::<S, Self>()` writes.
    unsafe fn store<S: Simd>(p: *mut Self, v: Vector<S, Self::R>);

    /// [`store`](Elem::store) around the cache where the instruction set has it (f32 on x86),
    /// else a plain store; the caller issues [`isa::store_fence`] before the values are read.
    ///
    /// # Safety
    ///
    /// As [`store`](Elem::store), and `p` is aligned to the vector's size.
    #[inline(always)]
    unsafe fn store_stream<S: Simd>(p: *mut Self, v: Vector<S, Self::R>) {
        // SAFETY: the caller's contract.
        unsafe { Self::store(p, v) }
    }
}

/// Lanes of a vector of `E`'s arithmetic type.
#[inline(always)]
pub(crate) fn lanes<S: Simd, E: Elem>() -> usize {
    E::R::lanes::<S>()
}

macro_rules! native_elem {
    ($t:ty) => {
        impl Elem for $t {
            type R = $t;
            #[inline(always)]
            fn to_r(self) -> $t {
                self
            }
            #[inline(always)]
            unsafe fn load<S: Simd>(p: *const Self) -> Vector<S, $t> {
                // SAFETY: the caller's contract.
                unsafe { vload_unaligned(p) }
            }
            #[inline(always)]
            unsafe fn store<S: Simd>(p: *mut Self, v: Vector<S, $t>) {
                // SAFETY: the caller's contract.
                unsafe { vstore_unaligned(p, v) }
            }
            #[inline(always)]
            unsafe fn store_stream<S: Simd>(p: *mut Self, v: Vector<S, $t>) {
                // SAFETY: the caller's contract.
                unsafe { isa::store_stream(p, v) }
            }
        }
    };
}
native_elem!(f32);
native_elem!(f64);

macro_rules! half_elem {
    ($t:ty) => {
        impl Elem for $t {
            type R = f32;
            #[inline(always)]
            fn to_r(self) -> f32 {
                self.to_f32()
            }
            #[inline(always)]
            unsafe fn load<S: Simd>(p: *const Self) -> Vector<S, f32> {
                // SAFETY: the caller's contract.
                if let Some(v) = unsafe { isa::widen(p) } {
                    return v;
                }
                let mut buf = [0f32; MAX_LANES];
                for (i, v) in buf.iter_mut().take(f32::lanes::<S>()).enumerate() {
                    // SAFETY: i < lanes, the caller's contract.
                    *v = unsafe { *p.add(i) }.to_f32();
                }
                // SAFETY: buf holds MAX_LANES values.
                unsafe { vload_unaligned(buf.as_ptr()) }
            }
            #[inline(always)]
            unsafe fn store<S: Simd>(p: *mut Self, v: Vector<S, f32>) {
                // SAFETY: the caller's contract.
                if unsafe { isa::narrow(p, v) } {
                    return;
                }
                let mut buf = [0f32; MAX_LANES];
                // SAFETY: buf holds MAX_LANES values.
                unsafe { vstore_unaligned(buf.as_mut_ptr(), v) };
                for (i, &v) in buf.iter().take(f32::lanes::<S>()).enumerate() {
                    // SAFETY: i < lanes, the caller's contract.
                    unsafe { p.add(i).write(<$t>::from_f32(v)) };
                }
            }
        }
    };
}
half_elem!(f16);
half_elem!(bf16);

/// The first `n` values from `p` (`n` below the lanes), the other lanes 0.
///
/// # Safety
///
/// `p` is valid for `n` reads.
#[inline(always)]
pub(crate) unsafe fn load_n<S: Simd, E: Elem>(p: *const E, n: usize) -> Vector<S, E::R> {
    let mut buf = [E::default(); MAX_LANES];
    // SAFETY: n < lanes <= MAX_LANES; the caller's contract.
    unsafe {
        core::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n.min(MAX_LANES));
        E::load(buf.as_ptr())
    }
}

/// The first `n` lanes of `v` into `p` (`n` below the lanes).
///
/// # Safety
///
/// `p` is valid for `n` writes.
#[inline(always)]
pub(crate) unsafe fn store_n<S: Simd, E: Elem>(p: *mut E, n: usize, v: Vector<S, E::R>) {
    let mut buf = [E::default(); MAX_LANES];
    // SAFETY: n < lanes <= MAX_LANES; the caller's contract.
    unsafe {
        E::store(buf.as_mut_ptr(), v);
        core::ptr::copy_nonoverlapping(buf.as_ptr(), p, n.min(MAX_LANES));
    }
}

/// Lane indices `0, 1, ..` as values.
#[inline(always)]
pub(crate) fn iota<S: Simd, R: Real>() -> Vector<S, R> {
    let mut buf = [R::default(); MAX_LANES];
    for (i, v) in buf.iter_mut().enumerate() {
        *v = R::from_f64(i as f64);
    }
    // SAFETY: buf holds MAX_LANES values.
    unsafe { vload_unaligned(buf.as_ptr()) }
}

/// The lanes `from..to` of a vector, kept as a bit mask: macerator's masks are not `Copy`, and
/// a range built once outside a loop (a run's tail, for rows of one length) must stay usable
/// inside it, at one `and` a use.
pub(crate) struct LaneRange<S: Simd, R: Real> {
    bits: Vector<S, u32>,
    _real: PhantomData<R>,
}

// By hand: derived ones would ask `S: Copy`.
impl<S: Simd, R: Real> Clone for LaneRange<S, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S: Simd, R: Real> Copy for LaneRange<S, R> {}

impl<S: Simd, R: Real> LaneRange<S, R> {
    /// `iota` from [`iota`].
    #[inline(always)]
    pub(crate) fn new(iota: Vector<S, R>, from: usize, to: usize) -> Self {
        // Through u32 (from and to are at most the lanes): a single conversion instruction,
        // where u64 to f64 takes several on x86 without AVX-512.
        let at = |i: usize| R::from_f64(i as u32 as f64).splat();
        let mask = iota.ge(at(from)) & iota.lt(at(to));
        // All bits set in the range's lanes (whatever R's width), none elsewhere.
        let ones = u32::MAX.splat::<S>().reinterpret::<R>();
        let bits = mask.select(ones, R::default().splat()).reinterpret::<u32>();
        Self {
            bits,
            _real: PhantomData,
        }
    }

    /// `v` in the range's lanes, 0 in the others.
    #[inline(always)]
    pub(crate) fn keep(self, v: Vector<S, R>) -> Vector<S, R> {
        (v.reinterpret::<u32>() & self.bits).reinterpret::<R>()
    }
}

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

/// A vector of `len` uninitialized elements, for outputs the kernels write entirely.
pub(crate) fn uninit_vec<E>(len: usize) -> Vec<MaybeUninit<E>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialization; the capacity is `len`.
    unsafe { v.set_len(len) };
    v
}

/// The vector once every element has been written.
///
/// # Safety
///
/// Every element of `v` must be initialized.
pub(crate) unsafe fn assume_init<E>(v: Vec<MaybeUninit<E>>) -> Vec<E> {
    let mut v = core::mem::ManuallyDrop::new(v);
    // SAFETY: same layout (MaybeUninit<E> is repr(transparent)), same allocation, all
    // elements initialized by the caller's contract.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<E>(), v.len(), v.capacity()) }
}

#[cfg(test)]
pub(crate) mod tests {
    use macerator::{Arch, WithSimd};

    use super::*;

    /// Every instruction set macerator can run here: the scalar backend, and on x86-64 the
    /// levels up to the best one this CPU has.
    pub(crate) fn archs() -> Vec<Arch> {
        let best = Arch::detect();
        let name = format!("{best:?}");
        let mut all = vec![Arch::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if name.starts_with("V3") || name.starts_with("V4") {
                all.push(Arch::V2);
            }
            if name.starts_with("V4") {
                all.push(Arch::V3);
            }
        }
        if name != "Scalar" {
            all.push(best);
        }
        all
    }

    struct Apply<'a> {
        xs: &'a [f32],
        what: Func,
    }

    #[derive(Clone, Copy)]
    enum Func {
        Exp,
        Silu,
        SiluGrad,
        Relu,
        ReluGrad,
        RoundTrip16,
        RoundTripBf16,
    }

    impl WithSimd for Apply<'_> {
        type Output = Vec<f32>;
        #[inline(always)]
        fn with_simd<S: Simd>(self) -> Vec<f32> {
            // Two vectors at a time: the activations as the row passes call them.
            let l = f32::lanes::<S>();
            let mut out = vec![0f32; self.xs.len()];
            let one = [1f32.splat::<S>(); 2];
            for (src, dst) in self.xs.chunks_exact(2 * l).zip(out.chunks_exact_mut(2 * l)) {
                // SAFETY: both chunks hold `2 l` values.
                let v = unsafe {
                    [
                        vload_unaligned(src.as_ptr()),
                        vload_unaligned(src.as_ptr().add(l)),
                    ]
                };
                const SILU: u32 = Activation::CODE_SILU;
                const RELU: u32 = Activation::CODE_RELU;
                let y = match self.what {
                    Func::Exp => exp_f32(v),
                    Func::Silu => activate::<S, f32, SILU, 2>(v),
                    Func::SiluGrad => activate_grad::<S, f32, SILU, 2>(v, one),
                    Func::Relu => activate::<S, f32, RELU, 2>(v),
                    Func::ReluGrad => activate_grad::<S, f32, RELU, 2>(v, one),
                    Func::RoundTrip16 | Func::RoundTripBf16 => {
                        let mut y = v;
                        let (mut h, mut b) = ([f16::ZERO; MAX_LANES], [bf16::ZERO; MAX_LANES]);
                        for y in &mut y {
                            // SAFETY: h and b hold MAX_LANES values.
                            *y = unsafe {
                                if matches!(self.what, Func::RoundTrip16) {
                                    f16::store::<S>(h.as_mut_ptr(), *y);
                                    f16::load::<S>(h.as_ptr())
                                } else {
                                    bf16::store::<S>(b.as_mut_ptr(), *y);
                                    bf16::load::<S>(b.as_ptr())
                                }
                            };
                        }
                        y
                    }
                };
                // SAFETY: as above.
                unsafe {
                    vstore_unaligned(dst.as_mut_ptr(), y[0]);
                    vstore_unaligned(dst.as_mut_ptr().add(l), y[1]);
                }
            }
            out
        }
    }

    fn run(arch: Arch, xs: &[f32], what: Func) -> Vec<f32> {
        // Pairs of whole vectors of every width: pad to a multiple of 32.
        let mut padded = xs.to_vec();
        padded.resize(xs.len().div_ceil(2 * MAX_LANES) * 2 * MAX_LANES, 0.0);
        // SAFETY: archs() lists what this CPU supports (detected) and the scalar backend.
        let mut out = unsafe { arch.dispatch(Apply { xs: &padded, what }) };
        out.truncate(xs.len());
        out
    }

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

    /// On every instruction set here, f16 and bf16 vectors store f32 values rounded as half
    /// rounds them (at, around and between 16-bit values, NaN, infinities) and load them back
    /// exactly.
    #[test]
    fn half_conversions_match_half_on_every_instruction_set() {
        let mut values = Vec::new();
        for bits in (0..=u16::MAX).step_by(3) {
            for wide in [
                f16::from_bits(bits).to_f32(),
                bf16::from_bits(bits).to_f32(),
            ] {
                let w = wide.to_bits();
                for d in [0u32, 1, 0x1000, 0x7fff, 0x8000, 0x8001, 0xffff] {
                    values.push(f32::from_bits(w.wrapping_add(d)));
                    values.push(f32::from_bits(w.wrapping_sub(d)));
                }
            }
        }
        values.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            65520.0,
            1e-8,
            -0.0,
        ]);
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for arch in archs() {
            let h = run(arch, &values, Func::RoundTrip16);
            let b = run(arch, &values, Func::RoundTripBf16);
            for (i, &v) in values.iter().enumerate() {
                assert!(
                    same(h[i], f16::from_f32(v).to_f32()),
                    "{arch:?} f16 of {v:e}: {}",
                    h[i]
                );
                assert!(
                    same(b[i], bf16::from_f32(v).to_f32()),
                    "{arch:?} bf16 of {v:e}: {}",
                    b[i]
                );
            }
        }
    }
}
