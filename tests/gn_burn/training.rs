//! The training engine end to end on the synthetic data: it learns, writes its artifacts,
//! resumes exactly, and runs on every compiled backend.


use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use crate::common::devices;
use gn_burn::training::{self, RunControl, RunMetrics, TrainOptions};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gn-burn-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A small, quick configuration: ResNet-18 at width 8 on 32x32 synthetic images, batches of
/// 16 at a learning rate of 0.1.
fn small(train: usize, valid: usize, epochs: usize) -> TrainOptions {
    TrainOptions {
        base_width: 8,
        groups: 8,
        synthetic_train: train,
        synthetic_valid: valid,
        epochs,
        batch_size: 16,
        lr: 1.6,
        warmup_epochs: 0.5,
        workers: 1,
        ..TrainOptions::defaults()
    }
}

fn read_metrics(dir: &Path) -> RunMetrics {
    training::read_json(&dir.join("metrics.json")).expect("metrics.json")
}

/// Ten classes: chance is 10%, and a linear model on the pixels stays near it (see
/// `data_readers.rs`). Measured on this configuration: 76% after 6 epochs of 2000 images (on
/// unseen validation draws; the first two epochs stay near chance, then it takes off). 40% is
/// four times chance, out of reach of a broken model, and leaves room for floating-point
/// differences between machines changing the trajectory.
#[test]
fn learns_the_synthetic_task_and_writes_its_artifacts() {
    let device = Device::flex();
    let dir = temp_dir("learns");
    let options = small(2000, 400, 6);
    let report = training::train(&options, &dir, &RunControl::default(), &device).unwrap();
    let metrics = &report.metrics;
    assert!(
        metrics.valid_accuracy > 40.0,
        "validation accuracy {:.1}% is not clearly above chance (10%)",
        metrics.valid_accuracy
    );
    assert_eq!(metrics.epochs.len(), 6);
    let first = &metrics.epochs[0];
    let last = &metrics.epochs[5];
    assert!(
        last.train_loss.unwrap() < first.train_loss.unwrap(),
        "the training loss did not fall"
    );

    // metrics.json holds what the run reported.
    assert_eq!(&read_metrics(&dir), metrics);
    // curves.png is a PNG.
    let png = std::fs::read(dir.join("curves.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    // config.json rebuilds the model, and the saved weights are the trained ones.
    let (model, config) = training::load_run(&dir, &device).unwrap();
    assert_eq!(config.classes.len(), 10);
    assert_eq!(config.options, options);
    let x = Tensor::<4>::ones([2, 3, 32, 32], &device);
    let a = model.forward(x.clone()).into_data();
    let b = report.model.forward(x).into_data();
    a.assert_eq(&b, true);
    // The best and the last checkpoints are kept.
    assert_eq!(training::last_complete_epoch(&dir), Some(6));
    assert!(dir.join("model.safetensors").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two epochs in one go, and one epoch, a stop, then a resumed second epoch: the same
/// epoch-2 metrics (same data order, optimizer state and learning-rate schedule).
#[test]
fn resume_continues_exactly() {
    let device = Device::flex();
    let options = small(320, 96, 2);
    let straight = temp_dir("straight");
    training::train(&options, &straight, &RunControl::default(), &device).unwrap();

    let split = temp_dir("split");
    let stop = RunControl {
        stop_after: Some(1),
        ..RunControl::default()
    };
    training::train(&options, &split, &stop, &device).unwrap();
    assert_eq!(training::last_complete_epoch(&split), Some(1));
    // Starting again without --resume would clobber the run: refused.
    let err = training::train(&options, &split, &RunControl::default(), &device).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    let resume = RunControl {
        resume: true,
        ..RunControl::default()
    };
    training::train(&options, &split, &resume, &device).unwrap();

    let (a, b) = (read_metrics(&straight), read_metrics(&split));
    assert_eq!(b.epochs.len(), 2);
    for (x, y) in a.epochs.iter().zip(&b.epochs) {
        let close = |p: Option<f64>, q: Option<f64>| {
            (p.unwrap() - q.unwrap()).abs() <= 1e-3 * p.unwrap().abs().max(1.0)
        };
        assert!(
            close(x.train_loss, y.train_loss),
            "epoch {}: {x:?} vs {y:?}",
            x.epoch
        );
        assert!(
            close(x.valid_loss, y.valid_loss),
            "epoch {}: {x:?} vs {y:?}",
            x.epoch
        );
        assert!(
            close(x.valid_accuracy, y.valid_accuracy),
            "epoch {}: {x:?} vs {y:?}",
            x.epoch
        );
        assert!(
            close(x.learning_rate, y.learning_rate),
            "epoch {}: {x:?} vs {y:?}",
            x.epoch
        );
    }
    let _ = std::fs::remove_dir_all(&straight);
    let _ = std::fs::remove_dir_all(&split);
}

/// One short run per backend (NdArray's convolutions are slow: keep it tiny).
#[test]
fn trains_on_every_backend() {
    for (backend, device) in devices() {
        let dir = temp_dir(&format!("backend-{backend}"));
        let mut options = small(64, 32, 1);
        options.batch_size = 16;
        let report = training::train(&options, &dir, &RunControl::default(), &device)
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let epoch = &report.metrics.epochs[0];
        assert!(
            epoch.train_loss.unwrap().is_finite(),
            "{backend}: {epoch:?}"
        );
        assert!(
            epoch.valid_loss.unwrap().is_finite(),
            "{backend}: {epoch:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn bad_options_and_data_fail_before_training() {
    let device = Device::flex();
    let dir = temp_dir("bad");
    let mut options = small(64, 32, 1);
    options.model = "resnet7".into();
    let err = training::train(&options, &dir, &RunControl::default(), &device).unwrap_err();
    assert!(
        err.to_string().contains("unknown --model \"resnet7\""),
        "{err}"
    );

    let mut options = small(64, 32, 1);
    options.dataset = gn_burn::data::DatasetKind::Cifar10;
    options.data_dir = Some("/no/such/cifar".into());
    let err = training::train(&options, &dir, &RunControl::default(), &device).unwrap_err();
    assert!(err.to_string().contains("/no/such/cifar"), "{err}");
    assert!(
        !dir.join("checkpoint").exists(),
        "nothing is written for a run that cannot start"
    );

    let err = training::train(
        &small(64, 32, 1),
        &dir,
        &RunControl {
            resume: true,
            ..Default::default()
        },
        &device,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nothing to resume"), "{err}");
}
