//! Properties that do not need a reference implementation: batch independence (the point of
//! the paper), empty batches, NaN containment, layouts, half precision, fused activations, and
//! agreement with `burn::nn::GroupNorm` as a drop-in.


use burn::tensor::{DType, Device, Tensor, s};
use crate::common::{assert_close, devices, nhwc, randn, tensor, values};
use gn_module::{Activation, GroupNormConfig, group_norm, group_norm_with_activation};

/// f32 results of the same math computed in a different order (composite vs fused, another
/// batch split) agree to a few ulps of the O(1) outputs.
const F32_TOLERANCE: f64 = 2e-6;

fn params(device: &Device, c: usize, dtype: DType) -> (Tensor<1>, Tensor<1>) {
    let gamma: Vec<f64> = randn(c, 11).iter().map(|v| 1.0 + 0.5 * v).collect();
    let beta: Vec<f64> = randn(c, 12).iter().map(|v| 0.2 * v).collect();
    (
        tensor(&gamma, [c], device, dtype),
        tensor(&beta, [c], device, dtype),
    )
}

/// The paper's point: a sample's output does not depend on the rest of the batch. Each of 7
/// samples normalized alone equals its row of the batched output, forward and backward.
#[test]
fn each_sample_is_normalized_independently_of_the_batch() {
    let shape = [7, 8, 5, 4];
    let numel: usize = shape.iter().product();
    let x_values: Vec<f64> = randn(numel, 5).iter().map(|v| 2.0 + 3.0 * v).collect();
    let dy_values = randn(numel, 6);
    for (backend, device) in devices() {
        let ad = device.clone().autodiff();
        let (gamma, beta) = params(&ad, 8, DType::F32);
        let run = |x: Tensor<4>, dy: Tensor<4>| {
            let x = x.require_grad();
            let y = group_norm(x.clone(), 4, Some(gamma.clone()), Some(beta.clone()), 1e-5);
            let grads = (y.clone() * dy).sum().backward();
            (y, x.grad(&grads).unwrap())
        };
        let x = tensor(&x_values, shape, &ad, DType::F32);
        let dy = tensor(&dy_values, shape, &ad, DType::F32);
        let (y_batch, dx_batch) = run(x.clone(), dy.clone());
        for i in 0..shape[0] {
            let (y_alone, dx_alone) = run(
                x.clone().slice(s![i..i + 1]),
                dy.clone().slice(s![i..i + 1]),
            );
            let what = |t: &str| format!("{t} of sample {i} on {backend}");
            assert_close(
                &what("y"),
                &values(y_alone),
                &values(y_batch.clone().slice(s![i..i + 1])),
                F32_TOLERANCE,
            );
            assert_close(
                &what("dx"),
                &values(dx_alone),
                &values(dx_batch.clone().slice(s![i..i + 1])),
                F32_TOLERANCE,
            );
        }
    }
}

#[test]
fn empty_batch_gives_an_empty_output() {
    for (backend, device) in devices() {
        let gn = GroupNormConfig::new(2, 4).init(&device);
        let y = gn.forward(Tensor::<4>::zeros([0, 4, 3, 3], &device));
        assert_eq!(y.dims(), [0, 4, 3, 3], "on {backend}");

        let ad = device.clone().autodiff();
        let gn = GroupNormConfig::new(2, 4).init(&ad);
        let x = Tensor::<3>::zeros([0, 4, 5], &ad).require_grad();
        let y = gn.forward(x.clone());
        assert_eq!(y.dims(), [0, 4, 5], "on {backend}");
    }
}

/// A NaN or an infinity poisons its own group and nothing else.
#[test]
fn non_finite_values_stay_in_their_group() {
    let shape = [2, 6, 4];
    let clean = randn(48, 7);
    for (backend, device) in devices() {
        let (gamma, beta) = params(&device, 6, DType::F32);
        let reference = values(group_norm(
            tensor(&clean, shape, &device, DType::F32),
            3,
            Some(gamma.clone()),
            Some(beta.clone()),
            1e-5,
        ));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut dirty = clean.clone();
            // Sample 1, channel 2 (group 1 = channels 2..4), position 3.
            let index = 24 + 2 * 4 + 3;
            dirty[index] = bad;
            let y = values(group_norm(
                tensor(&dirty, shape, &device, DType::F32),
                3,
                Some(gamma.clone()),
                Some(beta.clone()),
                1e-5,
            ));
            for (i, (&got, &want)) in y.iter().zip(&reference).enumerate() {
                let in_group = (32..40).contains(&i);
                if in_group {
                    assert!(
                        got.is_nan(),
                        "{bad} on {backend}: element {i} of the poisoned group is {got}"
                    );
                } else {
                    assert!(
                        (got - want).abs() < 1e-5,
                        "{bad} on {backend}: element {i} changed: {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// NHWC-strided inputs give the same values and gradients as contiguous ones, with the
/// output gradient in either layout (the CubeCL kernels read both in place when they match,
/// and copy when they do not). Two channels per group, and eight (vectors of channels).
#[test]
fn channels_last_input_matches_contiguous() {
    for (n, c, h, w, groups) in [(2, 8, 3, 5, 4), (2, 32, 4, 6, 4)] {
        let shape = [n, c, h, w];
        let x_values: Vec<f64> = randn(n * c * h * w, 8).iter().map(|v| 1.0 + v).collect();
        let dy_values = randn(n * c * h * w, 9);
        for (backend, device) in devices() {
            let ad = device.clone().autodiff();
            let (gamma, beta) = params(&ad, c, DType::F32);
            let run = |x: Tensor<4>, dy: Tensor<4>| {
                let y = group_norm_with_activation(
                    x.clone(),
                    groups,
                    Some(gamma.clone()),
                    Some(beta.clone()),
                    1e-5,
                    Activation::Relu,
                );
                let grads = (y.clone() * dy).sum().backward();
                (values(y), values(x.grad(&grads).unwrap()))
            };
            let contiguous = || tensor(&x_values, shape, &ad, DType::F32).require_grad();
            let dy_contiguous = || tensor(&dy_values, shape, &ad, DType::F32);
            let (y1, dx1) = run(contiguous(), dy_contiguous());
            for (dy_layout, dy) in [
                ("contiguous", dy_contiguous()),
                ("NHWC", nhwc(&dy_values, shape, &ad, DType::F32)),
            ] {
                let (y2, dx2) = run(nhwc(&x_values, shape, &ad, DType::F32).require_grad(), dy);
                let what = format!("{shape:?} G={groups}, dy {dy_layout}, on {backend}");
                assert_close(&format!("y {what}"), &y2, &y1, F32_TOLERANCE);
                assert_close(&format!("dx {what}"), &dx2, &dx1, F32_TOLERANCE);
            }
        }
    }
}

/// The fused activation equals the activation applied after the normalization, forward and
/// backward (the composite path composes them from separate ops).
#[test]
fn fused_activations_match_composition() {
    let shape = [3, 12, 7];
    let x_values: Vec<f64> = randn(252, 13).iter().map(|v| 0.5 + 2.0 * v).collect();
    let dy_values = randn(252, 14);
    for (backend, device) in devices() {
        for activation in [Activation::Relu, Activation::Silu] {
            let ad = device.clone().autodiff();
            let (gamma, beta) = params(&ad, 12, DType::F32);
            let run = |fused: bool| {
                let x = tensor(&x_values, shape, &ad, DType::F32).require_grad();
                let (g, b) = (gamma.clone().require_grad(), beta.clone().require_grad());
                let y = crate::common::norm_fn(fused)(
                    x.clone(),
                    3,
                    Some(g.clone()),
                    Some(b.clone()),
                    1e-5,
                    activation,
                );
                let dy = tensor(&dy_values, shape, &ad, DType::F32);
                let grads = (y.clone() * dy).sum().backward();
                [
                    values(y),
                    values(x.grad(&grads).unwrap()),
                    values(g.grad(&grads).unwrap()),
                    values(b.grad(&grads).unwrap()),
                ]
            };
            let (fused, reference) = (run(true), run(false));
            for (i, name) in ["y", "dx", "dgamma", "dbeta"].iter().enumerate() {
                assert_close(
                    &format!("{name} with {activation:?} on {backend}"),
                    &fused[i],
                    &reference[i],
                    F32_TOLERANCE,
                );
            }
        }
    }
}

/// f16 and bf16 inputs are accumulated in f32 and come back in their own dtype, within the
/// rounding of that dtype (f16: 2^-11 relative; bf16: 2^-8) of the f32 result.
#[test]
fn half_precision_inputs_keep_their_dtype() {
    let shape = [2, 8, 6, 6];
    let x_values: Vec<f64> = randn(576, 15).iter().map(|v| 4.0 + v).collect();
    for (backend, device) in devices() {
        if backend == "ndarray" {
            continue; // NdArray has no f16 / bf16.
        }
        let reference = {
            let (gamma, beta) = params(&device, 8, DType::F32);
            values(group_norm(
                tensor(&x_values, shape, &device, DType::F32),
                4,
                Some(gamma),
                Some(beta),
                1e-5,
            ))
        };
        for (dtype, tol) in [(DType::F16, 4e-3), (DType::BF16, 3e-2)] {
            if !device.supports_dtype(dtype) {
                continue;
            }
            let (gamma, beta) = params(&device, 8, dtype);
            let y = group_norm(
                tensor(&x_values, shape, &device, dtype),
                4,
                Some(gamma),
                Some(beta),
                1e-5,
            );
            assert_eq!(y.dtype(), dtype, "on {backend}");
            assert_close(
                &format!("{dtype:?} y on {backend}"),
                &values(y),
                &reference,
                tol,
            );
        }
    }
}

/// Drop-in: the same layer configuration gives the same output as `burn::nn::GroupNorm` on
/// ordinary inputs, for ranks 2 to 5.
#[test]
fn agrees_with_burn_group_norm_on_ordinary_inputs() {
    for (backend, device) in devices() {
        let ours = GroupNormConfig::new(4, 8).with_epsilon(1e-3).init(&device);
        let burns = burn::nn::GroupNormConfig::new(4, 8)
            .with_epsilon(1e-3)
            .init(&device);
        let x: Vec<f64> = randn(2 * 8 * 3 * 5, 16);
        let x4 = tensor(&x, [2, 8, 3, 5], &device, DType::F32);
        assert_close(
            &format!("rank 4 on {backend}"),
            &values(ours.forward(x4.clone())),
            &values(burns.forward(x4.clone())),
            1e-5,
        );
        let x3 = x4.clone().reshape([2, 8, 15]);
        assert_close(
            &format!("rank 3 on {backend}"),
            &values(ours.forward(x3.clone())),
            &values(burns.forward(x3)),
            1e-5,
        );
    }
}
