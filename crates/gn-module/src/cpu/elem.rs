//! Element types of the CPU kernels: the storage type of a tensor and the arithmetic type the
//! kernel computes in (f32 for f32, f16 and bf16; f64 for f64).

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
/// The chunk helpers hand the kernels slices of [`Real`] values: the tensor's own memory for
/// f32 and f64 (no copy), small widened buffers for f16 and bf16.
pub(crate) trait CpuElem: Copy + Send + Sync + Default + 'static {
    type Real: Real;

    fn to_real(self) -> Self::Real;

    /// Calls `f` on consecutive pieces of `src`, widened.
    fn for_chunks(src: &[Self], f: impl FnMut(&[Self::Real]));

    /// Calls `f` on consecutive pieces of `a` and `b` (same length), widened.
    fn zip_chunks(a: &[Self], b: &[Self], f: impl FnMut(&[Self::Real], &[Self::Real]));

    /// Calls `f` on pieces of `src` and fills `dst` (same length) with what it writes.
    fn map_chunks(src: &[Self], dst: &mut [Self], f: impl FnMut(&[Self::Real], &mut [Self::Real]));

    /// Calls `f` on pieces of `a` and `b` and fills `dst` (all the same length).
    fn zip_map_chunks(
        a: &[Self],
        b: &[Self],
        dst: &mut [Self],
        f: impl FnMut(&[Self::Real], &[Self::Real], &mut [Self::Real]),
    );
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
                dst: &mut [Self],
                mut f: impl FnMut(&[Self::Real], &mut [Self::Real]),
            ) {
                f(src, dst)
            }
            #[inline(always)]
            fn zip_map_chunks(
                a: &[Self],
                b: &[Self],
                dst: &mut [Self],
                mut f: impl FnMut(&[Self::Real], &[Self::Real], &mut [Self::Real]),
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
            fn map_chunks(src: &[Self], dst: &mut [Self], mut f: impl FnMut(&[f32], &mut [f32])) {
                let (mut buf_in, mut buf_out) = ([0f32; CHUNK], [0f32; CHUNK]);
                for (ps, pd) in src.chunks(CHUNK).zip(dst.chunks_mut(CHUNK)) {
                    let (bi, bo) = (&mut buf_in[..ps.len()], &mut buf_out[..ps.len()]);
                    ps.convert_to_f32_slice(bi);
                    f(bi, bo);
                    pd.convert_from_f32_slice(bo);
                }
            }
            fn zip_map_chunks(
                a: &[Self],
                b: &[Self],
                dst: &mut [Self],
                mut f: impl FnMut(&[f32], &[f32], &mut [f32]),
            ) {
                let (mut buf_a, mut buf_b, mut buf_out) =
                    ([0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK]);
                for ((pa, pb), pd) in a
                    .chunks(CHUNK)
                    .zip(b.chunks(CHUNK))
                    .zip(dst.chunks_mut(CHUNK))
                {
                    let n = pa.len();
                    pa.convert_to_f32_slice(&mut buf_a[..n]);
                    pb.convert_to_f32_slice(&mut buf_b[..n]);
                    f(&buf_a[..n], &buf_b[..n], &mut buf_out[..n]);
                    pd.convert_from_f32_slice(&buf_out[..n]);
                }
            }
        }
    };
}

half_elem!(f16);
half_elem!(bf16);
