//! The fused kernels and the composite path (plain tensor ops, burn's autodiff), forward and
//! gradients, against the f64 formulas of [`crate::reference`] on every backend: the benchmark
//! shapes (scaled down in batch), odd shapes, channels-last inputs, f32, f16 and bf16, in-place
//! and allocating kernel paths. Each result is held to the bound that its dtype's rounding and
//! f32 arithmetic allow (derived in `reference`), so the fused kernels and the composite path
//! agree with each other within the sum of their bounds.

use crate::common::{backend_backward, devices, nhwc, randn, tensor, values};
use crate::reference::{ACTIVATIONS, Output, Problem};
use burn::tensor::{DType, Device, Tensor};
use gn_module::group_norm_with_activation;

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

/// The dtypes the fused kernels are run in on `device`: f32, and f16 and bf16 where the
/// backend has them (NdArray has neither).
fn dtypes(backend: &str, device: &Device) -> Vec<DType> {
    let mut dtypes = vec![DType::F32];
    for dtype in [DType::F16, DType::BF16] {
        if backend != "ndarray" && device.supports_dtype(dtype) {
            dtypes.push(dtype);
        }
    }
    dtypes
}

/// `[y, dx, dgamma, dbeta]` of `problem` in `dtype` through autodiff, by the fused kernels
/// when `fused`, else by the composite path.
fn run<const D: usize>(
    device: &Device,
    problem: &Problem,
    dtype: DType,
    fused: bool,
) -> [Vec<f64>; 4] {
    let ad = device.clone().autodiff();
    let x = problem.x_tensor::<D>(&ad, dtype).require_grad();
    let gamma = problem.gamma_tensor(&ad, dtype).require_grad();
    let beta = problem.beta_tensor(&ad, dtype).require_grad();
    let y = crate::common::norm_fn(fused)(
        x.clone(),
        problem.groups,
        Some(gamma.clone()),
        Some(beta.clone()),
        problem.epsilon,
        problem.activation,
    );
    assert_eq!(y.dtype(), dtype, "output dtype");
    let dy = problem.dy_tensor::<D>(&ad, dtype);
    let grads = (y.clone() * dy).sum().backward();
    [
        values(y),
        values(x.grad(&grads).unwrap()),
        values(gamma.grad(&grads).unwrap()),
        values(beta.grad(&grads).unwrap()),
    ]
}

/// The fused kernels in every dtype, and the composite path in f32, against the f64
/// formulas on the same (rounded) inputs. The composite path's f16 and bf16 results round
/// `x_hat`, `gamma * x_hat` and the sum with beta to 16 bits separately (three roundings, not
/// one), so they are not held to the one-rounding bound.
fn compare<const D: usize>(backend: &str, device: &Device, shape: [usize; D], groups: usize) {
    for activation in ACTIVATIONS {
        for dtype in dtypes(backend, device) {
            let problem = Problem::random(&shape, groups, activation, dtype, 31);
            let reference = problem.reference();
            let what = |path: &str| {
                format!("{shape:?} G={groups} {activation:?} {dtype:?} {path} on {backend}")
            };
            reference.check_all(
                &what("fused"),
                dtype,
                &run::<D>(device, &problem, dtype, true),
            );
            if dtype == DType::F32 {
                let composite = run::<D>(device, &problem, dtype, false);
                reference.check_all(&what("composite"), dtype, &composite);
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

/// The backend ops called directly with inputs that are shared (so the kernels cannot work in
/// place) give the same results, bit for bit, as with inputs that are not (where they can):
/// the forward through `group_norm_with_activation` with `x` moved, the backward with `dy`
/// moved. f32, f16 and bf16, short rows and rows longer than the short-row kernels take. The
/// statistics the forward returns are the groups' mean and rstd (against the f64 formulas).
#[test]
fn allocating_and_in_place_paths_agree() {
    for (backend, device) in devices() {
        for shape in [[2, 8, 5, 6], [1, 8, 20, 20]] {
            for dtype in dtypes(backend, &device) {
                in_place_agrees(backend, &device, shape, dtype);
            }
        }
    }
}

fn in_place_agrees(backend: &str, device: &Device, shape: [usize; 4], dtype: DType) {
    let numel: usize = shape.iter().product();
    for activation in ACTIVATIONS {
        let problem = Problem::new(
            &shape,
            4,
            activation,
            dtype,
            &randn(numel, 41),
            &randn(8, 43),
            &randn(8, 44),
            &randn(numel, 42),
        );
        let x = problem.x_tensor::<4>(device, dtype);
        let dy = problem.dy_tensor::<4>(device, dtype);
        let (gamma, beta) = (
            problem.gamma_tensor(device, dtype),
            problem.beta_tensor(device, dtype),
        );
        let what = format!("{shape:?} {dtype:?} {activation:?} on {backend}");
        let (y, mean, rstd) = gn_module::fused::forward_with_stats(
            x.clone(),
            4,
            gamma.clone(),
            beta.clone(),
            problem.epsilon,
            activation,
        )
        .expect("valid arguments");
        // In place: x is moved and nothing else holds it.
        let y_in_place = group_norm_with_activation(
            problem.x_tensor::<4>(device, dtype),
            4,
            Some(gamma.clone()),
            Some(beta.clone()),
            problem.epsilon,
            activation,
        );
        assert_eq!(
            values(y_in_place),
            values(y.clone()),
            "y in place and allocating, {what}"
        );

        let (params, stats) = ([&gamma, &beta], [&mean, &rstd]);
        let backward = |dy: Tensor<4>| backend_backward(dy, &x, params, stats, 4, activation);
        // dy shared (a clone is kept): dx goes to a new buffer. dy unique: dx overwrites it.
        let shared = backward(dy.clone());
        let unique = backward(problem.dy_tensor::<4>(device, dtype));
        for (i, output) in Output::ALL[1..].iter().enumerate() {
            assert_eq!(
                unique[i], shared[i],
                "{output:?} with dy unique and shared, {what}"
            );
        }
        problem.reference().check_stats(
            &format!("of the forward, {what}"),
            dtype,
            &values(mean),
            &values(rstd),
        );
    }
}

/// The backend ops on channels-last (NHWC-strided) inputs and output gradients, in every
/// combination of layouts, give what they give on contiguous ones: each against the f64
/// formulas within its dtype's bound (so any two layouts agree within twice that), f32, f16
/// and bf16, with one and with eight channels per group at each position, a spatial size that
/// is not a multiple of a vector, a channel count that is not a multiple of 8, few positions
/// in many samples, and groups large enough for the chunked CubeCL statistics.
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
            for dtype in dtypes(backend, &device) {
                for activation in ACTIVATIONS {
                    let problem = Problem::random(&shape, groups, activation, dtype, 51);
                    let reference = problem.reference();
                    let gamma = problem.gamma_tensor(&device, dtype);
                    let beta = problem.beta_tensor(&device, dtype);
                    let layouts = |v: &[f64]| {
                        [
                            ("contiguous", tensor(v, shape, &device, dtype)),
                            ("NHWC", nhwc(v, shape, &device, dtype)),
                        ]
                    };
                    for (x_layout, x) in layouts(&problem.x) {
                        let (y, mean, rstd) = gn_module::fused::forward_with_stats(
                            x.clone(),
                            groups,
                            gamma.clone(),
                            beta.clone(),
                            problem.epsilon,
                            activation,
                        )
                        .expect("valid arguments");
                        for (dy_layout, dy) in layouts(&problem.dy) {
                            let (params, stats) = ([&gamma, &beta], [&mean, &rstd]);
                            let [dx, dg, db] =
                                backend_backward(dy, &x, params, stats, groups, activation);
                            reference.check_all(
                                &format!(
                                    "{shape:?} G={groups} {activation:?} {dtype:?}, \
                                     x {x_layout}, dy {dy_layout}, on {backend}"
                                ),
                                dtype,
                                &[values(y.clone()), dx, dg, db],
                            );
                        }
                    }
                }
            }
        }
    }
}
