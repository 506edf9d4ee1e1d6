//! What the comparisons with the PyTorch mirror use: `--save-init` / `--init-weights` (a run
//! starts from exactly the weights another wrote, classifier and BatchNorm statistics
//! included) and the step profile.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;
use training::profile::profile_steps;
use training::{NormChoice, RunControl, TrainOptions};

use crate::train::{small, temp_dir};

/// The tensors of a .safetensors file by name: dtype, shape and raw bytes (the header's
/// metadata and key order are not part of the weights).
fn tensors(path: &Path) -> BTreeMap<String, (String, Vec<u64>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, t)| {
            let offsets: Vec<usize> = serde_json::from_value(t["data_offsets"].clone()).unwrap();
            let value = (
                t["dtype"].as_str().unwrap().to_string(),
                serde_json::from_value(t["shape"].clone()).unwrap(),
                data[offsets[0]..offsets[1]].to_vec(),
            );
            (name, value)
        })
        .collect()
}

#[test]
fn a_run_starts_from_exactly_the_weights_given() {
    let device = Device::flex();
    let dir = temp_dir("init-weights");
    let run = |options: &TrainOptions, name: &str| {
        training::train(options, &dir.join(name), &RunControl::default(), &device).unwrap()
    };
    let first = TrainOptions {
        norm: NormChoice::Bn,
        save_init: Some(dir.join("first.safetensors")),
        ..small(32, 16, 1)
    };
    run(&first, "first");
    let saved = tensors(&dir.join("first.safetensors"));
    // Every parameter and BatchNorm statistic of the model, the classifier included.
    assert!(saved.contains_key("fc.weight") && saved.contains_key("layer4.1.bn2.running_var"));

    // Another seed draws other weights...
    let other_seed = TrainOptions {
        seed: first.seed + 1,
        save_init: Some(dir.join("other.safetensors")),
        ..first.clone()
    };
    run(&other_seed, "other");
    assert!(tensors(&dir.join("other.safetensors")) != saved);

    // ...unless it starts from the first run's: then it starts from them, all of them.
    let from_first = TrainOptions {
        init_weights: Some(dir.join("first.safetensors")),
        save_init: Some(dir.join("again.safetensors")),
        ..other_seed.clone()
    };
    let report = run(&from_first, "again");
    assert!(tensors(&dir.join("again.safetensors")) == saved);
    // And it trained from there: the final weights are not the initial ones.
    report
        .model
        .save_pytorch_weights(dir.join("final.safetensors"))
        .unwrap();
    assert!(tensors(&dir.join("final.safetensors")) != saved);

    // Weights of another architecture are refused before training, naming what differs.
    let wider = TrainOptions {
        base_width: 16,
        init_weights: Some(dir.join("first.safetensors")),
        save_init: None,
        ..small(32, 16, 1)
    };
    let err = training::train(&wider, &dir.join("wider"), &RunControl::default(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("first.safetensors") && err.contains("conv1.weight"),
        "{err}"
    );
    assert!(!dir.join("wider").join("checkpoint").exists());

    let both = TrainOptions {
        pretrained: Some(dir.join("first.safetensors")),
        ..from_first
    };
    let err = training::train(&both, &dir.join("both"), &RunControl::default(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--pretrained and --init-weights"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_step_profile_times_every_phase_of_the_recipe() {
    let options = TrainOptions {
        workers: 2,
        ..small(48, 20, 2)
    };
    let profile = profile_steps(&options, &Device::flex(), 4, 1, &std::env::temp_dir()).unwrap();
    assert_eq!(profile.train_steps, 4);
    assert_eq!((profile.batch_size, profile.steps_per_epoch), (16, 3));
    // 20 validation images in batches of 16.
    assert_eq!(profile.valid_batches, 2);
    let t = &profile.train;
    for (phase, seconds) in [
        ("data", t.data),
        ("forward", t.forward),
        ("backward", t.backward),
        ("optimizer", t.optimizer),
        ("metrics", t.metrics),
        ("valid forward", profile.valid.forward),
        ("checkpoint", profile.checkpoint),
    ] {
        assert!(seconds > 0.0 && seconds.is_finite(), "{phase}: {seconds}");
    }
    // Validation has no backward or optimizer step.
    assert_eq!(
        (profile.valid.backward, profile.valid.optimizer),
        (0.0, 0.0)
    );
    let per_epoch = t.total() / 4.0 * 3.0 + profile.valid.total() + profile.checkpoint;
    assert!((profile.epoch_estimate() - per_epoch).abs() < 1e-12);
}
