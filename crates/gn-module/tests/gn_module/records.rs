//! Records and interop: burnpack save/load is bit-exact, the config round-trips through JSON,
//! and PyTorch `nn.GroupNorm` state dicts (`weight`, `bias`) load into gamma and beta through
//! burn-store's PyTorch adapter (fixtures from `tools/gen_group_norm_state_fixture.py`).

use crate::common::{Fixture, assert_close, fixture_path, randn, tensor, values};
use crate::reference::{Output, Problem, assert_within};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::store::{ModuleSnapshot, PytorchStore};
use burn::tensor::{DType, Device, Tensor};
use gn_module::{Activation, GroupNorm, GroupNormConfig};

fn device() -> Device {
    Device::flex()
}

/// A model that holds the norm under the field name the PyTorch fixture uses (`norm`).
#[derive(Module, Debug)]
struct Net {
    norm: GroupNorm,
}

fn random_norm(device: &Device) -> GroupNorm {
    let mut gn = GroupNormConfig::new(4, 8).init(device);
    gn.gamma = Some(Param::from_tensor(tensor(
        &randn(8, 21),
        [8],
        device,
        DType::F32,
    )));
    gn.beta = Some(Param::from_tensor(tensor(
        &randn(8, 22),
        [8],
        device,
        DType::F32,
    )));
    gn
}

#[test]
fn burnpack_round_trip_is_bit_exact() {
    let device = device();
    let dir = std::env::temp_dir().join(format!("gn-burn-records-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("norm");
    let original = random_norm(&device);
    original.clone().save_file(&path).expect("save");
    let loaded = GroupNormConfig::new(4, 8).init(&device).load_file(&path);
    let bits = |p: &Option<Param<Tensor<1>>>| {
        p.as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&loaded.gamma), bits(&original.gamma));
    assert_eq!(bits(&loaded.beta), bits(&original.beta));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_round_trips_through_json() {
    let config = GroupNormConfig::from_group_size(8, 64)
        .with_epsilon(1e-6)
        .with_affine(false)
        .with_activation(Activation::Silu);
    let json = serde_json::to_string(&config).unwrap();
    let back: GroupNormConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back.num_groups, 8);
    assert_eq!(back.num_channels, 64);
    assert_eq!(back.epsilon, 1e-6);
    assert!(!back.affine);
    assert_eq!(back.activation, Activation::Silu);
    assert_eq!(back.group_size, Some(8));
    // burn's Config file helpers work too.
    let path = std::env::temp_dir().join(format!("gn-config-{}.json", std::process::id()));
    config.save(&path).unwrap();
    let loaded = GroupNormConfig::load(&path).unwrap();
    assert_eq!(loaded.activation, Activation::Silu);
    std::fs::remove_file(&path).ok();
}

/// A PyTorch state dict (`norm.weight`, `norm.bias`) loads into gamma and beta, and the loaded
/// layer reproduces PyTorch's output.
#[test]
fn loads_pytorch_group_norm_state() {
    let device = device();
    let io = Fixture::load("group_norm/torch_state_io.safetensors");
    let mut net = Net {
        norm: GroupNormConfig::new(4, 8).init(&device),
    };
    let mut store = PytorchStore::from_file(fixture_path("group_norm/torch_state.pt"));
    let result = net.load_from(&mut store).expect("load");
    assert!(
        result.errors.is_empty() && result.missing.is_empty(),
        "{result}"
    );
    assert_close(
        "gamma",
        &values(net.norm.gamma.as_ref().unwrap().val()),
        &io.get("weight").values,
        0.0,
    );
    assert_close(
        "beta",
        &values(net.norm.beta.as_ref().unwrap().val()),
        &io.get("bias").values,
        0.0,
    );
    let x = io.get("x");
    let y = net.norm.forward(x.tensor::<4>(&device, DType::F32));
    // Held to the bound of an f32 result (see `reference`), against PyTorch's float64 output.
    let mut problem = Problem::new(
        &x.shape,
        4,
        Activation::None,
        DType::F32,
        &x.values,
        &io.get("weight").values,
        &io.get("bias").values,
        &vec![0.0; x.values.len()],
    );
    problem.epsilon = io.meta("eps").parse().unwrap();
    assert_within(
        "y",
        &values(y),
        &io.get("y").values,
        &problem.reference().bound(Output::Y, DType::F32),
    );
}

/// A bare `nn.GroupNorm` state dict (`weight`, `bias` at the top level) loads into the layer.
#[test]
fn loads_a_bare_pytorch_group_norm() {
    let device = device();
    let io = Fixture::load("group_norm/torch_state_io.safetensors");
    let mut gn = GroupNormConfig::new(4, 8).init(&device);
    let mut store = PytorchStore::from_file(fixture_path("group_norm/torch_groupnorm_bare.pt"));
    let result = gn.load_from(&mut store).expect("load");
    assert!(
        result.errors.is_empty() && result.missing.is_empty(),
        "{result}"
    );
    assert_eq!(result.applied.len(), 2, "{result}");
    assert_close(
        "gamma",
        &values(gn.gamma.unwrap().val()),
        &io.get("weight").values,
        0.0,
    );
    assert_close(
        "beta",
        &values(gn.beta.unwrap().val()),
        &io.get("bias").values,
        0.0,
    );
}
