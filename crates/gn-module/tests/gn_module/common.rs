//! Helpers shared by the integration tests: the devices to test on, fixture loading, and
//! comparisons with stated tolerances.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Tensor, TensorData};
use gn_module::backend::GroupNormBackend;
use gn_module::{Activation, composite, group_norm_with_activation};
use safetensors::SafeTensors;

/// Every backend compiled into this test build, by name.
///
/// Flex is always there (a default feature); NdArray joins with its feature, wgpu with
/// `wgpu-tests` (a driver is needed to run, not to build), so the README's test command covers
/// Flex and NdArray and CI's `--features wgpu-tests` run adds wgpu on lavapipe.
// The pushes depend on the compiled features.
#[allow(clippy::vec_init_then_push)]
pub fn devices() -> Vec<(&'static str, Device)> {
    let mut devices = Vec::new();
    #[cfg(feature = "flex")]
    devices.push(("flex", Device::flex()));
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // burn-ndarray is deprecated upstream; still supported and tested.
    devices.push(("ndarray", Device::ndarray()));
    #[cfg(feature = "wgpu-tests")]
    devices.push((
        "wgpu",
        Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
    ));
    assert!(
        !devices.is_empty(),
        "no backend feature enabled for the tests"
    );
    devices
}

/// The backends that run f64 (CubeCL on wgpu has no f64).
pub fn f64_devices() -> Vec<(&'static str, Device)> {
    devices()
        .into_iter()
        .filter(|(name, _)| *name != "wgpu")
        .collect()
}

pub fn fixture_path(rel: &str) -> PathBuf {
    // The directory cargo runs the test from: a target directory shared between checkouts can
    // hold a binary built in another one, whose compile-time path may be gone.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/fixtures")
        .join(rel)
}

/// One tensor of a fixture file, its values widened to f64.
#[derive(Clone, Debug)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

impl Array {
    pub fn tensor<const D: usize>(&self, device: &Device, dtype: DType) -> Tensor<D> {
        Tensor::from_data(
            TensorData::new(self.values.clone(), self.shape.clone()),
            (device, dtype),
        )
    }

    pub fn max_abs(&self) -> f64 {
        self.values.iter().fold(0.0, |m, v| m.max(v.abs()))
    }
}

/// A safetensors fixture: tensors widened to f64, and the string metadata.
pub struct Fixture {
    pub tensors: HashMap<String, Array>,
    pub metadata: HashMap<String, String>,
}

impl Fixture {
    pub fn load(rel: &str) -> Self {
        let path = fixture_path(rel);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, meta) = SafeTensors::read_metadata(&bytes).expect("safetensors header");
        let file = SafeTensors::deserialize(&bytes).expect("safetensors body");
        let mut tensors = HashMap::new();
        for (name, view) in file.tensors() {
            let data = view.data();
            let values: Vec<f64> = match view.dtype() {
                safetensors::Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect(),
                safetensors::Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                other => panic!("{rel}: tensor {name} has unsupported dtype {other:?}"),
            };
            tensors.insert(
                name,
                Array {
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
        Self {
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
        }
    }

    pub fn get(&self, name: &str) -> &Array {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no tensor {name}"))
    }

    pub fn meta(&self, key: &str) -> &str {
        self.metadata
            .get(key)
            .unwrap_or_else(|| panic!("fixture has no metadata {key}"))
    }
}

/// Values of a tensor as f64.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .expect("float data")
}

/// Largest `|a - b|` divided by the largest `|b|` (at least 1e-12): a scale-aware error that
/// does not blow up on entries near zero; infinite where only one side has a NaN.
pub fn rel_err(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let scale = expected.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    let err = actual
        .iter()
        .zip(expected)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    if actual.iter().any(|v| v.is_nan()) != expected.iter().any(|v| v.is_nan()) {
        return f64::INFINITY;
    }
    err / scale
}

/// Asserts [`rel_err`] is within `tol`, naming what was compared.
pub fn assert_close(what: &str, actual: &[f64], expected: &[f64], tol: f64) {
    let err = rel_err(actual, expected);
    assert!(
        err <= tol,
        "{what}: relative error {err:.3e} exceeds tolerance {tol:.1e}"
    );
}

/// Runs `$f::<D>(...)` with the const rank `D` equal to `$rank` (2 to 6).
#[allow(unused_macros)]
macro_rules! with_rank {
    ($rank:expr, $f:ident($($arg:expr),*)) => {
        match $rank {
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            r => panic!("unsupported rank {r}"),
        }
    };
}
#[allow(unused_imports)]
pub(crate) use with_rank;

/// Deterministic pseudo-random normal values (xorshift + Box-Muller): test data without a
/// `rand` dependency.
pub fn randn(len: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| {
            let (u1, u2) = (uniform(), uniform());
            (-2.0 * u1.ln()).sqrt() * (2.0 * core::f64::consts::PI * u2).cos()
        })
        .collect()
}

/// A tensor of `shape` from `values` on `device` in `dtype`.
pub fn tensor<const D: usize>(
    values: &[f64],
    shape: [usize; D],
    device: &Device,
    dtype: DType,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), (device, dtype))
}

/// GroupNorm with an activation: `group_norm_with_activation` (the fused kernels) when `fused`,
/// else the composite reference.
pub type NormFn<const D: usize> =
    fn(Tensor<D>, usize, Option<Tensor<1>>, Option<Tensor<1>>, f64, Activation) -> Tensor<D>;

pub fn norm_fn<const D: usize>(fused: bool) -> NormFn<D> {
    if fused {
        group_norm_with_activation::<D>
    } else {
        composite::group_norm::<D>
    }
}

/// `values` (an `[n, c, h, w]` tensor in NCHW order) stored NHWC: an `[N, H, W, C]` tensor
/// seen through a permutation, the layout CubeCL convolutions return.
pub fn nhwc(values: &[f64], [n, c, h, w]: [usize; 4], device: &Device, dtype: DType) -> Tensor<4> {
    let mut stored = vec![0.0; values.len()];
    for (i, v) in values.iter().enumerate() {
        let (ni, ci, hi, wi) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
        stored[((ni * h + hi) * w + wi) * c + ci] = *v;
    }
    tensor(&stored, [n, h, w, c], device, dtype).permute([0, 3, 1, 2])
}

/// The backend's backward op on `dy`, the forward's input `x`, `[gamma, beta]` and the
/// forward's `[mean, rstd]`: `[dx, dgamma, dbeta]`.
pub fn backend_backward(
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
