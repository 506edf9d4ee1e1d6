//! `[N, C, S]` views of CubeCL tensors: which layouts the kernels read in place.

use burn_cubecl::kernel::{into_contiguous, untile};
use burn_cubecl::tensor::CubeTensor;
use cubecl::zspace::metadata::Metadata;

/// A rank-3 `[N, C, S]` view (spatial axes collapsed into one stride). Strides of size-1 axes
/// are set to 1 so that kernels can divide by them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View3 {
    pub shape: [usize; 3],
    pub strides: [usize; 3],
}

impl View3 {
    fn of(shape: &[usize], strides: &[usize]) -> Option<Self> {
        let mut ss = 1;
        let mut expected: Option<usize> = None;
        for d in (2..shape.len()).rev() {
            if shape[d] == 1 {
                continue;
            }
            match expected {
                None => ss = strides[d],
                Some(e) if strides[d] != e => return None,
                Some(_) => {}
            }
            expected = Some(strides[d] * shape[d]);
        }
        let spatial = shape[2..].iter().product();
        let fix = |size: usize, stride: usize| if size <= 1 { 1 } else { stride };
        let strides = [
            fix(shape[0], strides[0]),
            fix(shape[1], strides[1]),
            fix(spatial, ss),
        ];
        if strides.contains(&0) {
            return None;
        }
        Some(Self {
            shape: [shape[0], shape[1], spatial],
            strides,
        })
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Channels vary fastest in memory (NHWC-like).
    pub fn channels_last(&self) -> bool {
        self.shape[1] > 1 && self.shape[2] > 1 && self.strides[1] < self.strides[2]
    }

    /// Every element has its own offset in `[0, numel)`: a permutation of a contiguous layout.
    fn is_dense(&self) -> bool {
        let mut axes: Vec<(usize, usize)> = (0..3)
            .filter(|&i| self.shape[i] > 1)
            .map(|i| (self.strides[i], self.shape[i]))
            .collect();
        axes.sort_unstable();
        let mut expected = 1;
        for (stride, size) in axes {
            if stride != expected {
                return false;
            }
            expected *= size;
        }
        true
    }

    /// `t`'s buffer seen through this view.
    pub fn bind(&self, t: &CubeTensor) -> CubeTensor {
        CubeTensor::new(
            t.client.clone(),
            t.handle.clone(),
            Metadata::new(self.shape, self.strides),
            t.device.clone(),
            t.dtype,
        )
    }
}

fn view(t: &CubeTensor) -> Option<View3> {
    View3::of(t.meta.shape(), t.meta.strides())
}

/// `t` if it is dense (any axis order), else a contiguous copy; with its view.
pub(crate) fn dense(t: CubeTensor) -> (CubeTensor, View3) {
    let t = untile(t);
    if let Some(v) = view(&t).filter(View3::is_dense) {
        return (t, v);
    }
    let t = into_contiguous(t);
    let v = view(&t).expect("a contiguous tensor has an [N, C, S] view");
    (t, v)
}

/// `t` if its spatial axes collapse (strided reads are fine), else a contiguous copy.
pub(crate) fn strided(t: CubeTensor) -> (CubeTensor, View3) {
    let t = untile(t);
    if let Some(v) = view(&t) {
        return (t, v);
    }
    let t = into_contiguous(t);
    let v = view(&t).expect("a contiguous tensor has an [N, C, S] view");
    (t, v)
}

/// A new buffer with `like`'s shape and strides (`like` is dense).
pub(crate) fn empty_like(like: &CubeTensor) -> CubeTensor {
    let numel: usize = like.meta.shape().iter().product();
    let handle = like.client.empty(numel * like.dtype.size());
    CubeTensor::new(
        like.client.clone(),
        handle,
        (*like.meta).clone(),
        like.device.clone(),
        like.dtype,
    )
}
