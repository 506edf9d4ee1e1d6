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

    /// `strides` with those of size-1 axes set to 1, as [`View3::of`] sets them.
    fn fixed(&self, strides: [usize; 3]) -> [usize; 3] {
        let mut out = strides;
        for (o, &size) in out.iter_mut().zip(&self.shape) {
            if size <= 1 {
                *o = 1;
            }
        }
        out
    }

    /// Contiguous `[N, C, S]`.
    fn is_channels_first(&self) -> bool {
        let [_, c, s] = self.shape;
        self.strides == self.fixed([c * s, s, 1])
    }

    /// Contiguous `[N, S, C]` seen as `[N, C, S]` (NHWC-strided).
    fn is_channels_last(&self) -> bool {
        let [_, c, s] = self.shape;
        self.strides == self.fixed([s * c, 1, c])
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

/// `t` if it is contiguous channels-first or channels-last, else a contiguous copy; with its
/// view and whether it is channels-last. (With one channel or one position the two layouts
/// coincide; that counts as channels-first.)
pub(crate) fn standard(t: CubeTensor) -> (CubeTensor, View3, bool) {
    let t = untile(t);
    if let Some(v) = view(&t) {
        if v.is_channels_first() {
            return (t, v, false);
        }
        if v.is_channels_last() {
            return (t, v, true);
        }
    }
    contiguous(t)
}

/// `x` as [`standard`] gives it, and `grad` in the same layout: as it is when it already has
/// it, else copied into it (one copy of `grad`; `x` is never copied for `grad`'s sake).
pub(crate) fn standard_pair(
    x: CubeTensor,
    grad: CubeTensor,
) -> (CubeTensor, CubeTensor, View3, bool) {
    let (x, v, channels_last) = standard(x);
    let grad = untile(grad);
    if view(&grad).is_some_and(|g| g.strides == v.strides) {
        return (x, grad, v, channels_last);
    }
    let grad = if channels_last {
        channels_last_copy(grad)
    } else {
        into_contiguous(grad)
    };
    (x, grad, v, channels_last)
}

/// `t` (`[N, C, *]`) copied into an `[N, *, C]`-ordered buffer, seen as `[N, C, *]`.
fn channels_last_copy(t: CubeTensor) -> CubeTensor {
    let (t, v) = match view(&t) {
        Some(v) => (t, v),
        None => {
            let (t, v, _) = contiguous(t);
            (t, v)
        }
    };
    let [n, c, s] = v.shape;
    let [sn, sc, ss] = v.strides;
    let nsc = CubeTensor::new(
        t.client.clone(),
        t.handle.clone(),
        Metadata::new([n, s, c], [sn, ss, sc]),
        t.device.clone(),
        t.dtype,
    );
    let copy = into_contiguous(nsc);
    let shape = t.meta.shape().to_vec();
    let mut strides = vec![0; shape.len()];
    // Channels last in memory: spatial axes outermost-first after the batch, channels fastest.
    let mut stride = c;
    for d in (2..shape.len()).rev() {
        strides[d] = stride;
        stride *= shape[d];
    }
    strides[1] = 1;
    strides[0] = stride;
    CubeTensor::new(
        copy.client.clone(),
        copy.handle.clone(),
        Metadata::new(shape, strides),
        copy.device.clone(),
        copy.dtype,
    )
}

fn contiguous(t: CubeTensor) -> (CubeTensor, View3, bool) {
    let t = into_contiguous(t);
    let v = view(&t).expect("a contiguous tensor has an [N, C, S] view");
    (t, v, false)
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
