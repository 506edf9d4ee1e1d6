//! The fused kernels really run on every backend they are compiled in for (the functional
//! form, the module, autodiff's forward and backward), and their in-place paths run where
//! claimed and only there: counted by `gn_module::probe`. And the names of this build's
//! devices map to the gn-module features that compile their kernels.

use burn::tensor::{DType, Device, Tensor};
use gn_module::probe::{self, Kernel, Path};
use gn_module::{Activation, GroupNormConfig, composite, fused, group_norm};

use crate::common::{assert_close, backend_backward, devices, f64_devices, randn, tensor, values};

fn kernel_of(backend: &str) -> Kernel {
    match backend {
        "flex" => Kernel::Flex,
        "ndarray" => Kernel::NdArray,
        "wgpu" => Kernel::Cube,
        other => panic!("no fused kernel known for the {other} test device"),
    }
}

const PATHS: [Path; 4] = [
    Path::Forward,
    Path::Backward,
    Path::ForwardInPlace,
    Path::BackwardInPlace,
];

/// The op calls on one kernel since [`Calls::start`], in the order of [`PATHS`]. Exact for the
/// CPU kernels, which run on the calling thread (the thread's own counters, whatever the tests
/// running in parallel do); at least this test's calls for CubeCL, whose fused stream may run
/// them on another thread (the process-wide counters).
struct Calls {
    kernel: Kernel,
    exact: bool,
    before: [u64; 4],
}

impl Calls {
    fn start(backend: &str) -> Self {
        let kernel = kernel_of(backend);
        let exact = kernel != Kernel::Cube;
        Self {
            kernel,
            exact,
            before: Self::read(kernel, exact),
        }
    }

    fn read(kernel: Kernel, exact: bool) -> [u64; 4] {
        PATHS.map(|path| {
            if exact {
                probe::thread_count(kernel, path)
            } else {
                probe::count(kernel, path)
            }
        })
    }

    /// Asserts the calls since the start: `[forward, backward, forward in place, backward in
    /// place]` (exactly on the CPU kernels, at least on CubeCL).
    fn assert(&self, what: &str, expected: [u64; 4]) {
        let now = Self::read(self.kernel, self.exact);
        let calls: Vec<u64> = now.iter().zip(self.before).map(|(a, b)| a - b).collect();
        let ok = if self.exact {
            calls == expected
        } else {
            calls.iter().zip(expected).all(|(got, want)| *got >= want)
        };
        assert!(
            ok,
            "{what} on {:?}: calls [forward, backward, forward in place, backward in place] \
             {calls:?}, expected {}{expected:?}",
            self.kernel,
            if self.exact { "" } else { "at least " }
        );
    }
}

const SHAPE: [usize; 4] = [2, 8, 3, 3];
const NUMEL: usize = 2 * 8 * 3 * 3;

#[test]
fn functional_and_module_run_the_fused_forward() {
    for (backend, device) in devices() {
        let x = tensor(&randn(NUMEL, 1), SHAPE, &device, DType::F32);

        // x stays shared (a clone is kept): the allocating forward.
        let calls = Calls::start(backend);
        let y = group_norm(x.clone(), 4, None, None, 1e-5);
        let y = values(y);
        calls.assert("group_norm", [1, 0, 0, 0]);
        let reference = values(composite::group_norm(
            x.clone(),
            4,
            None,
            None,
            1e-5,
            Activation::None,
        ));
        assert_close(&format!("group_norm on {backend}"), &y, &reference, 1e-5);

        let gn = GroupNormConfig::new(4, 8)
            .with_activation(Activation::Silu)
            .init(&device);
        let calls = Calls::start(backend);
        values(gn.forward(x.clone()));
        calls.assert("GroupNorm::forward", [1, 0, 0, 0]);
    }
}

/// Inference over an input nothing else holds writes `y` over it (f32 and f64 on both CPU
/// backends), with the same values as the allocating forward.
#[test]
fn inference_forward_runs_in_place_over_an_unshared_input() {
    for (backend, device) in f64_devices() {
        for dtype in [DType::F32, DType::F64] {
            let x_values = randn(NUMEL, 2);
            let shared = tensor(&x_values, SHAPE, &device, dtype);
            let calls = Calls::start(backend);
            let expected = values(group_norm(shared.clone(), 4, None, None, 1e-5));
            calls.assert(&format!("shared {dtype:?} input"), [1, 0, 0, 0]);

            let calls = Calls::start(backend);
            let unique = tensor(&x_values, SHAPE, &device, dtype);
            let y = values(group_norm(unique, 4, None, None, 1e-5));
            calls.assert(&format!("unshared {dtype:?} input"), [1, 0, 1, 0]);
            assert_close(
                &format!("in place, {dtype:?} on {backend}"),
                &y,
                &expected,
                0.0,
            );
        }
    }
}

/// Under autodiff the forward and backward are each one fused op on the inner backend; a
/// tracked input is never overwritten (the backward reads it), even when the caller gave it
/// up, so the gradients match the composite's.
#[test]
fn autodiff_runs_the_fused_forward_and_backward() {
    for (backend, device) in devices() {
        let ad = device.autodiff();
        let x_values = randn(NUMEL, 3);
        let w = tensor(&randn(NUMEL, 4), SHAPE, &ad, DType::F32);
        let gn = GroupNormConfig::new(4, 8)
            .with_activation(Activation::Relu)
            .init(&ad);
        let gamma = gn.gamma.as_ref().unwrap().val();

        let calls = Calls::start(backend);
        // x is moved into the forward: only autodiff's checkpoint still holds it.
        let x = tensor(&x_values, SHAPE, &ad, DType::F32).require_grad();
        let loss = (gn.forward(x) * w.clone()).sum();
        let grads = loss.backward();
        let dgamma = values(gamma.grad(&grads).expect("gamma has a gradient"));
        let expected_calls = if calls.exact {
            // The output gradient `w * 1` is a new tensor nothing else holds: dx goes over it.
            [1, 1, 0, 1]
        } else {
            [1, 1, 0, 0]
        };
        calls.assert("autodiff forward + backward", expected_calls);

        let gamma_ref = Tensor::<1>::ones([8], &ad).require_grad();
        let x = tensor(&x_values, SHAPE, &ad, DType::F32);
        let y_ref =
            composite::group_norm(x, 4, Some(gamma_ref.clone()), None, 1e-5, Activation::Relu);
        let grads = (y_ref * w).sum().backward();
        let expected = values(gamma_ref.grad(&grads).unwrap());
        assert_close(&format!("dgamma on {backend}"), &dgamma, &expected, 1e-4);
    }
}

/// The backward op writes `dx` over an output gradient nothing else holds (f32 and f64 on both
/// CPU backends), and allocates when the gradient is shared, with the same values.
#[test]
fn backward_runs_in_place_over_an_unshared_gradient() {
    for (backend, device) in f64_devices() {
        for dtype in [DType::F32, DType::F64] {
            let x = tensor(&randn(NUMEL, 5), SHAPE, &device, dtype);
            let gamma = tensor(&randn(8, 6), [8], &device, dtype);
            let beta = tensor(&randn(8, 7), [8], &device, dtype);
            let (_, mean, rstd) = fused::forward_with_stats(
                x.clone(),
                4,
                gamma.clone(),
                beta.clone(),
                1e-5,
                Activation::Silu,
            )
            .unwrap();
            let dy_values = randn(NUMEL, 8);
            let backward = |dy: Tensor<4>| {
                let [dx, _, _] =
                    backend_backward(dy, &x, [&gamma, &beta], [&mean, &rstd], 4, Activation::Silu);
                dx
            };

            let dy = tensor(&dy_values, SHAPE, &device, dtype);
            let calls = Calls::start(backend);
            let expected = backward(dy.clone());
            calls.assert(&format!("shared {dtype:?} gradient"), [0, 1, 0, 0]);

            let calls = Calls::start(backend);
            let dx = backward(tensor(&dy_values, SHAPE, &device, dtype));
            calls.assert(&format!("unshared {dtype:?} gradient"), [0, 1, 0, 1]);
            assert_close(
                &format!("dx in place, {dtype:?} on {backend}"),
                &dx,
                &expected,
                0.0,
            );
        }
    }
}

/// Any rank from 2 up runs the fused kernels (the axes after the channels are taken together)
/// and agrees with the f64 formula. (burn-ndarray's own ops stop at rank 6, so the reference
/// is computed here rather than by the composite.)
#[test]
fn any_rank_of_at_least_two_runs_fused() {
    for (backend, device) in devices() {
        check_rank(backend, &device, [3, 8]);
        check_rank(backend, &device, [2, 8, 5]);
        check_rank(backend, &device, [2, 4, 3, 1, 2]);
        check_rank(backend, &device, [2, 4, 2, 1, 3, 2, 2]);
        check_rank(backend, &device, [1, 6, 2, 2, 1, 2, 1, 3]);
    }
}

fn check_rank<const D: usize>(backend: &str, device: &Device, shape: [usize; D]) {
    const GROUPS: usize = 2;
    let numel = shape.iter().product();
    let x_values = randn(numel, D as u64);
    let c = shape[1];
    let gamma_values = randn(c, 9);
    let x = tensor(&x_values, shape, device, DType::F32);
    let gamma = tensor(&gamma_values, [c], device, DType::F32);
    let calls = Calls::start(backend);
    let y = values(group_norm(x, GROUPS, Some(gamma), None, 1e-5));
    // x was moved in: the CPU kernels normalize it in place.
    let in_place = u64::from(calls.exact);
    calls.assert(&format!("rank {D}"), [1, 0, in_place, 0]);

    // The f64 formula over [N, C, S] in row-major order.
    let group_len = numel / shape[0] / GROUPS;
    let per_channel = group_len * GROUPS / c;
    let mut expected = vec![0.0; numel];
    for (g, group) in x_values.chunks(group_len).enumerate() {
        let mean = group.iter().sum::<f64>() / group_len as f64;
        let var = group.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / group_len as f64;
        let rstd = 1.0 / (var + 1e-5).sqrt();
        for (i, v) in group.iter().enumerate() {
            let index = g * group_len + i;
            let channel = index / per_channel % c;
            expected[index] = (v - mean) * rstd * gamma_values[channel];
        }
    }
    assert_close(
        &format!("rank {D} {shape:?} on {backend}"),
        &y,
        &expected,
        1e-5,
    );
}

/// What burn prints for this build's devices (plain and autodiff) maps to the gn-module
/// feature that compiles their kernels, which the composite fallback names in its warning.
#[test]
fn device_names_map_to_their_features() {
    for (backend, device) in devices() {
        let (feature, name) = match backend {
            "flex" => ("flex", "Flex"),
            "ndarray" => ("ndarray", "NdArray"),
            "wgpu" => ("wgpu", "Cube(Wgpu)"),
            other => panic!("unknown test device {other}"),
        };
        for device in [device.clone(), device.autodiff()] {
            let debug = format!("{:?}", device.inner().as_dispatch());
            assert_eq!(fused::feature_for_backend(&debug), Some(feature), "{debug}");
            assert_eq!(fused::backend_name(&debug), name, "{debug}");
        }
    }
}
