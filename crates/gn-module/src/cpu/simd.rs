//! The kernels' vector layer on top of macerator: the element types as vectors of their
//! arithmetic type ([`Elem`], [`Real`]) and partial vectors for the ends of rows, written once
//! for every instruction set macerator dispatches to (AVX2, AVX-512, NEON, SIMD128, scalar);
//! the activations are in `activation.rs`.
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
    /// `e^x` in each lane (see [`exp_f32`](super::activation::exp_f32) for f32).
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
        super::activation::exp_f32(x)
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

    use crate::activation::Activation;
    use crate::cpu::activation::{activate, activate_grad, exp_f32};

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

    /// What [`run`] computes on each pair of vectors.
    #[derive(Clone, Copy)]
    pub(crate) enum Func {
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

    pub(crate) fn run(arch: Arch, xs: &[f32], what: Func) -> Vec<f32> {
        // Pairs of whole vectors of every width: pad to a multiple of 32.
        let mut padded = xs.to_vec();
        padded.resize(xs.len().div_ceil(2 * MAX_LANES) * 2 * MAX_LANES, 0.0);
        // SAFETY: archs() lists what this CPU supports (detected) and the scalar backend.
        let mut out = unsafe { arch.dispatch(Apply { xs: &padded, what }) };
        out.truncate(xs.len());
        out
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
