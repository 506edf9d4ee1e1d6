//! The Flex backend's adapter to the CPU kernels.

use burn::backend::Flex;
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::tensor::{Bytes, DType, Element, Shape, bf16, f16};

use super::{CpuElem, Order, View};
use crate::backend::{GroupNormBackend, assert_backward_args, assert_forward_args, stats_dtype};
use crate::probe::{self, Kernel, Path};

impl GroupNormBackend for Flex {
    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        num_groups: usize,
        epsilon: f64,
        activation: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        assert_forward_args(&x, &gamma, &beta, num_groups, epsilon, activation);
        probe::hit(Kernel::Flex, Path::Forward);
        let (gamma, beta) = (to_f64(&gamma), to_f64(&beta));
        // Nothing else holds the input (inference): normalize it in place, no new buffer.
        let x = match forward_in_place(x, num_groups, &gamma, &beta, epsilon, activation) {
            Ok(out) => {
                probe::hit(Kernel::Flex, Path::ForwardInPlace);
                return out;
            }
            Err(x) => x,
        };
        let x = readable(x);
        macro_rules! run {
            ($e:ty) => {{
                let view = view_of::<$e>(&x).expect("readable");
                let out = super::forward(&view, num_groups, &gamma, &beta, epsilon, activation);
                let y = dense(out.y, view_shape(&x), out.order, x.dtype());
                let stats_shape = [view.n, num_groups];
                (
                    y,
                    floats(out.mean, &stats_shape, stats_dtype(x.dtype())),
                    floats(out.rstd, &stats_shape, stats_dtype(x.dtype())),
                )
            }};
        }
        dispatch_float!(x.dtype(), run)
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
        probe::hit(Kernel::Flex, Path::Backward);
        let param_dtype = gamma.dtype();
        let (gamma, beta, rstd) = (to_f64(&gamma), to_f64(&beta), to_f64(&rstd));
        let grad = grad.cast_like(&x);
        let (x, grad) = same_order(readable(x), readable(grad));
        let grad = match backward_in_place(grad, &x, num_groups, &rstd, &gamma, &beta, activation) {
            Ok((dx, dgamma, dbeta)) => {
                probe::hit(Kernel::Flex, Path::BackwardInPlace);
                let c = dgamma.len();
                return (
                    dx,
                    floats(dgamma, &[c], param_dtype),
                    floats(dbeta, &[c], param_dtype),
                );
            }
            Err(grad) => grad,
        };
        macro_rules! run {
            ($e:ty) => {{
                let (xv, gv) = (view_of::<$e>(&x).unwrap(), view_of::<$e>(&grad).unwrap());
                let out = super::backward(&xv, &gv, num_groups, &rstd, &gamma, &beta, activation);
                let c = xv.c;
                (
                    dense(out.dx, view_shape(&x), out.order, x.dtype()),
                    floats(out.dgamma, &[c], param_dtype),
                    floats(out.dbeta, &[c], param_dtype),
                )
            }};
        }
        dispatch_float!(x.dtype(), run)
    }
}

/// `x` and `grad` (both readable), the channels-last one copied channels-first when the
/// kernels would read them in different orders (see `transpose`).
fn same_order(x: FlexTensor, grad: FlexTensor) -> (FlexTensor, FlexTensor) {
    if order(&x) != order(&grad) {
        (channels_first_copy(x), channels_first_copy(grad))
    } else {
        (x, grad)
    }
}

/// The order the kernels read `t` in, if any.
fn order(t: &FlexTensor) -> Option<Order> {
    macro_rules! run {
        ($e:ty) => {
            view_of::<$e>(t).and_then(|v| v.order())
        };
    }
    dispatch_float!(t.dtype(), run)
}

/// A channels-last `t` as a dense channels-first tensor; any other `t` unchanged.
fn channels_first_copy(t: FlexTensor) -> FlexTensor {
    macro_rules! run {
        ($e:ty) => {{
            let copy = view_of::<$e>(&t)
                .filter(|v| v.order() == Some(Order::ChannelsLast))
                .map(|v| super::channels_first_copy(&v));
            match copy {
                Some(values) => dense(values, view_shape(&t), Order::ChannelsFirst, t.dtype()),
                None => t,
            }
        }};
    }
    dispatch_float!(t.dtype(), run)
}

/// The contiguous storage of `t` when nothing else references it.
fn unique_contiguous<E: Element + bytemuck::Pod>(t: &mut FlexTensor) -> Option<&mut [E]> {
    let (start, end) = t.layout().contiguous_offsets()?;
    t.try_storage_mut::<E>().map(|data| &mut data[start..end])
}

type Triple = (FlexTensor, FlexTensor, FlexTensor);

/// The forward pass over `x`'s own storage, if `x` is a contiguous tensor that nothing else
/// references, else `x` back.
fn forward_in_place(
    x: FlexTensor,
    num_groups: usize,
    gamma: &[f64],
    beta: &[f64],
    epsilon: f64,
    activation: u32,
) -> Result<Triple, FlexTensor> {
    let mut x = x;
    let shape = super::ncs(x.layout().shape());
    let dtype = x.dtype();
    macro_rules! run {
        ($e:ty) => {{
            let Some(data) = unique_contiguous::<$e>(&mut x) else {
                return Err(x);
            };
            super::forward_inplace(data, shape, num_groups, gamma, beta, epsilon, activation)
        }};
    }
    let (mean, rstd) = dispatch_float!(dtype, run, _other => return Err(x));
    let stats = [shape[0], num_groups];
    Ok((
        x,
        floats(mean, &stats, stats_dtype(dtype)),
        floats(rstd, &stats, stats_dtype(dtype)),
    ))
}

/// The backward pass writing `dx` over `grad`'s storage, if `grad` is a contiguous tensor that
/// nothing else references,
/// and `x` is channels-first; else `grad` back.
#[allow(clippy::too_many_arguments)]
fn backward_in_place(
    grad: FlexTensor,
    x: &FlexTensor,
    num_groups: usize,
    rstd: &[f64],
    gamma: &[f64],
    beta: &[f64],
    activation: u32,
) -> Result<(FlexTensor, Vec<f64>, Vec<f64>), FlexTensor> {
    let mut grad = grad;
    macro_rules! run {
        ($e:ty) => {{
            let Some(xv) = view_of::<$e>(x).filter(|v| v.order() == Some(Order::ChannelsFirst))
            else {
                return Err(grad);
            };
            let Some(data) = unique_contiguous::<$e>(&mut grad) else {
                return Err(grad);
            };
            let (dgamma, dbeta) =
                super::backward_inplace(&xv, data, num_groups, rstd, gamma, beta, activation);
            Ok((grad, dgamma, dbeta))
        }};
    }
    dispatch_float!(grad.dtype(), run, _other => Err(grad))
}

/// Runs `$run!(T)` with the Rust element type of a float dtype; other dtypes give
/// `$fallback` (by default a panic).
macro_rules! dispatch_float {
    ($dtype:expr, $run:ident) => {
        dispatch_float!($dtype, $run, other => panic!(
            "GroupNorm: unsupported dtype {other:?} on the Flex backend"
        ))
    };
    ($dtype:expr, $run:ident, $other:ident => $fallback:expr) => {
        match $dtype {
            DType::F32 => $run!(f32),
            DType::F64 => $run!(f64),
            DType::F16 => $run!(f16),
            DType::BF16 => $run!(bf16),
            $other => $fallback,
        }
    };
}
use dispatch_float;

trait CastLike {
    fn cast_like(self, other: &FlexTensor) -> FlexTensor;
}

impl CastLike for FlexTensor {
    /// The output gradient normally has the input's dtype; cast defensively if not.
    fn cast_like(self, other: &FlexTensor) -> FlexTensor {
        if self.dtype() == other.dtype() {
            self
        } else {
            use burn::backend::ops::FloatTensorOps;
            Flex::float_cast(self, other.dtype().into())
        }
    }
}

fn view_shape(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().to_vec()
}

fn view_of<E: CpuElem + Element + bytemuck::Pod>(t: &FlexTensor) -> Option<View<'_, E>> {
    let layout = t.layout();
    super::view(
        t.storage::<E>(),
        layout.start_offset(),
        layout.shape(),
        layout.strides(),
    )
}

/// The tensor itself if the kernels can read it in place, else a contiguous copy.
fn readable(t: FlexTensor) -> FlexTensor {
    macro_rules! run {
        ($e:ty) => {
            view_of::<$e>(&t).is_some()
        };
    }
    let readable = dispatch_float!(t.dtype(), run, _other => true);
    if readable { t } else { t.to_contiguous() }
}

fn dense<E: bytemuck::Pod + Send + Sync>(
    values: Vec<E>,
    shape: Vec<usize>,
    order: Order,
    dtype: DType,
) -> FlexTensor {
    let strides = super::dense_strides(&shape, order)
        .into_iter()
        .map(|s| s as isize)
        .collect();
    let layout = Layout::new(Shape::from(shape), strides, 0);
    FlexTensor::new(Bytes::from_elems(values), layout, dtype)
}

/// Values computed in f64 as a contiguous tensor of `dtype`.
fn floats(values: Vec<f64>, shape: &[usize], dtype: DType) -> FlexTensor {
    let shape = shape.to_vec();
    match dtype {
        DType::F64 => dense(values, shape, Order::ChannelsFirst, dtype),
        DType::F16 => {
            let v: Vec<f16> = values.into_iter().map(f16::from_f64).collect();
            dense(v, shape, Order::ChannelsFirst, dtype)
        }
        DType::BF16 => {
            let v: Vec<bf16> = values.into_iter().map(bf16::from_f64).collect();
            dense(v, shape, Order::ChannelsFirst, dtype)
        }
        _ => {
            let v: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
            dense(v, shape, Order::ChannelsFirst, DType::F32)
        }
    }
}

/// A small float tensor's values as f64 (any float dtype, any layout).
fn to_f64(t: &FlexTensor) -> Vec<f64> {
    let t = t.to_contiguous();
    fn slice<E: Element + bytemuck::Pod>(t: &FlexTensor) -> &[E] {
        t.as_slice::<E>().expect("contiguous after to_contiguous")
    }
    match t.dtype() {
        DType::F32 => slice::<f32>(&t).iter().map(|&v| v as f64).collect(),
        DType::F64 => slice::<f64>(&t).to_vec(),
        DType::F16 => slice::<f16>(&t).iter().map(|v| v.to_f64()).collect(),
        DType::BF16 => slice::<bf16>(&t).iter().map(|v| v.to_f64()).collect(),
        other => panic!("GroupNorm: unsupported parameter dtype {other:?}"),
    }
}
