//! The NdArray backend's adapter to the CPU kernels (f32 and f64: the dtypes NdArray has).
//!
//! burn-ndarray is deprecated upstream; it stays supported here because users still run it.
#![allow(deprecated)]

use burn::backend::NdArray;
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::tensor::FloatTensor;
use ndarray::{ArrayD, ArrayViewD, IxDyn, ShapeBuilder};

use super::simd::Real;
use super::{CpuElem, Order, View};
use crate::backend::{GroupNormBackend, assert_backward_args, assert_forward_args};
use crate::probe::{self, Kernel, Path};

impl GroupNormBackend for NdArray {
    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        num_groups: usize,
        epsilon: f64,
        activation: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        assert_forward_args(&x, &gamma, &beta, num_groups, epsilon, activation);
        probe::hit(Kernel::NdArray, Path::Forward);
        let (gamma, beta) = (to_f64(gamma), to_f64(beta));
        macro_rules! run {
            ($storage:expr, $e:ty) => {{
                let array = $storage.view();
                with_view(array.view(), |view: View<'_, $e>| {
                    let out = super::forward(&view, num_groups, &gamma, &beta, epsilon, activation);
                    (
                        dense(out.y, array.shape(), out.order),
                        stats::<$e>(out.mean, num_groups),
                        stats::<$e>(out.rstd, num_groups),
                    )
                })
            }};
        }
        // Nothing else holds the input (inference): normalize it in place, no new buffer.
        macro_rules! in_place {
            ($storage:expr, $e:ty) => {{
                probe::hit(Kernel::NdArray, Path::ForwardInPlace);
                let mut array = $storage.into_owned();
                let shape = super::ncs(array.shape());
                let data = array.as_slice_mut().expect("standard layout");
                let (mean, rstd) = super::forward_inplace::<$e>(
                    data, shape, num_groups, &gamma, &beta, epsilon, activation,
                );
                let stats = |v| stats::<$e>(v, num_groups);
                (NdArrayTensor::from(array), stats(mean), stats(rstd))
            }};
        }
        match x {
            NdArrayTensor::F32(storage) if overwritable(&storage.view(), storage.is_unique()) => {
                in_place!(storage, f32)
            }
            NdArrayTensor::F64(storage) if overwritable(&storage.view(), storage.is_unique()) => {
                in_place!(storage, f64)
            }
            NdArrayTensor::F32(storage) => run!(storage, f32),
            NdArrayTensor::F64(storage) => run!(storage, f64),
            other => panic!("GroupNorm: unsupported dtype {other:?} on the NdArray backend"),
        }
    }

    fn group_norm_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        num_groups: usize,
        activation: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        assert_backward_args(
            &grad, &x, &gamma, &beta, &mean, &rstd, num_groups, activation,
        );
        probe::hit(Kernel::NdArray, Path::Backward);
        let (x, grad) = same_order(x, grad);
        let gamma_is_f64 = matches!(gamma, NdArrayTensor::F64(_));
        let (gamma, beta, rstd) = (to_f64(gamma), to_f64(beta), to_f64(rstd));
        let params = |values: Vec<f64>| -> NdArrayTensor {
            let c = values.len();
            if gamma_is_f64 {
                dense(values, &[c], Order::ChannelsFirst)
            } else {
                dense(
                    values.into_iter().map(|v| v as f32).collect(),
                    &[c],
                    Order::ChannelsFirst,
                )
            }
        };
        macro_rules! run {
            ($xs:expr, $gs:expr, $e:ty) => {{
                let (xa, ga) = ($xs.view(), $gs.view());
                let run = |xa: ArrayViewD<'_, $e>, ga: ArrayViewD<'_, $e>| {
                    with_view(xa.view(), |xv: View<'_, $e>| {
                        with_view(ga.view(), |gv: View<'_, $e>| {
                            let out = super::backward(
                                &xv, &gv, num_groups, &rstd, &gamma, &beta, activation,
                            );
                            let dx = dense(out.dx, xa.shape(), out.order);
                            (dx, params(out.dgamma), params(out.dbeta))
                        })
                    })
                };
                if order_of(&xa).is_some() && order_of(&xa) == order_of(&ga) {
                    run(xa, ga)
                } else {
                    // Different memory orders: read both in the standard (NCHW) order.
                    let (xs, gs) = (xa.as_standard_layout(), ga.as_standard_layout());
                    run(xs.view(), gs.view())
                }
            }};
        }
        // Nothing else holds the output gradient (the usual case): write dx over it.
        macro_rules! in_place {
            ($xs:expr, $gs:expr, $e:ty) => {{
                probe::hit(Kernel::NdArray, Path::BackwardInPlace);
                let xa = $xs.view();
                let mut array = $gs.into_owned();
                let data = array.as_slice_mut().expect("standard layout");
                let (dgamma, dbeta) = with_view(xa, |xv: View<'_, $e>| {
                    super::backward_inplace(&xv, data, num_groups, &rstd, &gamma, &beta, activation)
                });
                (NdArrayTensor::from(array), params(dgamma), params(dbeta))
            }};
        }
        match (x, grad) {
            (NdArrayTensor::F32(xs), NdArrayTensor::F32(gs))
                if channels_first(&xs.view()) && overwritable(&gs.view(), gs.is_unique()) =>
            {
                in_place!(xs, gs, f32)
            }
            (NdArrayTensor::F64(xs), NdArrayTensor::F64(gs))
                if channels_first(&xs.view()) && overwritable(&gs.view(), gs.is_unique()) =>
            {
                in_place!(xs, gs, f64)
            }
            (NdArrayTensor::F32(xs), NdArrayTensor::F32(gs)) => run!(xs, gs, f32),
            (NdArrayTensor::F64(xs), NdArrayTensor::F64(gs)) => run!(xs, gs, f64),
            (x, grad) => panic!(
                "GroupNorm: unsupported dtypes on the NdArray backend (x {:?}, grad {:?})",
                burn::backend::TensorMetadata::dtype(&x),
                burn::backend::TensorMetadata::dtype(&grad)
            ),
        }
    }
}

/// `x` and `grad`, the channels-last one copied channels-first when the kernels would read
/// them in different orders (see `transpose`).
fn same_order(x: NdArrayTensor, grad: NdArrayTensor) -> (NdArrayTensor, NdArrayTensor) {
    let order = |t: &NdArrayTensor| match t {
        NdArrayTensor::F32(s) => order_of(&s.view()),
        NdArrayTensor::F64(s) => order_of(&s.view()),
        _ => None,
    };
    match (order(&x), order(&grad)) {
        (Some(a), Some(b)) if a != b => (channels_first_copy(x), channels_first_copy(grad)),
        _ => (x, grad),
    }
}

/// A channels-last `t` as a dense channels-first tensor; any other `t` unchanged.
fn channels_first_copy(t: NdArrayTensor) -> NdArrayTensor {
    fn copy<E: CpuElem>(array: ArrayViewD<'_, E>) -> Option<(Vec<E>, Vec<usize>)> {
        let view = kernel_view(&array).filter(|v| v.order() == Some(Order::ChannelsLast))?;
        Some((super::channels_first_copy(&view), array.shape().to_vec()))
    }
    match &t {
        NdArrayTensor::F32(s) => match copy(s.view()) {
            Some((values, shape)) => dense(values, &shape, Order::ChannelsFirst),
            None => t,
        },
        NdArrayTensor::F64(s) => match copy(s.view()) {
            Some((values, shape)) => dense(values, &shape, Order::ChannelsFirst),
            None => t,
        },
        _ => t,
    }
}

/// Whether a tensor's storage can be overwritten by the in-place kernels: nothing else
/// references it (`unique`; borrowed storage never is) and it is dense NCHW.
fn overwritable<E>(array: &ArrayViewD<'_, E>, unique: bool) -> bool {
    unique && array.ndim() >= 2 && array.is_standard_layout()
}

/// Whether the kernels read `array` channels-first without a copy.
fn channels_first<E: CpuElem>(array: &ArrayViewD<'_, E>) -> bool {
    order_of(array) == Some(Order::ChannelsFirst)
}

/// `array` as a kernel [`View`] of its storage, if the kernels can read it without a copy.
fn kernel_view<'a, E>(array: &'a ArrayViewD<'_, E>) -> Option<View<'a, E>> {
    array
        .as_slice_memory_order()
        .and_then(|s| super::view(s, 0, array.shape(), array.strides()))
}

/// The memory order the kernels would read `array` in without a copy.
fn order_of<E: CpuElem>(array: &ArrayViewD<'_, E>) -> Option<Order> {
    kernel_view(array).and_then(|v| v.order())
}

/// Calls `f` with a kernel view of `array`, copying it to the standard layout first if the
/// kernels cannot read it in place.
fn with_view<E: CpuElem, R>(array: ArrayViewD<'_, E>, f: impl FnOnce(View<'_, E>) -> R) -> R {
    if let Some(view) = kernel_view(&array) {
        return f(view);
    }
    let owned = array.as_standard_layout().into_owned();
    let strides: Vec<isize> = super::dense_strides(owned.shape(), Order::ChannelsFirst)
        .into_iter()
        .map(|s| s as isize)
        .collect();
    let slice = owned.as_slice().expect("standard layout is contiguous");
    f(super::view(slice, 0, owned.shape(), &strides).expect("contiguous tensors are readable"))
}

fn dense<E: Clone>(values: Vec<E>, shape: &[usize], order: Order) -> NdArrayTensor
where
    NdArrayTensor: From<ndarray::ArcArray<E, IxDyn>>,
{
    let strides = super::dense_strides(shape, order);
    let array = ArrayD::from_shape_vec(IxDyn(shape).strides(IxDyn(&strides)), values)
        .expect("dense strides fit the values");
    NdArrayTensor::from(array.into_shared())
}

/// Per-`(n, g)` statistics computed in f64 as an `[N, G]` tensor of element `E`.
fn stats<E: Real>(values: Vec<f64>, num_groups: usize) -> NdArrayTensor
where
    NdArrayTensor: From<ndarray::ArcArray<E, IxDyn>>,
{
    let shape = [values.len() / num_groups, num_groups];
    let values = values.into_iter().map(E::from_f64).collect();
    dense::<E>(values, &shape, Order::ChannelsFirst)
}

/// A small tensor's values as f64, in logical order.
fn to_f64(t: NdArrayTensor) -> Vec<f64> {
    // ndarray's element iterator over dynamic-rank arrays costs about as much per value as a
    // whole GroupNorm row on small inputs: read contiguous (the usual) arrays as slices.
    fn collect<E: Copy>(a: ArrayViewD<'_, E>, f: impl Fn(E) -> f64) -> Vec<f64> {
        match a.as_slice() {
            Some(values) => values.iter().map(|&v| f(v)).collect(),
            None => a.iter().map(|&v| f(v)).collect(),
        }
    }
    match t {
        NdArrayTensor::F32(s) => collect(s.view(), |v| v as f64),
        NdArrayTensor::F64(s) => collect(s.view(), |v| v),
        other => panic!("GroupNorm: unsupported parameter dtype {other:?}"),
    }
}
