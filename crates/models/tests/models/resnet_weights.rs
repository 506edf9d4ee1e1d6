//! The ResNet family against PyTorch: width-8 timm ResNets with random non-trivial weights
//! (`tools/gen_resnet_fixtures.py`) load through `load_pytorch_weights` and reproduce PyTorch's
//! float64 logits; weights round-trip; bad files give clear errors.

use crate::common::{Fixture, assert_close, devices, fixture_path, values};
use burn::module::Module;
use burn::tensor::{DType, Device};
use models::resnet::{Norm, ResNet, ResNetConfig, Stem, WeightsError};

/// Relative tolerance of f32 logits against the f64 reference after 18 or 50 layers of f32
/// convolutions (measured errors are about 1e-6; BN's eval mode has no normalizing effect to
/// damp rounding, hence the margin).
const LOGITS_TOLERANCE: f64 = 5e-5;

struct FixtureModel {
    name: &'static str,
    weights: &'static str,
}

const MODELS: &[FixtureModel] = &[
    FixtureModel {
        name: "resnet50_gn_w8",
        weights: "resnet50_gn_w8.safetensors",
    },
    FixtureModel {
        name: "resnet18_gn_w8",
        weights: "resnet18_gn_w8.pth",
    },
    FixtureModel {
        name: "resnet50_bn_w8",
        weights: "resnet50_bn_w8.safetensors",
    },
    FixtureModel {
        name: "resnet18_bn_w8",
        weights: "resnet18_bn_w8.safetensors",
    },
    FixtureModel {
        name: "resnet18_gn_w8_cifar",
        weights: "resnet18_gn_w8_cifar.safetensors",
    },
];

/// The configuration the fixture's metadata describes.
fn config(io: &Fixture) -> ResNetConfig {
    let classes = io.meta("num_classes").parse().unwrap();
    let config = ResNetConfig::by_name(io.meta("arch"), classes).unwrap();
    let norm = match io.meta("norm") {
        "gn" => Norm::Group {
            num_groups: io.meta("num_groups").parse().unwrap(),
        },
        "bn" => Norm::Batch,
        other => panic!("unknown norm {other}"),
    };
    let stem = match io.meta("stem") {
        "imagenet" => Stem::ImageNet,
        "cifar" => Stem::Cifar,
        other => panic!("unknown stem {other}"),
    };
    config
        .with_norm(norm)
        .with_stem(stem)
        .with_base_width(io.meta("width").parse().unwrap())
}

fn load(model: &FixtureModel, device: &Device) -> (ResNet, Fixture) {
    let io = Fixture::load(&format!("resnet/{}_io.safetensors", model.name));
    let resnet = config(&io)
        .init(device)
        .load_pytorch_weights(fixture_path(&format!("resnet/{}", model.weights)))
        .unwrap_or_else(|e| panic!("{}: {e}", model.name));
    (resnet, io)
}

#[test]
fn logits_match_pytorch() {
    for (backend, device) in devices() {
        for model in MODELS {
            let (resnet, io) = load(model, &device);
            let logits = resnet.forward(io.get("x").tensor::<4>(&device, DType::F32));
            assert_close(
                &format!("{} logits on {backend}", model.name),
                &values(logits),
                &io.get("logits").values,
                LOGITS_TOLERANCE,
            );
        }
    }
}

/// With GroupNorm a sample's logits do not depend on the rest of the batch (with BatchNorm in
/// training mode they would).
#[test]
fn group_norm_logits_are_batch_independent() {
    let device = Device::flex().autodiff();
    let (resnet, io) = load(&MODELS[0], &device);
    let x = io.get("x").tensor::<4>(&device, DType::F32);
    let batch = values(resnet.forward(x.clone()));
    for i in 0..2 {
        let alone = values(resnet.forward(x.clone().narrow(0, i, 1)));
        assert_close(
            &format!("sample {i}"),
            &alone,
            &batch[i * 10..(i + 1) * 10],
            1e-6,
        );
    }
}

#[test]
fn group_norm_parameter_counts_match_torchvision_and_timm() {
    let device = Device::flex();
    for (config, expected) in [
        (ResNetConfig::resnet18(1000), 11_689_512),
        (ResNetConfig::resnet34(1000), 21_797_672),
        (ResNetConfig::resnet50(1000), 25_557_032),
        (ResNetConfig::resnet101(1000), 44_549_160),
        (ResNetConfig::resnet152(1000), 60_192_808),
    ] {
        // burn counts BatchNorm's running statistics as parameters; GroupNorm has none.
        let model = config
            .clone()
            .with_norm(Norm::Group { num_groups: 32 })
            .init(&device);
        assert_eq!(model.num_params(), expected, "{:?}", config.layers);
    }
}

#[test]
fn identity_norm_removes_every_norm_layer() {
    let device = Device::flex();
    // ResNet-50's norm layers hold 26 560 channels (stem 64; per stage, blocks x (w + w + 4w)
    // plus the downsample's 4w): 2 x 26 560 gamma and beta values fewer than with GroupNorm.
    let model = ResNetConfig::resnet50(1000)
        .with_norm(Norm::Identity)
        .init(&device);
    assert_eq!(model.num_params(), 25_557_032 - 2 * 26_560);

    let model = ResNetConfig::resnet18(10)
        .with_norm(Norm::Identity)
        .with_base_width(8)
        .init(&device);
    let x = burn::tensor::Tensor::<4>::ones([2, 3, 32, 32], &device);
    assert_eq!(model.forward(x).dims(), [2, 10]);
}

fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gn-burn-resnet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn weights_round_trip_exactly() {
    let device = Device::flex();
    for model in [&MODELS[0], &MODELS[3]] {
        let (resnet, io) = load(model, &device);
        let x = io.get("x").tensor::<4>(&device, DType::F32);
        let reference = values(resnet.forward(x.clone()));

        let path = temp_path(&format!("{}.safetensors", model.name));
        resnet.save_pytorch_weights(&path).unwrap();
        let again = config(&io)
            .init(&device)
            .load_pytorch_weights(&path)
            .unwrap();
        assert_eq!(
            values(again.forward(x.clone())),
            reference,
            "{} via safetensors",
            model.name
        );

        let path = temp_path(model.name);
        resnet.clone().save_file(&path).unwrap();
        let again = config(&io).init(&device).load_file(&path);
        assert_eq!(
            values(again.forward(x)),
            reference,
            "{} via burnpack",
            model.name
        );
    }
}

#[test]
fn wrong_architecture_lists_the_keys() {
    let device = Device::flex();
    let resnet50 = ResNetConfig::resnet50(10)
        .with_norm(Norm::Group { num_groups: 4 })
        .with_base_width(8)
        .init(&device);
    let err = resnet50
        .load_pytorch_weights(fixture_path("resnet/resnet18_gn_w8.pth"))
        .unwrap_err();
    match &err {
        WeightsError::Incompatible {
            missing,
            mismatched,
            ..
        } => {
            assert!(
                missing.contains(&"layer1.0.conv3.weight".to_string()),
                "{err}"
            );
            assert!(mismatched.iter().any(|(k, _, _)| k == "fc.weight"), "{err}");
        }
        other => panic!("expected Incompatible, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("resnet18_gn_w8.pth"), "{message}");
    assert!(message.contains("missing keys"), "{message}");
    assert!(
        message.contains("fc.weight: expected [10, 256], found [10, 64]"),
        "{message}"
    );

    // GN weights into a BN model: the running statistics are missing.
    let bn = ResNetConfig::resnet18(10)
        .with_norm(Norm::Batch)
        .with_base_width(8)
        .init(&device);
    match bn.load_pytorch_weights(fixture_path("resnet/resnet18_gn_w8.pth")) {
        Err(WeightsError::Incompatible {
            missing,
            unexpected,
            ..
        }) => {
            assert!(missing.contains(&"bn1.running_mean".to_string()));
            assert!(unexpected.is_empty());
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
}

#[test]
fn unreadable_files_name_the_file() {
    let device = Device::flex();
    let model = ResNetConfig::resnet18(10)
        .with_norm(Norm::Group { num_groups: 4 })
        .with_base_width(8)
        .init(&device);
    let x = burn::tensor::Tensor::<4>::ones([1, 3, 32, 32], &device);
    let before = values(model.forward(x.clone()));

    let missing = temp_path("does-not-exist.safetensors");
    let err = model.load_pytorch_weights(&missing).unwrap_err();
    assert!(matches!(err, WeightsError::Read { .. }), "{err}");
    assert!(
        err.to_string().contains("does-not-exist.safetensors"),
        "{err}"
    );

    for (name, source) in [
        ("truncated.pth", "resnet/resnet18_gn_w8.pth"),
        (
            "truncated.safetensors",
            "resnet/resnet18_gn_w8_cifar.safetensors",
        ),
    ] {
        let bytes = std::fs::read(fixture_path(source)).unwrap();
        let path = temp_path(name);
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = model.load_pytorch_weights(&path).unwrap_err();
        assert!(matches!(err, WeightsError::Read { .. }), "{name}: {err}");
        assert!(err.to_string().contains(name), "{err}");
    }

    let garbage = temp_path("garbage.pth");
    std::fs::write(&garbage, b"this is not a checkpoint").unwrap();
    let err = model.load_pytorch_weights(&garbage).unwrap_err();
    assert!(matches!(err, WeightsError::Read { .. }), "{err}");

    // The model is untouched by the failed loads.
    assert_eq!(values(model.forward(x)), before);
}

#[test]
fn integer_weights_are_rejected() {
    let device = Device::flex();
    let (resnet, io) = load(&MODELS[3], &device);
    // Rewrite the fixture with fc.bias stored as int64.
    let bytes = std::fs::read(fixture_path("resnet/resnet18_bn_w8.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = vec![0u8; 8 * 10];
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != "fc.bias")
        .collect();
    views.push((
        "fc.bias".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![10], &ints).unwrap(),
    ));
    let path = temp_path("int-bias.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let err = config(&io)
        .init(&device)
        .load_pytorch_weights(&path)
        .unwrap_err();
    match &err {
        WeightsError::Incompatible { wrong_dtype, .. } => {
            assert_eq!(wrong_dtype.len(), 1, "{err}");
            assert_eq!(wrong_dtype[0].0, "fc.bias");
        }
        other => panic!("expected Incompatible, got {other}"),
    }
    drop(resnet);
}

#[test]
fn saving_needs_a_safetensors_path() {
    let model = ResNetConfig::resnet18(10)
        .with_base_width(8)
        .with_norm(Norm::Group { num_groups: 4 })
        .init(&Device::flex());
    let err = model
        .save_pytorch_weights(temp_path("out.pth"))
        .unwrap_err();
    assert!(err.to_string().contains("ending in .safetensors"), "{err}");
}
