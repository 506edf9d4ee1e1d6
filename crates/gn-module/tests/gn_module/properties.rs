//! Properties: batch independence (the point of the paper), empty batches forward and
//! backward, NaN containment, layouts, half precision, fused activations, and agreement with
//! `burn::nn::GroupNorm` as a drop-in. Values are held to the f64 formulas of
//! [`crate::reference`] within the bound of their dtype.

use crate::common::{devices, nhwc, randn, tensor, values};
use crate::reference::{Output, Problem, assert_within};
use burn::module::Param;
use burn::tensor::{DType, Device, Tensor, s};
use gn_module::{Activation, GroupNormConfig, group_norm, group_norm_with_activation};

/// The affine parameters of these tests' layers: `1 + 0.5 * randn` and `0.2 * randn`.
fn param_values(c: usize) -> (Vec<f64>, Vec<f64>) {
    (
        randn(c, 11).iter().map(|v| 1.0 + 0.5 * v).collect(),
        randn(c, 12).iter().map(|v| 0.2 * v).collect(),
    )
}

/// A problem with these tests' affine parameters.
fn problem(
    shape: &[usize],
    groups: usize,
    activation: Activation,
    dtype: DType,
    x: &[f64],
    dy: &[f64],
) -> Problem {
    let (gamma, beta) = param_values(shape[1]);
    Problem::new(shape, groups, activation, dtype, x, &gamma, &beta, dy)
}

/// The paper's point: a sample's output does not depend on the rest of the batch. Each of 7
/// samples normalized alone, and its row of the batched output, forward and backward, equal
/// the f64 formulas for that sample alone (within f32's bound), and so each other.
#[test]
fn each_sample_is_normalized_independently_of_the_batch() {
    let shape = [7, 8, 5, 4];
    let numel: usize = shape.iter().product();
    let per_sample = numel / shape[0];
    let x_values: Vec<f64> = randn(numel, 5).iter().map(|v| 2.0 + 3.0 * v).collect();
    let problem = problem(
        &shape,
        4,
        Activation::None,
        DType::F32,
        &x_values,
        &randn(numel, 6),
    );
    // Groups never span samples: the batch's reference is each sample's.
    let reference = problem.reference();
    let bounds =
        [Output::Y, Output::Dx].map(|o| (reference.values(o), reference.bound(o, DType::F32)));
    for (backend, device) in devices() {
        let ad = device.clone().autodiff();
        let (gamma, beta) = (
            problem.gamma_tensor(&ad, DType::F32),
            problem.beta_tensor(&ad, DType::F32),
        );
        let run = |x: Tensor<4>, dy: Tensor<4>| {
            let x = x.require_grad();
            let y = group_norm(x.clone(), 4, Some(gamma.clone()), Some(beta.clone()), 1e-5);
            let grads = (y.clone() * dy).sum().backward();
            [values(y), values(x.grad(&grads).unwrap())]
        };
        let x = problem.x_tensor::<4>(&ad, DType::F32);
        let dy = problem.dy_tensor::<4>(&ad, DType::F32);
        let batch = run(x.clone(), dy.clone());
        for i in 0..shape[0] {
            let alone = run(
                x.clone().slice(s![i..i + 1]),
                dy.clone().slice(s![i..i + 1]),
            );
            let rows = i * per_sample..(i + 1) * per_sample;
            for (k, name) in ["y", "dx"].iter().enumerate() {
                let (expected, bound) = (&bounds[k].0[rows.clone()], &bounds[k].1[rows.clone()]);
                for (how, got) in [
                    ("alone", &alone[k][..]),
                    ("in the batch", &batch[k][rows.clone()]),
                ] {
                    assert_within(
                        &format!("{name} of sample {i} {how} on {backend}"),
                        got,
                        expected,
                        bound,
                    );
                }
            }
        }
    }
}

/// An empty batch (N = 0) gives an empty output, and its backward empty input gradients and
/// zero (or no) parameter gradients: no sample contributes to them.
#[test]
fn empty_batch_gives_an_empty_output() {
    for (backend, device) in devices() {
        let gn = GroupNormConfig::new(2, 4).init(&device);
        let y = gn.forward(Tensor::<4>::zeros([0, 4, 3, 3], &device));
        assert_eq!(y.dims(), [0, 4, 3, 3], "on {backend}");

        let ad = device.clone().autodiff();
        for activation in [Activation::None, Activation::Silu] {
            let gn = GroupNormConfig::new(2, 4)
                .with_activation(activation)
                .init(&ad);
            let x = Tensor::<3>::zeros([0, 4, 5], &ad).require_grad();
            let y = gn.forward(x.clone());
            assert_eq!(y.dims(), [0, 4, 5], "{activation:?} on {backend}");
            let dy = Tensor::<3>::ones([0, 4, 5], &ad);
            let grads = (y * dy).sum().backward();
            let dx = x.grad(&grads).expect("x has a gradient");
            assert_eq!(dx.dims(), [0, 4, 5], "dx, {activation:?} on {backend}");
            for (name, param) in [("gamma", &gn.gamma), ("beta", &gn.beta)] {
                let param = param.as_ref().expect("affine layer").val();
                if let Some(grad) = param.grad(&grads) {
                    assert_eq!(grad.dims(), [4], "d{name}, {activation:?} on {backend}");
                    assert_eq!(
                        values(grad),
                        vec![0.0; 4],
                        "d{name}, {activation:?} on {backend}"
                    );
                }
            }
        }
    }
}

/// A NaN or an infinity poisons its own group and nothing else: every other value is the
/// f64 formulas' on the clean input (within f32's bound).
#[test]
fn non_finite_values_stay_in_their_group() {
    let shape = [2, 6, 4];
    let clean = randn(48, 7);
    let problem = problem(&shape, 3, Activation::None, DType::F32, &clean, &[0.0; 48]);
    let reference = problem.reference();
    let bound = reference.bound(Output::Y, DType::F32);
    for (backend, device) in devices() {
        let (gamma, beta) = (
            problem.gamma_tensor(&device, DType::F32),
            problem.beta_tensor(&device, DType::F32),
        );
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut dirty = problem.x.clone();
            // Sample 1, channel 2 (group 1 = channels 2..4), position 3.
            let index = 24 + 2 * 4 + 3;
            dirty[index] = bad;
            let y = values(group_norm(
                tensor(&dirty, shape, &device, DType::F32),
                3,
                Some(gamma.clone()),
                Some(beta.clone()),
                problem.epsilon,
            ));
            for (i, &got) in y.iter().enumerate() {
                let in_group = (32..40).contains(&i);
                if in_group {
                    assert!(
                        got.is_nan(),
                        "{bad} on {backend}: element {i} of the poisoned group is {got}"
                    );
                } else {
                    assert_within(
                        &format!("{bad} on {backend}: element {i} outside the group"),
                        &[got],
                        &reference.y[i..i + 1],
                        &bound[i..i + 1],
                    );
                }
            }
        }
    }
}

/// NHWC-strided inputs give the same values and gradients as contiguous ones (each the f64
/// formulas' within f32's bound), with the output gradient in either layout (the CubeCL
/// kernels read both in place when they match, and copy when they do not). Two channels per
/// group, and eight (vectors of channels).
#[test]
fn channels_last_input_matches_contiguous() {
    for (n, c, h, w, groups) in [(2, 8, 3, 5, 4), (2, 32, 4, 6, 4)] {
        let shape = [n, c, h, w];
        let x_values: Vec<f64> = randn(n * c * h * w, 8).iter().map(|v| 1.0 + v).collect();
        let problem = problem(
            &shape,
            groups,
            Activation::Relu,
            DType::F32,
            &x_values,
            &randn(n * c * h * w, 9),
        );
        let reference = problem.reference();
        for (backend, device) in devices() {
            let ad = device.clone().autodiff();
            let (gamma, beta) = (
                problem.gamma_tensor(&ad, DType::F32),
                problem.beta_tensor(&ad, DType::F32),
            );
            let run = |x: Tensor<4>, dy: Tensor<4>| {
                let y = group_norm_with_activation(
                    x.clone(),
                    groups,
                    Some(gamma.clone()),
                    Some(beta.clone()),
                    problem.epsilon,
                    Activation::Relu,
                );
                let grads = (y.clone() * dy).sum().backward();
                (values(y), values(x.grad(&grads).unwrap()))
            };
            for (x_layout, x) in [
                ("contiguous", problem.x_tensor::<4>(&ad, DType::F32)),
                ("NHWC", nhwc(&problem.x, shape, &ad, DType::F32)),
            ] {
                for (dy_layout, dy) in [
                    ("contiguous", problem.dy_tensor::<4>(&ad, DType::F32)),
                    ("NHWC", nhwc(&problem.dy, shape, &ad, DType::F32)),
                ] {
                    let (y, dx) = run(x.clone().require_grad(), dy);
                    let what =
                        format!("{shape:?} G={groups}, x {x_layout}, dy {dy_layout}, on {backend}");
                    reference.check(&what, Output::Y, DType::F32, &y);
                    reference.check(&what, Output::Dx, DType::F32, &dx);
                }
            }
        }
    }
}

/// The fused activation equals the activation applied after the normalization, forward and
/// backward (the composite path composes them from separate ops): both are the f64 formulas'
/// within f32's bound.
#[test]
fn fused_activations_match_composition() {
    let shape = [3, 12, 7];
    let x_values: Vec<f64> = randn(252, 13).iter().map(|v| 0.5 + 2.0 * v).collect();
    for activation in [Activation::Relu, Activation::Silu] {
        let problem = problem(
            &shape,
            3,
            activation,
            DType::F32,
            &x_values,
            &randn(252, 14),
        );
        let reference = problem.reference();
        for (backend, device) in devices() {
            let ad = device.clone().autodiff();
            let run = |fused: bool| {
                let x = problem.x_tensor::<3>(&ad, DType::F32).require_grad();
                let g = problem.gamma_tensor(&ad, DType::F32).require_grad();
                let b = problem.beta_tensor(&ad, DType::F32).require_grad();
                let y = crate::common::norm_fn(fused)(
                    x.clone(),
                    3,
                    Some(g.clone()),
                    Some(b.clone()),
                    problem.epsilon,
                    activation,
                );
                let dy = problem.dy_tensor::<3>(&ad, DType::F32);
                let grads = (y.clone() * dy).sum().backward();
                [
                    values(y),
                    values(x.grad(&grads).unwrap()),
                    values(g.grad(&grads).unwrap()),
                    values(b.grad(&grads).unwrap()),
                ]
            };
            for (path, fused) in [("fused", true), ("composed", false)] {
                reference.check_all(
                    &format!("{path} {activation:?} on {backend}"),
                    DType::F32,
                    &run(fused),
                );
            }
        }
    }
}

/// f16 and bf16 inputs are computed in f32 and come back in their own dtype, rounded once:
/// within half an ulp of that dtype (f16: 2^-11 relative; bf16: 2^-8), plus f32's bound, of
/// the f64 formulas on the same 16-bit inputs. The inputs' mean (4) is four times their
/// spread, so statistics accumulated in 16 bits would be off by far more.
#[test]
fn half_precision_inputs_keep_their_dtype() {
    let shape = [2, 8, 6, 6];
    let x_values: Vec<f64> = randn(576, 15).iter().map(|v| 4.0 + v).collect();
    for (backend, device) in devices() {
        if backend == "ndarray" {
            continue; // NdArray has no f16 / bf16.
        }
        for dtype in [DType::F16, DType::BF16] {
            if !device.supports_dtype(dtype) {
                continue;
            }
            let problem = problem(&shape, 4, Activation::None, dtype, &x_values, &[0.0; 576]);
            let y = group_norm(
                problem.x_tensor::<4>(&device, dtype),
                4,
                Some(problem.gamma_tensor(&device, dtype)),
                Some(problem.beta_tensor(&device, dtype)),
                problem.epsilon,
            );
            assert_eq!(y.dtype(), dtype, "on {backend}");
            problem.reference().check(
                &format!("{dtype:?} on {backend}"),
                Output::Y,
                dtype,
                &values(y),
            );
        }
    }
}

/// Drop-in: the same layer configuration and parameters give the same output as
/// `burn::nn::GroupNorm` on ordinary inputs, for ranks 2 to 6: ours within f32's bound of the
/// f64 formulas, burn's within twice that of ours (both f32 evaluations of the same formula).
#[test]
fn agrees_with_burn_group_norm_on_ordinary_inputs() {
    for (backend, device) in devices() {
        agree(backend, &device, [4, 8]);
        agree(backend, &device, [2, 8, 15]);
        agree(backend, &device, [2, 8, 3, 5]);
        agree(backend, &device, [2, 8, 3, 5, 2]);
        agree(backend, &device, [2, 8, 3, 1, 5, 2]);
    }
}

fn agree<const D: usize>(backend: &str, device: &Device, shape: [usize; D]) {
    let numel: usize = shape.iter().product();
    let mut problem = problem(
        &shape,
        4,
        Activation::None,
        DType::F32,
        &randn(numel, 16),
        &vec![0.0; numel],
    );
    problem.epsilon = 1e-3;
    let reference = problem.reference();
    let mut ours = GroupNormConfig::new(4, 8).with_epsilon(1e-3).init(device);
    let mut burns = burn::nn::GroupNormConfig::new(4, 8)
        .with_epsilon(1e-3)
        .init(device);
    let gamma = || Some(Param::from_tensor(problem.gamma_tensor(device, DType::F32)));
    let beta = || Some(Param::from_tensor(problem.beta_tensor(device, DType::F32)));
    (ours.gamma, ours.beta) = (gamma(), beta());
    (burns.gamma, burns.beta) = (gamma(), beta());
    let x = problem.x_tensor::<D>(device, DType::F32);
    let what = format!("rank {D} on {backend}");
    let y = values(ours.forward(x.clone()));
    reference.check(&what, Output::Y, DType::F32, &y);
    let twice: Vec<f64> = reference
        .bound(Output::Y, DType::F32)
        .iter()
        .map(|b| 2.0 * b)
        .collect();
    assert_within(
        &format!("burn's y against ours, {what}"),
        &values(burns.forward(x)),
        &y,
        &twice,
    );
}
