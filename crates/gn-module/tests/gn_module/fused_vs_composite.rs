//! The fused kernels against the composite path (plain tensor ops, burn's autodiff), forward
//! and gradients, on every backend: the benchmark shapes (scaled down in batch), odd shapes,
//! channels-last inputs, f32, f16 and bf16, in-place and allocating kernel paths.


use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Tensor};
use crate::common::{assert_close, devices, nhwc, randn, tensor, values};
use gn_module::backend::GroupNormBackend;
use gn_module::{Activation, group_norm_with_activation};

/// `(shape, groups)`: the benchmark shapes with a small batch, odd ones (one channel per
/// group, one group, 1x1 spatial, a single sample, a rank-2 input), and large groups.
const CASES: &[(&[usize], usize)] = &[
    (&[1, 256, 14, 14], 32),
    (&[2, 64, 8, 8], 32),
    (&[2, 2048, 2, 2], 32),
    (&[1, 512, 8, 8], 32),
    (&[3, 12, 5, 5], 12),
    (&[2, 10, 3, 7], 1),
    (&[5, 16, 1, 1], 4),
    (&[1, 6, 4, 4], 2),
    (&[4, 9], 3),
    // Groups too large for the CubeCL single-pass forward (chunked statistics).
    (&[1, 64, 48, 48], 2),
];

/// Test values, rounded to `dtype` when it is f16 or bf16 so that the f32 reference sees the
/// same inputs.
fn data(len: usize, seed: u64, offset: f64, scale: f64, dtype: DType) -> Vec<f64> {
    randn(len, seed)
        .iter()
        .map(|v| offset + scale * v)
        .map(|v| match dtype {
            DType::F16 => burn::tensor::f16::from_f64(v).to_f64(),
            DType::BF16 => burn::tensor::bf16::from_f64(v).to_f64(),
            _ => v,
        })
        .collect()
}

/// The dtypes compared on `device` with their tolerances: f32 with 2e-5 (sums over up to 2e4
/// values in another order); f16 and bf16 outputs against the f32 composite, 1e-2 and 4e-2 of
/// the largest value (11 and 8 bits kept).
fn dtypes(backend: &str, device: &Device) -> Vec<(DType, f64)> {
    let mut dtypes = vec![(DType::F32, 2e-5)];
    for (dtype, tol) in [(DType::F16, 1e-2), (DType::BF16, 4e-2)] {
        if backend != "ndarray" && device.supports_dtype(dtype) {
            dtypes.push((dtype, tol));
        }
    }
    dtypes
}

fn run<const D: usize>(
    device: &Device,
    shape: [usize; D],
    groups: usize,
    dtype: DType,
    activation: Activation,
    fused: bool,
    rounded_to: DType,
) -> [Vec<f64>; 4] {
    let numel: usize = shape.iter().product();
    let c = shape[1];
    let ad = device.clone().autodiff();
    let h = rounded_to;
    let x = tensor(&data(numel, 31, 0.5, 2.0, h), shape, &ad, dtype).require_grad();
    let gamma = tensor(&data(c, 32, 1.0, 0.3, h), [c], &ad, dtype).require_grad();
    let beta = tensor(&data(c, 33, 0.0, 0.2, h), [c], &ad, dtype).require_grad();
    let y = crate::common::norm_fn(fused)(
        x.clone(),
        groups,
        Some(gamma.clone()),
        Some(beta.clone()),
        1e-5,
        activation,
    );
    let dy = tensor(&data(numel, 34, 0.0, 1.0, h), shape, &ad, dtype);
    let grads = (y.clone() * dy).sum().backward();
    [
        values(y),
        values(x.grad(&grads).unwrap()),
        values(gamma.grad(&grads).unwrap()),
        values(beta.grad(&grads).unwrap()),
    ]
}

/// Where ReLU's input `z` lies within rounding distance of its kink at 0 (1e-3 of the largest
/// |z|): there the derivative jumps, and two correct computations may land on either side.
fn relu_kinks(z: &[f64]) -> Vec<bool> {
    let largest = z.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    z.iter().map(|v| v.abs() < 1e-3 * largest).collect()
}

/// `v` with the entries at `kinks` set to zero.
fn without_kinks(v: &[f64], kinks: &[bool]) -> Vec<f64> {
    v.iter()
        .zip(kinks)
        .map(|(&x, &k)| if k { 0.0 } else { x })
        .collect()
}

fn compare<const D: usize>(backend: &str, device: &Device, shape: [usize; D], groups: usize) {
    for activation in [Activation::None, Activation::Relu, Activation::Silu] {
        for (dtype, tol) in dtypes(backend, device) {
            let mut reference = run(device, shape, groups, DType::F32, activation, false, dtype);
            let mut fused = run(device, shape, groups, dtype, activation, true, dtype);
            if activation == Activation::Relu {
                let z = run(
                    device,
                    shape,
                    groups,
                    DType::F32,
                    Activation::None,
                    false,
                    dtype,
                );
                let kinks = relu_kinks(&z[0]);
                reference[1] = without_kinks(&reference[1], &kinks);
                fused[1] = without_kinks(&fused[1], &kinks);
            }
            for (i, name) in ["y", "dx", "dgamma", "dbeta"].iter().enumerate() {
                if dtype != DType::F32 && i >= 2 {
                    // Parameter gradients sum thousands of 16-bit products: compare loosely.
                    assert_close(
                        &format!(
                            "{name} {shape:?} G={groups} {activation:?} {dtype:?} on {backend}"
                        ),
                        &fused[i],
                        &reference[i],
                        5e-2,
                    );
                    continue;
                }
                assert_close(
                    &format!("{name} {shape:?} G={groups} {activation:?} {dtype:?} on {backend}"),
                    &fused[i],
                    &reference[i],
                    tol,
                );
            }
        }
    }
}

#[test]
fn fused_matches_composite() {
    for (backend, device) in devices() {
        for &(shape, groups) in CASES {
            match shape.len() {
                2 => compare(backend, &device, [shape[0], shape[1]], groups),
                4 => compare(
                    backend,
                    &device,
                    [shape[0], shape[1], shape[2], shape[3]],
                    groups,
                ),
                _ => unreachable!(),
            }
        }
    }
}

/// The backend's backward op on `dy`, the forward's input `x`, `[gamma, beta]` and the
/// forward's `[mean, rstd]`: `[dx, dgamma, dbeta]`.
fn backend_backward(
    dy: Tensor<4>,
    x: &Tensor<4>,
    [gamma, beta]: [&Tensor<1>; 2],
    [mean, rstd]: [&Tensor<2>; 2],
    groups: usize,
    activation: Activation,
) -> [Vec<f64>; 3] {
    let (dx, dg, db) = <Dispatch as GroupNormBackend>::group_norm_backward(
        dy.into_dispatch(),
        x.clone().into_dispatch(),
        gamma.clone().into_dispatch(),
        beta.clone().into_dispatch(),
        mean.clone().into_dispatch(),
        rstd.clone().into_dispatch(),
        groups,
        activation.code(),
    );
    [
        values(Tensor::<4>::from_dispatch(dx)),
        values(Tensor::<1>::from_dispatch(dg)),
        values(Tensor::<1>::from_dispatch(db)),
    ]
}

/// The backend ops called directly with inputs that are shared (so the kernels cannot work in
/// place) give the same results as through autodiff (where they can): f32, f16 and bf16, short
/// rows and rows longer than the short-row kernels take.
#[test]
fn allocating_and_in_place_paths_agree() {
    for (backend, device) in devices() {
        for shape in [[2, 8, 5, 6], [1, 8, 20, 20]] {
            for (dtype, _) in dtypes(backend, &device) {
                in_place_agrees(backend, &device, shape, dtype);
            }
        }
    }
}

fn in_place_agrees(backend: &str, device: &Device, shape: [usize; 4], dtype: DType) {
    let numel: usize = shape.iter().product();
    let (x_values, dy_values) = (randn(numel, 41), randn(numel, 42));
    let x = tensor(&x_values, shape, device, dtype);
    let dy = tensor(&dy_values, shape, device, dtype);
    let gamma = tensor(&randn(8, 43), [8], device, dtype);
    let beta = tensor(&randn(8, 44), [8], device, dtype);
    for activation in [Activation::None, Activation::Relu, Activation::Silu] {
        let what = format!("{shape:?} {dtype:?} {activation:?} on {backend}");
        let (y, mean, rstd) = gn_module::fused::forward_with_stats(
            x.clone(),
            4,
            gamma.clone(),
            beta.clone(),
            1e-5,
            activation,
        )
        .expect("valid arguments");
        // In place: x is moved and nothing else holds it.
        let x_copy = tensor(&x_values, shape, device, dtype);
        let y_in_place = group_norm_with_activation(
            x_copy,
            4,
            Some(gamma.clone()),
            Some(beta.clone()),
            1e-5,
            activation,
        );
        assert_close(
            &format!("y, {what}"),
            &values(y_in_place),
            &values(y.clone()),
            0.0,
        );

        let (params, stats) = ([&gamma, &beta], [&mean, &rstd]);
        let backward = |dy: Tensor<4>| backend_backward(dy, &x, params, stats, 4, activation);
        // dy shared (a clone is kept): dx goes to a new buffer. dy unique: dx overwrites it.
        let shared = backward(dy.clone());
        let unique = backward(tensor(&dy_values, shape, device, dtype));
        for i in 0..3 {
            assert_close(
                &format!("backward output {i}, {what}"),
                &unique[i],
                &shared[i],
                0.0,
            );
        }
        // And the statistics are the mean and rstd of the groups.
        let m = values(mean.clone());
        assert_eq!(m.len(), 4 * shape[0]);
        assert!(values(rstd.clone()).iter().all(|r| *r > 0.0));
    }
}

/// The backend ops on channels-last (NHWC-strided) inputs and output gradients, in every
/// combination of layouts, give what they give on contiguous ones: f32, f16 and bf16, with one and
/// with eight channels per group at each position, a spatial size that is not a multiple of
/// a vector, a channel count that is not a multiple of 8, few positions in many samples, and
/// groups large enough for the chunked CubeCL statistics.
#[test]
fn channels_last_backend_ops_match_contiguous() {
    for (backend, device) in devices() {
        for (shape, groups) in [
            ([2, 32, 4, 6], 4),
            ([1, 24, 3, 3], 24),
            ([2, 16, 5, 5], 2),
            // Channels not a multiple of the CPU's 8-channel transpose blocks.
            ([2, 12, 3, 5], 3),
            // Few positions, many samples: the CPU forward in blocks of whole groups.
            ([8, 64, 3, 3], 32),
            // Groups too large for the CubeCL single-pass forward.
            ([1, 64, 40, 40], 4),
        ] {
            let numel: usize = shape.iter().product();
            let c = shape[1];
            for (dtype, tol) in dtypes(backend, &device) {
                let x_values = data(numel, 51, 0.5, 2.0, dtype);
                let dy_values = data(numel, 52, 0.0, 1.0, dtype);
                let gamma = tensor(&data(c, 53, 1.0, 0.3, dtype), [c], &device, dtype);
                let beta = tensor(&data(c, 54, 0.0, 0.2, dtype), [c], &device, dtype);
                let layouts = |v: &[f64]| {
                    [
                        ("contiguous", tensor(v, shape, &device, dtype)),
                        ("NHWC", nhwc(v, shape, &device, dtype)),
                    ]
                };
                let (z, _, _) = gn_module::fused::forward_with_stats(
                    tensor(&x_values, shape, &device, dtype),
                    groups,
                    gamma.clone(),
                    beta.clone(),
                    1e-5,
                    Activation::None,
                )
                .expect("valid arguments");
                let kinks = relu_kinks(&values(z));
                for activation in [Activation::None, Activation::Relu, Activation::Silu] {
                    let mut reference: Option<[Vec<f64>; 4]> = None;
                    for (x_layout, x) in layouts(&x_values) {
                        let (y, mean, rstd) = gn_module::fused::forward_with_stats(
                            x.clone(),
                            groups,
                            gamma.clone(),
                            beta.clone(),
                            1e-5,
                            activation,
                        )
                        .expect("valid arguments");
                        for (dy_layout, dy) in layouts(&dy_values) {
                            let (params, stats) = ([&gamma, &beta], [&mean, &rstd]);
                            let [mut dx, dg, db] =
                                backend_backward(dy, &x, params, stats, groups, activation);
                            if activation == Activation::Relu {
                                dx = without_kinks(&dx, &kinks);
                            }
                            let got = [values(y.clone()), dx, dg, db];
                            let Some(expected) = &reference else {
                                reference = Some(got);
                                continue;
                            };
                            for (i, name) in ["y", "dx", "dgamma", "dbeta"].iter().enumerate() {
                                assert_close(
                                    &format!(
                                        "{name} {shape:?} G={groups} {activation:?} {dtype:?}, \
                                         x {x_layout}, dy {dy_layout}, on {backend}"
                                    ),
                                    &got[i],
                                    &expected[i],
                                    tol,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
