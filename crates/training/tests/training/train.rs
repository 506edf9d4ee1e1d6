//! The training engine end to end on the synthetic data: it learns, writes its artifacts,
//! resumes exactly (also after a SIGKILL mid-epoch or mid-checkpoint), refuses to resume with
//! other options, and runs on every compiled backend.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use burn::optim::OptimizerRecord;
use burn::optim::lr_scheduler::LrSchedulerRecord;
use burn::store::ModuleRecord;
use burn::tensor::{Device, Tensor};
use burn::train::checkpoint::Checkpoint;
use training::{self, DeviceSpec, GpuBackends, RunControl, RunMetrics, TrainError, TrainOptions};

/// Every backend compiled into this test build, by name: flex (a default feature), ndarray
/// with its feature, wgpu with `wgpu-tests` (a driver is needed to run, not to build), so the
/// README's test command covers flex and ndarray and CI's `--features wgpu-tests` run adds wgpu
/// on lavapipe.
// The pushes depend on the compiled features.
#[allow(clippy::vec_init_then_push)]
fn devices() -> Vec<(&'static str, Device)> {
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

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gn-burn-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A small, quick configuration: ResNet-18 at width 8 on 16x16 synthetic images (the CIFAR
/// stem, as for 32x32), batches of 16 at a learning rate of 0.1.
pub(crate) fn small(train: usize, valid: usize, epochs: usize) -> TrainOptions {
    TrainOptions {
        base_width: 8,
        groups: 8,
        image_size: Some(16),
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
/// `data_readers.rs`). Without augmentation (which slows learning on so short a run; the
/// other tests here train with it), measured on this configuration: 73.5% and 68.5%
/// validation accuracy after 6 epochs of 2000 images at seeds 0 and 7 (unseen validation
/// draws), 10-16% after the first epoch. 40% is four times chance and 12 standard deviations
/// of a chance score on 400 images, out of reach of a broken model, and leaves room for
/// floating-point differences between machines changing the trajectory.
#[test]
fn learns_the_synthetic_task_and_writes_its_artifacts() {
    let device = Device::flex();
    let dir = temp_dir("learns");
    let options = TrainOptions {
        no_augment: true,
        ..small(2000, 400, 6)
    };
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
    // It records the groups each stage was built with (8 groups at width 8: every layer has
    // at least 8 channels).
    let groups: Vec<(&str, usize, usize)> = config
        .norm_groups
        .iter()
        .map(|s| (s.stage.as_str(), s.channels, s.groups))
        .collect();
    assert_eq!(
        groups,
        [
            ("stem", 8, 8),
            ("layer1", 8, 8),
            ("layer2", 16, 8),
            ("layer3", 32, 8),
            ("layer4", 64, 8),
        ]
    );
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
    // Other options are refused, each named with its saved and given value.
    let other = TrainOptions {
        base_width: 16,
        lr: 0.4,
        ..options.clone()
    };
    let err = training::train(&other, &split, &resume, &device).unwrap_err();
    match &err {
        TrainError::ResumeMismatch { differences, .. } => {
            let mut named: Vec<(&str, &str, &str)> = differences
                .iter()
                .map(|d| (d.option.as_str(), d.saved.as_str(), d.given.as_str()))
                .collect();
            named.sort();
            assert_eq!(
                named,
                [("--base-width", "8", "16"), ("--lr", "1.6", "0.4")],
                "{err}"
            );
        }
        other => panic!("expected ResumeMismatch, got {other}"),
    }
    assert!(
        err.to_string().contains("--base-width: saved 8, given 16"),
        "{err}"
    );
    // Fewer epochs too (only raising them is allowed).
    let fewer = TrainOptions {
        epochs: 1,
        ..options.clone()
    };
    let err = training::train(&fewer, &split, &resume, &device).unwrap_err();
    assert!(
        err.to_string().contains("--epochs: saved 2, given 1"),
        "{err}"
    );
    // The refusals changed nothing: the saved options are the run's.
    let saved: training::RunConfig = training::read_json(&split.join("config.json")).unwrap();
    assert_eq!(saved.options, options);
    // --workers only sets how many batches are prepared ahead: accepted.
    let fewer_workers = TrainOptions {
        workers: 0,
        ..options.clone()
    };
    training::train(&fewer_workers, &split, &resume, &device).unwrap();

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

    // A raised --epochs continues the finished run with a third epoch.
    let more = TrainOptions {
        epochs: 3,
        ..options.clone()
    };
    let report = training::train(&more, &split, &resume, &device).unwrap();
    assert_eq!(report.metrics.epochs.len(), 3);
    assert_eq!(training::last_complete_epoch(&split), Some(3));
    for (x, y) in b.epochs.iter().zip(&report.metrics.epochs) {
        let key = |e: &training::EpochMetrics| (e.train_loss, e.valid_loss, e.valid_accuracy);
        assert_eq!(key(x), key(y), "epoch {} was trained again", x.epoch);
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
    options.dataset = training::data::DatasetKind::Cifar10;
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

    // A group count that does not divide a layer is refused, not replaced.
    let options = TrainOptions {
        groups: 3,
        ..small(64, 32, 1)
    };
    let err = training::train(&options, &dir, &RunControl::default(), &device).unwrap_err();
    assert!(
        err.to_string()
            .contains("--groups 3 does not divide the 8 channels of norm layer bn1"),
        "{err}"
    );

    // A GPU index in a build without a GPU backend is an error, not the default device.
    if GpuBackends::COMPILED == GpuBackends::default() {
        let options = TrainOptions {
            devices: vec![DeviceSpec::Gpu(1)],
            ..small(64, 32, 1)
        };
        let err = training::train(&options, &dir, &RunControl::default(), &device).unwrap_err();
        assert!(err.to_string().contains("no GPU backend"), "{err}");
    }
    assert!(
        !dir.join("checkpoint").exists(),
        "nothing is written for a run that cannot start"
    );
}

// The crash tests: a child process (this test binary, running `crash_child`) trains until the
// fault named in GN_BURN_FAULT stops it, is SIGKILLed there, and the run is resumed here.

/// Tells `crash_child` where to train.
const CHILD_DIR: &str = "GN_BURN_CRASH_CHILD_DIR";

/// 3 epochs of 6 steps (96 images, batches of 16).
fn crash_options() -> TrainOptions {
    small(96, 32, 3)
}

#[test]
#[ignore = "the training child of the crash tests; runs only with GN_BURN_CRASH_CHILD_DIR set"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    training::train(
        &crash_options(),
        Path::new(&dir),
        &RunControl::default(),
        &Device::flex(),
    )
    .unwrap();
    panic!("the run finished: the fault in GN_BURN_FAULT was never reached");
}

/// Runs `crash_child` with `fault` in a child process, waits until it stops at the fault and
/// `ready` holds, and kills it with SIGKILL.
fn kill_at_fault(dir: &Path, fault: &str, ready: impl Fn() -> bool) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["train::crash_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_DIR, dir)
        .env(training::fault::FAULT_ENV, fault)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read until the fault's line; the pipe stays open until the child is dead.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut output = String::new();
    let paused = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break false;
        }
        if line.starts_with("GN_BURN_FAULT paused") {
            break true;
        }
        output.push_str(&line);
    };
    if !paused {
        let status = child.wait().unwrap();
        panic!("the child ended ({status}) before the fault {fault}:\n{output}");
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ready() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{fault}: the child paused, but what the test waits for never came");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
    drop(stderr);
}

/// The metrics of the crash runs without a crash (computed once for both tests).
fn uninterrupted() -> &'static RunMetrics {
    static METRICS: OnceLock<RunMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let dir = temp_dir("crash-straight");
        let report = training::train(
            &crash_options(),
            &dir,
            &RunControl::default(),
            &Device::flex(),
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        report.metrics
    })
}

/// Resumes the killed run in `dir` and checks that it finishes as the uninterrupted run,
/// and that every file it leaves is whole.
fn resume_and_check(dir: &Path) {
    let device = Device::flex();
    let resume = RunControl {
        resume: true,
        ..RunControl::default()
    };
    let report = training::train(&crash_options(), dir, &resume, &device).unwrap();
    let metrics = &report.metrics;
    assert_eq!(metrics.epochs.len(), 3, "{metrics:?}");
    for (x, y) in uninterrupted().epochs.iter().zip(&metrics.epochs) {
        let close = |p: Option<f64>, q: Option<f64>| {
            (p.unwrap() - q.unwrap()).abs() <= 1e-3 * p.unwrap().abs().max(1.0)
        };
        assert!(
            close(x.train_loss, y.train_loss)
                && close(x.valid_loss, y.valid_loss)
                && close(x.valid_accuracy, y.valid_accuracy),
            "epoch {}: uninterrupted {x:?}, killed and resumed {y:?}",
            x.epoch
        );
    }
    assert_eq!(training::last_complete_epoch(dir), Some(3));
    // Every checkpoint left loads, and no temporary file is left.
    let checkpoints = dir.join("checkpoint");
    for entry in std::fs::read_dir(&checkpoints).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let loaded = match name.split('-').next().unwrap() {
            "model" => <ModuleRecord as Checkpoint>::load(path.clone()).map(drop),
            "optim" => <OptimizerRecord as Checkpoint>::load(path.clone()).map(drop),
            "scheduler" => <LrSchedulerRecord as Checkpoint>::load(path.clone()).map(drop),
            _ => panic!("unexpected file {name} in checkpoint/"),
        };
        loaded.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(name.ends_with(".bpk"), "{name} left in checkpoint/");
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "{name} left in the run");
    }
    let (model, _) = training::load_run(dir, &device).unwrap();
    let x = Tensor::<4>::ones([1, 3, 32, 32], &device);
    assert!(
        model
            .forward(x)
            .into_data()
            .iter::<f32>()
            .all(f32::is_finite)
    );
}

/// SIGKILL in the middle of epoch 2: the resumed run continues from epoch 1.
#[test]
fn resumes_after_a_kill_in_the_middle_of_an_epoch() {
    let dir = temp_dir("killed-mid-epoch");
    // Step 9 is the fourth of epoch 2's six; wait for epoch 1's checkpoint, written in the
    // background, before the kill.
    kill_at_fault(&dir, "pause-at-step:9", || {
        training::last_complete_epoch(&dir) == Some(1)
    });
    assert!(dir.join("train/epoch-2").is_dir(), "epoch 2 had started");
    assert!(!dir.join("checkpoint/model-2.bpk").exists());
    assert!(!dir.join("metrics.json").exists());
    resume_and_check(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGKILL halfway through writing epoch 2's optimizer checkpoint (the model's and the
/// scheduler's may be written or not: their threads run on): epoch 1 is still complete, the
/// half-written file is only a temporary, and the resumed run continues from epoch 1.
#[test]
fn resumes_after_a_kill_in_the_middle_of_a_checkpoint() {
    let dir = temp_dir("killed-mid-checkpoint");
    kill_at_fault(&dir, "pause-in-checkpoint:optim:2", || {
        training::last_complete_epoch(&dir) == Some(1)
    });
    let checkpoints = dir.join("checkpoint");
    assert!(checkpoints.join("optim-2.bpk.tmp").is_file());
    assert!(!checkpoints.join("optim-2.bpk").exists());
    assert_eq!(training::last_complete_epoch(&dir), Some(1));
    resume_and_check(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}
