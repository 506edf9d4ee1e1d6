//! Element types of the CPU kernels: the storage type of a tensor and the arithmetic type the
//! kernel computes in (f32 for f32, f16 and bf16; f64 for f64).

use core::mem::MaybeUninit;
use core::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// How many elements of a narrow float row are widened at a time (stays in L1).
const CHUNK: usize = 512;

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
/// f32 and f64 are computed on in place ([`native`](CpuElem::native)); f16 and bf16 go through
/// the chunk helpers, which widen small pieces into buffers. The [`read_chunks`] family of
/// macros picks the path, so the native one has no closure in the way of inlining.
pub(crate) trait CpuElem: Copy + Send + Sync + Default + 'static {
    type Real: Real;

    fn to_real(self) -> Self::Real;

    /// `src` itself when the element is its own arithmetic type.
    fn native(src: &[Self]) -> Option<&[Self::Real]>;

    /// `dst` itself when the element is its own arithmetic type.
    fn native_out(dst: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<Self::Real>]>;

    /// `data` itself, writable, when the element is its own arithmetic type.
    fn native_mut(data: &mut [Self]) -> Option<&mut [Self::Real]>;

    /// Calls `f` on consecutive pieces of `src`, widened.
    fn for_chunks(src: &[Self], f: impl FnMut(&[Self::Real]));

    /// Calls `f` on consecutive pieces of `a` and `b` (same length), widened.
    fn zip_chunks(a: &[Self], b: &[Self], f: impl FnMut(&[Self::Real], &[Self::Real]));

    /// Calls `f` on pieces of `src` and fills `dst` (same length) with what it writes.
    fn map_chunks(
        src: &[Self],
        dst: &mut [MaybeUninit<Self>],
        f: impl FnMut(&[Self::Real], &mut [MaybeUninit<Self::Real>]),
    );

    /// Calls `f` on pieces of `a` and `b` and fills `dst` (all the same length).
    fn zip_map_chunks(
        a: &[Self],
        b: &[Self],
        dst: &mut [MaybeUninit<Self>],
        f: impl FnMut(&[Self::Real], &[Self::Real], &mut [MaybeUninit<Self::Real>]),
    );
}

/// Runs `$body` with `$chunk` bound to the widened values of `$src`, piece by piece (one
/// piece, the slice itself, for f32 and f64).
macro_rules! read_chunks {
    ($e:ty, $src:expr, |$chunk:ident| $body:expr) => {
        match <$e as $crate::cpu::elem::CpuElem>::native($src) {
            Some($chunk) => {
                $body;
            }
            None => <$e as $crate::cpu::elem::CpuElem>::for_chunks($src, |$chunk| {
                $body;
            }),
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
            _ => <$e as $crate::cpu::elem::CpuElem>::zip_chunks($a, $b, |$ca, $cb| {
                $body;
            }),
        }
    };
}

/// Runs `$body` with `$chunk` the widened values of `$src` and `$out` the matching piece of
/// `$dst` (which `$body` must write entirely).
macro_rules! write_chunks {
    ($e:ty, $src:expr, $dst:expr, |$chunk:ident, $out:ident| $body:expr) => {
        match <$e as $crate::cpu::elem::CpuElem>::native($src) {
            Some($chunk) => match <$e as $crate::cpu::elem::CpuElem>::native_out($dst) {
                Some($out) => {
                    $body;
                }
                None => unreachable!("native input, native output"),
            },
            None => <$e as $crate::cpu::elem::CpuElem>::map_chunks($src, $dst, |$chunk, $out| {
                $body;
            }),
        }
    };
}

/// [`write_chunks`] reading two slices.
macro_rules! write2_chunks {
    ($e:ty, $a:expr, $b:expr, $dst:expr, |$ca:ident, $cb:ident, $out:ident| $body:expr) => {
        match (
            <$e as $crate::cpu::elem::CpuElem>::native($a),
            <$e as $crate::cpu::elem::CpuElem>::native($b),
        ) {
            (Some($ca), Some($cb)) => match <$e as $crate::cpu::elem::CpuElem>::native_out($dst) {
                Some($out) => {
                    $body;
                }
                None => unreachable!("native input, native output"),
            },
            _ => <$e as $crate::cpu::elem::CpuElem>::zip_map_chunks(
                $a,
                $b,
                $dst,
                |$ca, $cb, $out| {
                    $body;
                },
            ),
        }
    };
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
            #[inline(always)]
            fn for_chunks(src: &[Self], mut f: impl FnMut(&[Self::Real])) {
                f(src)
            }
            #[inline(always)]
            fn zip_chunks(a: &[Self], b: &[Self], mut f: impl FnMut(&[Self::Real], &[Self::Real])) {
                f(a, b)
            }
            #[inline(always)]
            fn map_chunks(
                src: &[Self],
                dst: &mut [MaybeUninit<Self>],
                mut f: impl FnMut(&[Self::Real], &mut [MaybeUninit<Self::Real>]),
            ) {
                f(src, dst)
            }
            #[inline(always)]
            fn zip_map_chunks(
                a: &[Self],
                b: &[Self],
                dst: &mut [MaybeUninit<Self>],
                mut f: impl FnMut(&[Self::Real], &[Self::Real], &mut [MaybeUninit<Self::Real>]),
            ) {
                f(a, b, dst)
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
            fn for_chunks(src: &[Self], mut f: impl FnMut(&[f32])) {
                let mut buf = [0f32; CHUNK];
                for piece in src.chunks(CHUNK) {
                    let buf = &mut buf[..piece.len()];
                    piece.convert_to_f32_slice(buf);
                    f(buf);
                }
            }
            fn zip_chunks(a: &[Self], b: &[Self], mut f: impl FnMut(&[f32], &[f32])) {
                let (mut buf_a, mut buf_b) = ([0f32; CHUNK], [0f32; CHUNK]);
                for (pa, pb) in a.chunks(CHUNK).zip(b.chunks(CHUNK)) {
                    let (ba, bb) = (&mut buf_a[..pa.len()], &mut buf_b[..pb.len()]);
                    pa.convert_to_f32_slice(ba);
                    pb.convert_to_f32_slice(bb);
                    f(ba, bb);
                }
            }
            fn map_chunks(
                src: &[Self],
                dst: &mut [MaybeUninit<Self>],
                mut f: impl FnMut(&[f32], &mut [MaybeUninit<f32>]),
            ) {
                let mut buf_in = [0f32; CHUNK];
                let mut buf_out = [MaybeUninit::<f32>::uninit(); CHUNK];
                for (ps, pd) in src.chunks(CHUNK).zip(dst.chunks_mut(CHUNK)) {
                    let n = ps.len();
                    ps.convert_to_f32_slice(&mut buf_in[..n]);
                    f(&buf_in[..n], &mut buf_out[..n]);
                    narrow(&buf_out[..n], pd);
                }
            }
            fn zip_map_chunks(
                a: &[Self],
                b: &[Self],
                dst: &mut [MaybeUninit<Self>],
                mut f: impl FnMut(&[f32], &[f32], &mut [MaybeUninit<f32>]),
            ) {
                let (mut buf_a, mut buf_b) = ([0f32; CHUNK], [0f32; CHUNK]);
                let mut buf_out = [MaybeUninit::<f32>::uninit(); CHUNK];
                for ((pa, pb), pd) in a
                    .chunks(CHUNK)
                    .zip(b.chunks(CHUNK))
                    .zip(dst.chunks_mut(CHUNK))
                {
                    let n = pa.len();
                    pa.convert_to_f32_slice(&mut buf_a[..n]);
                    pb.convert_to_f32_slice(&mut buf_b[..n]);
                    f(&buf_a[..n], &buf_b[..n], &mut buf_out[..n]);
                    narrow(&buf_out[..n], pd);
                }
            }
        }
    };
}

half_elem!(f16);
half_elem!(bf16);

/// Writes the f32 values a kernel produced (at most [`CHUNK`]) into a narrow output.
///
/// Converts the whole piece at once: half's slice conversion uses F16C on x86, where its
/// per-value conversion checks the CPU on every call and stays scalar (5x slower f16 kernels).
#[inline(always)]
fn narrow<T: Narrow>(values: &[MaybeUninit<f32>], dst: &mut [MaybeUninit<T>]) {
    // SAFETY: the kernels write their whole output piece before it is narrowed, and
    // `MaybeUninit<f32>` has the layout of `f32`.
    let values = unsafe { &*(values as *const [MaybeUninit<f32>] as *const [f32]) };
    let mut narrow = [T::ZERO; CHUNK];
    let narrow = &mut narrow[..values.len()];
    T::from_f32_slice(values, narrow);
    for (d, v) in dst.iter_mut().zip(narrow.iter()) {
        d.write(*v);
    }
}

trait Narrow: Copy {
    const ZERO: Self;
    fn from_f32_slice(src: &[f32], dst: &mut [Self]);
}

impl Narrow for f16 {
    const ZERO: Self = f16::ZERO;
    #[inline(always)]
    fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
}

impl Narrow for bf16 {
    const ZERO: Self = bf16::ZERO;
    #[inline(always)]
    fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
}
