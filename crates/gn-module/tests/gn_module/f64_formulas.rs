//! The f32 fused kernels, forward (with its statistics) and backward, against the f64 formulas
//! of [`crate::reference`] on every backend, with each activation: channels-first and
//! channels-last inputs, short rows, one channel per group, long rows, and ranks 2 to 6.
//! PyTorch's fixtures cover the plain normalization; these cover the fused activations'
//! backward and the kernels' row-length and layout paths, at the bound f32 allows.

use burn::tensor::{DType, Device, Tensor};
use gn_module::Activation;
use gn_module::fused::forward_with_stats;

use crate::common::{devices, nhwc, values};
use crate::reference::{ACTIVATIONS, Output, Problem};

/// A layout's name, and how it makes a tensor of it from logical values.
type Layout<'a, const D: usize> = (&'a str, &'a dyn Fn(&[f64], &Device) -> Tensor<D>);

/// Checks the forward op (with its statistics) and the autodiff gradients of `shape` in f32
/// against the f64 formulas, `x` and `dy` made by `layout` from their logical values.
fn check<const D: usize>(
    backend: &str,
    device: &Device,
    shape: [usize; D],
    groups: usize,
    activation: Activation,
    (layout, make): Layout<D>,
) {
    let dtype = DType::F32;
    let problem = Problem::random(&shape, groups, activation, dtype, 61);
    let reference = problem.reference();
    let what = format!("{shape:?} G={groups} {activation:?} {layout} on {backend}");

    let (y, mean, rstd) = forward_with_stats(
        make(&problem.x, device),
        groups,
        problem.gamma_tensor(device, dtype),
        problem.beta_tensor(device, dtype),
        problem.epsilon,
        activation,
    )
    .expect("valid arguments");
    reference.check(
        &format!("(forward op) {what}"),
        Output::Y,
        dtype,
        &values(y),
    );
    reference.check_stats(&what, dtype, &values(mean), &values(rstd));

    let ad = device.clone().autodiff();
    let x = make(&problem.x, &ad).require_grad();
    let gamma = problem.gamma_tensor(&ad, dtype).require_grad();
    let beta = problem.beta_tensor(&ad, dtype).require_grad();
    let y = gn_module::group_norm_with_activation(
        x.clone(),
        groups,
        Some(gamma.clone()),
        Some(beta.clone()),
        problem.epsilon,
        activation,
    );
    let grads = (y.clone() * make(&problem.dy, &ad)).sum().backward();
    reference.check_all(
        &format!("(autodiff) {what}"),
        dtype,
        &[
            values(y),
            values(x.grad(&grads).expect("x has a gradient")),
            values(gamma.grad(&grads).expect("gamma has a gradient")),
            values(beta.grad(&grads).expect("beta has a gradient")),
        ],
    );
}

/// `values` as a contiguous tensor of `shape`.
fn contiguous<const D: usize>(shape: [usize; D]) -> impl Fn(&[f64], &Device) -> Tensor<D> {
    move |v, device| crate::common::tensor(v, shape, device, DType::F32)
}

#[test]
fn f32_fused_forward_and_backward_match_f64_formulas() {
    for (backend, device) in devices() {
        for activation in ACTIVATIONS {
            for (shape, groups) in [
                // Short rows (49 positions), two channels per group.
                ([2, 64, 7, 7], 32),
                // One channel per group.
                ([2, 16, 5, 5], 16),
                // Long rows (4096 positions), groups of 16384 values.
                ([1, 32, 64, 64], 8),
            ] {
                let nhwc_layout =
                    move |v: &[f64], device: &Device| nhwc(v, shape, device, DType::F32);
                for layout in [
                    (
                        "contiguous",
                        &contiguous(shape) as &dyn Fn(&[f64], &Device) -> _,
                    ),
                    ("NHWC", &nhwc_layout),
                ] {
                    check(backend, &device, shape, groups, activation, layout);
                }
            }
            check(
                backend,
                &device,
                [6, 12],
                3,
                activation,
                ("rank 2", &contiguous([6, 12])),
            );
            check(
                backend,
                &device,
                [3, 12, 7],
                3,
                activation,
                ("rank 3", &contiguous([3, 12, 7])),
            );
            check(
                backend,
                &device,
                [2, 8, 3, 4, 5],
                4,
                activation,
                ("rank 5", &contiguous([2, 8, 3, 4, 5])),
            );
            check(
                backend,
                &device,
                [2, 4, 2, 3, 2, 2],
                2,
                activation,
                ("rank 6", &contiguous([2, 4, 2, 3, 2, 2])),
            );
        }
    }
}
