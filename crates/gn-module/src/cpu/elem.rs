//! Element types of the CPU kernels: the storage type of a tensor and the arithmetic type the
//! kernel computes in (f32 for f32, f16 and bf16; f64 for f64).

use core::mem::MaybeUninit;
use core::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

use half::{bf16, f16};

/// How many elements of a narrow float row are widened at a time (stays in L1).
pub(crate) const CHUNK: usize = 512;

/// The arithmetic type of the kernels.
pub(crate) trait Real:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(value: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp(self) -> Self {
        f32::exp(self)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

/// A tensor element the CPU kernels read and write.
///
/// Implemented for f32, f64, f16 and bf16 only: floats without padding bytes, which the
/// transposes of [`super::transpose`] move as raw bits.
///
/// f32 and f64 are computed on in place ([`native`](CpuElem::native)); f16 and bf16 are widened
/// a piece at a time into stack buffers ([`widen_piece`](CpuElem::widen_piece)). The
/// [`read_chunks`] family of macros picks the path and runs the loops without closures.
pub(crate) trait CpuElem: Copy + Send + Sync + Default + 'static {
    type Real: Real;

    fn to_real(self) -> Self::Real;

    /// `src` itself when the element is its own arithmetic type.
    fn native(src: &[Self]) -> Option<&[Self::Real]>;

    /// `dst` itself when the element is its own arithmetic type.
    fn native_out(dst: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<Self::Real>]>;

    /// `data` itself, writable, when the element is its own arithmetic type.
    fn native_mut(data: &mut [Self]) -> Option<&mut [Self::Real]>;

    /// Widens `src` (at most [`CHUNK`] values, narrow types only) into the front of `buf`;
    /// returns the widened values.
    fn widen_piece<'b>(
        src: &[Self],
        buf: &'b mut [MaybeUninit<Self::Real>; CHUNK],
    ) -> &'b [Self::Real];

    /// Narrows `src` into `dst` (same length; narrow types only).
    fn narrow_piece(src: &[Self::Real], dst: &mut [MaybeUninit<Self>]);
}

/// Runs `$body` with `$chunk` bound to the widened values of `$src`, piece by piece (one
/// piece, the slice itself, for f32 and f64).
///
/// Macros, not functions taking closures: a closure that LLVM does not inline is compiled
/// without the AVX2 features of the kernel around it.
macro_rules! read_chunks {
    ($e:ty, $src:expr, |$chunk:ident| $body:expr) => {
        match <$e as $crate::cpu::elem::CpuElem>::native($src) {
            Some($chunk) => {
                $body;
            }
            None => {
                let mut buf = $crate::cpu::elem::piece_buf::<$e>();
                for piece in $src.chunks($crate::cpu::elem::CHUNK) {
                    let $chunk = <$e as $crate::cpu::elem::CpuElem>::widen_piece(piece, &mut buf);
                    $body;
                }
            }
        }
    };
}

/// [`read_chunks`] over two slices of the same length.
macro_rules! read2_chunks {
    ($e:ty, $a:expr, $b:expr, |$ca:ident, $cb:ident| $body:expr) => {
        match (
            <$e as $crate::cpu::elem::CpuElem>::native($a),
            <$e as $crate::cpu::elem::CpuElem>::native($b),
        ) {
            (Some($ca), Some($cb)) => {
                $body;
            }
            _ => {
                let (mut buf_a, mut buf_b) = (
                    $crate::cpu::elem::piece_buf::<$e>(),
                    $crate::cpu::elem::piece_buf::<$e>(),
                );
                let pieces = $a
                    .chunks($crate::cpu::elem::CHUNK)
                    .zip($b.chunks($crate::cpu::elem::CHUNK));
                for (pa, pb) in pieces {
                    let $ca = <$e as $crate::cpu::elem::CpuElem>::widen_piece(pa, &mut buf_a);
                    let $cb = <$e as $crate::cpu::elem::CpuElem>::widen_piece(pb, &mut buf_b);
                    $body;
                }
            }
        }
    };
}

/// Runs `$body` with `$chunk` the widened values of `$src` and `$out` the matching piece of
/// `$dst`, which must have `$src`'s length (asserted).
///
/// `$body` must write every element of `$out`: for narrow types the macro reads them back to
/// narrow them (and callers take the whole output as written). Every use here writes through
/// equal-length slices or panics.
macro_rules! write_chunks {
    ($e:ty, $src:expr, $dst:expr, |$chunk:ident, $out:ident| $body:expr) => {{
        let (src, dst): (&[$e], &mut [core::mem::MaybeUninit<$e>]) = ($src, $dst);
        assert_eq!(src.len(), dst.len(), "output piece of the input's length");
        match <$e as $crate::cpu::elem::CpuElem>::native(src) {
            Some($chunk) => match <$e as $crate::cpu::elem::CpuElem>::native_out(dst) {
                Some($out) => {
                    $body;
                }
                None => unreachable!("native input, native output"),
            },
            None => {
                let (mut buf_in, mut buf_out) = (
                    $crate::cpu::elem::piece_buf::<$e>(),
                    $crate::cpu::elem::piece_buf::<$e>(),
                );
                let pieces = src
                    .chunks($crate::cpu::elem::CHUNK)
                    .zip(dst.chunks_mut($crate::cpu::elem::CHUNK));
                for (ps, pd) in pieces {
                    let $chunk = <$e as $crate::cpu::elem::CpuElem>::widen_piece(ps, &mut buf_in);
                    {
                        let $out = &mut buf_out[..ps.len()];
                        $body;
                    }
                    // SAFETY: `$body` wrote its whole output piece (the macro's contract).
                    let out = unsafe { $crate::cpu::elem::assume_init_ref(&buf_out[..ps.len()]) };
                    <$e as $crate::cpu::elem::CpuElem>::narrow_piece(out, pd);
                }
            }
        }
    }};
}

/// [`write_chunks`] reading two slices (all three of one length, asserted; the same contract
/// on `$body`).
macro_rules! write2_chunks {
    ($e:ty, $a:expr, $b:expr, $dst:expr, |$ca:ident, $cb:ident, $out:ident| $body:expr) => {{
        let (a, b, dst): (&[$e], &[$e], &mut [core::mem::MaybeUninit<$e>]) = ($a, $b, $dst);
        assert!(
            a.len() == b.len() && b.len() == dst.len(),
            "pieces of one length"
        );
        match (
            <$e as $crate::cpu::elem::CpuElem>::native(a),
            <$e as $crate::cpu::elem::CpuElem>::native(b),
        ) {
            (Some($ca), Some($cb)) => match <$e as $crate::cpu::elem::CpuElem>::native_out(dst) {
                Some($out) => {
                    $body;
                }
                None => unreachable!("native input, native output"),
            },
            _ => {
                let (mut buf_a, mut buf_b, mut buf_out) = (
                    $crate::cpu::elem::piece_buf::<$e>(),
                    $crate::cpu::elem::piece_buf::<$e>(),
                    $crate::cpu::elem::piece_buf::<$e>(),
                );
                let pieces = a
                    .chunks($crate::cpu::elem::CHUNK)
                    .zip(b.chunks($crate::cpu::elem::CHUNK))
                    .zip(dst.chunks_mut($crate::cpu::elem::CHUNK));
                for ((pa, pb), pd) in pieces {
                    let $ca = <$e as $crate::cpu::elem::CpuElem>::widen_piece(pa, &mut buf_a);
                    let $cb = <$e as $crate::cpu::elem::CpuElem>::widen_piece(pb, &mut buf_b);
                    {
                        let $out = &mut buf_out[..pa.len()];
                        $body;
                    }
                    // SAFETY: `$body` wrote its whole output piece (the macro's contract).
                    let out = unsafe { $crate::cpu::elem::assume_init_ref(&buf_out[..pa.len()]) };
                    <$e as $crate::cpu::elem::CpuElem>::narrow_piece(out, pd);
                }
            }
        }
    }};
}

/// An uninitialized buffer for one widened piece (no time spent zeroing it).
#[inline(always)]
pub(crate) fn piece_buf<E: CpuElem>() -> [MaybeUninit<E::Real>; CHUNK] {
    [MaybeUninit::uninit(); CHUNK]
}

pub(crate) use {read_chunks, read2_chunks, write_chunks, write2_chunks};

/// A vector of `len` uninitialized elements, for outputs the kernels write entirely (no time
/// spent zeroing memory that is overwritten anyway).
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

macro_rules! native_elem {
    ($ty:ty) => {
        impl CpuElem for $ty {
            type Real = $ty;

            #[inline(always)]
            fn to_real(self) -> Self::Real {
                self
            }
            #[inline(always)]
            fn native(src: &[Self]) -> Option<&[Self::Real]> {
                Some(src)
            }
            #[inline(always)]
            fn native_out(dst: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<Self::Real>]> {
                Some(dst)
            }
            #[inline(always)]
            fn native_mut(data: &mut [Self]) -> Option<&mut [Self::Real]> {
                Some(data)
            }
            fn widen_piece<'b>(_: &[Self], _: &'b mut [MaybeUninit<Self>; CHUNK]) -> &'b [Self] {
                unreachable!("native elements are read in place")
            }
            fn narrow_piece(_: &[Self], _: &mut [MaybeUninit<Self>]) {
                unreachable!("native elements are written in place")
            }
        }
    };
}

native_elem!(f32);
native_elem!(f64);

macro_rules! half_elem {
    ($ty:ty) => {
        impl CpuElem for $ty {
            type Real = f32;

            #[inline(always)]
            fn to_real(self) -> f32 {
                self.to_f32()
            }
            #[inline(always)]
            fn native(_: &[Self]) -> Option<&[f32]> {
                None
            }
            #[inline(always)]
            fn native_out(_: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<f32>]> {
                None
            }
            #[inline(always)]
            fn native_mut(_: &mut [Self]) -> Option<&mut [f32]> {
                None
            }
            #[inline(always)]
            fn widen_piece<'b>(src: &[Self], buf: &'b mut [MaybeUninit<f32>; CHUNK]) -> &'b [f32] {
                widen(src, buf)
            }
            #[inline(always)]
            fn narrow_piece(src: &[f32], dst: &mut [MaybeUninit<Self>]) {
                <$ty as Half>::narrow(src, dst)
            }
        }
    };
}

half_elem!(f16);
half_elem!(bf16);

/// Widens `src` (at most [`CHUNK`] values) into the front of `buf`; returns the values.
#[inline(always)]
fn widen<'b, T: Half>(src: &[T], buf: &'b mut [MaybeUninit<f32>; CHUNK]) -> &'b [f32] {
    let buf = &mut buf[..src.len()];
    T::widen(src, buf);
    // SAFETY: `widen` wrote every element.
    unsafe { assume_init_ref(buf) }
}

/// # Safety
///
/// Every element of `values` must be initialized.
#[inline(always)]
pub(crate) unsafe fn assume_init_ref<T>(values: &[MaybeUninit<T>]) -> &[T] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`; initialized by the caller's contract.
    unsafe { &*(values as *const [MaybeUninit<T>] as *const [T]) }
}

/// A 16-bit float converted a slice at a time, writing every element of the destination.
///
/// The conversions write into uninitialized buffers (no zeroing per piece) and are
/// vectorized on x86 with AVX2 and F16C ([`lanes`]; half's per-value f16 conversion checks the
/// CPU on every call and stays scalar).
trait Half: Copy {
    fn widen(src: &[Self], dst: &mut [MaybeUninit<f32>]);
    fn narrow(src: &[f32], dst: &mut [MaybeUninit<Self>]);
}

impl Half for f16 {
    #[inline(always)]
    fn widen(src: &[Self], dst: &mut [MaybeUninit<f32>]) {
        assert_eq!(src.len(), dst.len());
        #[cfg(target_arch = "x86_64")]
        if super::simd::lanes_apply::<Self>() {
            // SAFETY: the CPU has AVX2 and F16C (lanes_apply: simd_level).
            return unsafe { lanes::widen(src, dst) };
        }
        for (d, s) in dst.iter_mut().zip(src) {
            d.write(s.to_f32());
        }
    }

    #[inline(always)]
    fn narrow(src: &[f32], dst: &mut [MaybeUninit<Self>]) {
        assert_eq!(src.len(), dst.len());
        #[cfg(target_arch = "x86_64")]
        if super::simd::lanes_apply::<Self>() {
            // SAFETY: the CPU has AVX2 and F16C (lanes_apply: simd_level).
            return unsafe { lanes::narrow(src, dst) };
        }
        for (d, s) in dst.iter_mut().zip(src) {
            d.write(f16::from_f32(*s));
        }
    }
}

impl Half for bf16 {
    #[inline(always)]
    fn widen(src: &[Self], dst: &mut [MaybeUninit<f32>]) {
        assert_eq!(src.len(), dst.len());
        #[cfg(target_arch = "x86_64")]
        if super::simd::lanes_apply::<Self>() {
            // SAFETY: the CPU has AVX2 and F16C (lanes_apply: simd_level).
            return unsafe { lanes::widen(src, dst) };
        }
        for (d, s) in dst.iter_mut().zip(src) {
            d.write(f32::from_bits((s.to_bits() as u32) << 16));
        }
    }

    #[inline(always)]
    fn narrow(src: &[f32], dst: &mut [MaybeUninit<Self>]) {
        assert_eq!(src.len(), dst.len());
        #[cfg(target_arch = "x86_64")]
        if super::simd::lanes_apply::<Self>() {
            // SAFETY: the CPU has AVX2 and F16C (lanes_apply: simd_level).
            return unsafe { lanes::narrow(src, dst) };
        }
        for (d, s) in dst.iter_mut().zip(src) {
            d.write(bf16::from_bits(f32_to_bf16_bits(*s)));
        }
    }
}

/// Round to nearest, ties to even, NaN kept quiet: the rounding of `bf16::from_f32`, written
/// without branches so that loops over it vectorize.
#[inline(always)]
fn f32_to_bf16_bits(value: f32) -> u16 {
    let x = value.to_bits();
    let is_nan = (x & 0x7fff_ffff) > 0x7f80_0000;
    let round_up = (x & 0x8000 != 0) & (x & 0x1_7fff != 0);
    let rounded = ((x >> 16) + round_up as u32) as u16;
    let nan = (x >> 16) as u16 | 0x0040;
    if is_nan { nan } else { rounded }
}

/// Slice conversions 8 values a step through [`super::simd::Lanes`] (F16C for f16, integer
/// shifts and rounding for bf16: LLVM vectorized the scalar bf16 rounding into 128-bit packs
/// and blends).
#[cfg(target_arch = "x86_64")]
mod lanes {
    use core::mem::MaybeUninit;

    use super::super::simd::Lanes;

    /// `dst[i] = src[i]` as f32.
    ///
    /// # Panics
    ///
    /// If the lengths differ.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    pub(super) fn widen<T: Lanes>(src: &[T], dst: &mut [MaybeUninit<f32>]) {
        assert_eq!(src.len(), dst.len());
        let n = src.len();
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr().cast::<f32>());
        let mut i = 0;
        // SAFETY: every access is below `n`, both slices' length; the CPU features are this
        // function's.
        unsafe {
            while i + 8 <= n {
                f32::store(dp.add(i), T::load(sp.add(i)));
                i += 8;
            }
            for j in i..n {
                dp.add(j).write((*sp.add(j)).get());
            }
        }
    }

    /// `dst[i] = src[i]` rounded to `T`.
    ///
    /// # Panics
    ///
    /// If the lengths differ.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    pub(super) fn narrow<T: Lanes>(src: &[f32], dst: &mut [MaybeUninit<T>]) {
        assert_eq!(src.len(), dst.len());
        let n = src.len();
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr().cast::<T>());
        let mut i = 0;
        // SAFETY: every access is below `n`, both slices' length; the CPU features are this
        // function's.
        unsafe {
            while i + 8 <= n {
                T::store(dp.add(i), f32::load(sp.add(i)));
                i += 8;
            }
            for j in i..n {
                dp.add(j).write(T::put(*sp.add(j)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f16 and bf16 bit pattern widens to what half gives, and f32 values around every
    /// rounding boundary narrow to what half gives (the reference conversions).
    #[test]
    fn slice_conversions_match_half() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        // Lengths with and without a tail of fewer than 8 values.
        for len in [all.len(), 1, 3, 7, 8, 9, 15, 49] {
            let bits = if len == all.len() {
                &all[..]
            } else {
                &all[0x3bf0..0x3bf0 + len]
            };
            let h: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
            let mut out = vec![MaybeUninit::<f32>::uninit(); len];
            f16::widen(&h, &mut out);
            for (o, v) in out.iter().zip(&h) {
                // SAFETY: `widen` wrote every element.
                let o = unsafe { o.assume_init() };
                assert!(o.to_bits() == v.to_f32().to_bits() || (o.is_nan() && v.is_nan()));
            }
            let b: Vec<bf16> = bits.iter().map(|&b| bf16::from_bits(b)).collect();
            bf16::widen(&b, &mut out);
            for (o, v) in out.iter().zip(&b) {
                // SAFETY: as above.
                let o = unsafe { o.assume_init() };
                assert!(o.to_bits() == v.to_f32().to_bits() || (o.is_nan() && v.is_nan()));
            }
        }
        // f32 values at, just below and just above each 16-bit value and each midpoint.
        let mut values = Vec::new();
        for bits in (0..=u16::MAX).step_by(7) {
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
        for len in [values.len(), 1, 5, 13, 16, 33] {
            let values = &values[values.len() - len..];
            let mut h = vec![MaybeUninit::<f16>::uninit(); len];
            f16::narrow(values, &mut h);
            let mut b = vec![MaybeUninit::<bf16>::uninit(); len];
            bf16::narrow(values, &mut b);
            for ((v, h), b) in values.iter().zip(&h).zip(&b) {
                // SAFETY: `narrow` wrote every element.
                let (h, b) = unsafe { (h.assume_init(), b.assume_init()) };
                let (rh, rb) = (f16::from_f32(*v), bf16::from_f32(*v));
                let same_h = h.to_bits() == rh.to_bits() || (h.is_nan() && rh.is_nan());
                let same_b = b.to_bits() == rb.to_bits() || (b.is_nan() && rb.is_nan());
                assert!(same_h, "f16 of {v:e}: {h} vs {rh}");
                assert!(same_b, "bf16 of {v:e}: {b} vs {rb}");
            }
        }
    }
}
