//! Helpers of the weight tests: the devices to test on, the PyTorch fixtures (safetensors files
//! written by `tools/gen_resnet_fixtures.py`) and comparisons with stated tolerances.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{DType, Device, Tensor, TensorData};
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

/// A file under this crate's `tests/fixtures`.
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
