//! Finite-difference gradient check in f64: the analytic gradients of x, gamma and beta (fused
//! kernels and composite path, with and without fused activations) against central
//! differences of the forward pass.

use crate::common::{assert_close, f64_devices, randn, tensor, values};
use burn::tensor::{DType, Device, Tensor};
use gn_module::{Activation, composite, group_norm_with_activation};

const SHAPE: [usize; 4] = [2, 6, 2, 3];
const GROUPS: usize = 3;
const EPS: f64 = 1e-5;
/// Central differences with h = 1e-5 have truncation error ~h² and rounding error ~1e-16 / h
/// in f64: both far below this.
const TOLERANCE: f64 = 1e-6;
const H: f64 = 1e-5;

#[derive(Clone, Copy, Debug)]
enum Path {
    Fused,
    Composite,
}

struct Problem {
    x: Vec<f64>,
    gamma: Vec<f64>,
    beta: Vec<f64>,
    /// The loss is `Σ y * weights`.
    weights: Vec<f64>,
    activation: Activation,
    path: Path,
}

impl Problem {
    fn new(activation: Activation, path: Path) -> Self {
        let numel = SHAPE.iter().product();
        Self {
            // An offset and unequal group spreads make every term of the gradient matter.
            x: randn(numel, 1)
                .iter()
                .enumerate()
                .map(|(i, v)| 3.0 + v * (1.0 + (i % 5) as f64))
                .collect(),
            gamma: randn(SHAPE[1], 2).iter().map(|v| 1.0 + 0.5 * v).collect(),
            beta: randn(SHAPE[1], 3).iter().map(|v| 0.3 * v).collect(),
            weights: randn(numel, 4),
            activation,
            path,
        }
    }

    fn forward(&self, x: Tensor<4>, gamma: Tensor<1>, beta: Tensor<1>) -> Tensor<4> {
        match self.path {
            Path::Fused => {
                group_norm_with_activation(x, GROUPS, Some(gamma), Some(beta), EPS, self.activation)
            }
            Path::Composite => {
                composite::group_norm(x, GROUPS, Some(gamma), Some(beta), EPS, self.activation)
            }
        }
    }

    fn loss(&self, device: &Device, x: &[f64], gamma: &[f64], beta: &[f64]) -> f64 {
        let y = self.forward(
            tensor(x, SHAPE, device, DType::F64),
            tensor(gamma, [SHAPE[1]], device, DType::F64),
            tensor(beta, [SHAPE[1]], device, DType::F64),
        );
        let w = tensor(&self.weights, SHAPE, device, DType::F64);
        values((y * w).sum())[0]
    }

    /// Central differences of the loss with respect to each entry of input `which`.
    fn numeric(&self, device: &Device, which: usize) -> Vec<f64> {
        let base = [self.x.clone(), self.gamma.clone(), self.beta.clone()];
        (0..base[which].len())
            .map(|i| {
                let mut plus = base.clone();
                let mut minus = base.clone();
                plus[which][i] += H;
                minus[which][i] -= H;
                let lp = self.loss(device, &plus[0], &plus[1], &plus[2]);
                let lm = self.loss(device, &minus[0], &minus[1], &minus[2]);
                (lp - lm) / (2.0 * H)
            })
            .collect()
    }

    fn analytic(&self, device: &Device) -> [Vec<f64>; 3] {
        let ad = device.clone().autodiff();
        let x = tensor(&self.x, SHAPE, &ad, DType::F64).require_grad();
        let gamma = tensor(&self.gamma, [SHAPE[1]], &ad, DType::F64).require_grad();
        let beta = tensor(&self.beta, [SHAPE[1]], &ad, DType::F64).require_grad();
        let y = self.forward(x.clone(), gamma.clone(), beta.clone());
        let w = tensor(&self.weights, SHAPE, &ad, DType::F64);
        let grads = (y * w).sum().backward();
        [
            values(x.grad(&grads).unwrap()),
            values(gamma.grad(&grads).unwrap()),
            values(beta.grad(&grads).unwrap()),
        ]
    }
}

#[test]
fn gradients_match_finite_differences() {
    for (backend, device) in f64_devices() {
        for path in [Path::Fused, Path::Composite] {
            for activation in [Activation::None, Activation::Relu, Activation::Silu] {
                // burn-ndarray 0.22.1 evaluates sigmoid in f32 even for f64 tensors, which makes
                // the composite SiLU's finite differences noisy at 1e-2; the fused SiLU is exact.
                if backend == "ndarray"
                    && matches!(path, Path::Composite)
                    && activation == Activation::Silu
                {
                    continue;
                }
                let problem = Problem::new(activation, path);
                let analytic = problem.analytic(&device);
                for (which, name) in ["dx", "dgamma", "dbeta"].iter().enumerate() {
                    assert_close(
                        &format!("{name} on {backend} via {path:?} with {activation:?}"),
                        &analytic[which],
                        &problem.numeric(&device, which),
                        TOLERANCE,
                    );
                }
            }
        }
    }
}
