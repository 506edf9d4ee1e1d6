#![warn(missing_docs)]
//! The training program's engine, shared by the `train`, `infer` and `batch_size_study`
//! examples: open the data ([`data`]), build the ResNet, run burn-train's supervised learner,
//! and write the artifacts (`config.json`, `metrics.json`, the final weights, `curves.png`
//! drawn by [`plot`]); [`study`] runs the batch-size study on top of [`train`].

pub mod data;
pub mod plot;
pub mod profile;
pub mod study;

mod artifacts;
mod checkpoint;
mod classifier;
mod devices;
pub mod fault;
mod options;
mod renderer;
mod report;
mod schedule;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use burn::data::dataloader::DataLoader;
use burn::module::Module;
use burn::tensor::Device;
use burn::train::checkpoint::{
    ComposedCheckpointingStrategy, KeepLastNCheckpoints, MetricCheckpointingStrategy,
};
use burn::train::metric::store::{Aggregate, Direction, EventStoreClient, Split};
use burn::train::metric::{
    AccuracyMetric, LearningRateMetric, LossMetric, Metric, TopKAccuracyMetric,
};
use burn::train::{
    EarlyStoppingStrategy, ExecutionStrategy, Learner, MetricEarlyStoppingStrategy,
    MultiDeviceOptim, StoppingCondition, SupervisedTraining,
};
use models::resnet::{Norm, ResNet, ResNetConfig, StageGroups};
use serde::{Deserialize, Serialize};

pub use artifacts::{
    default_artifact_dir, last_complete_epoch, link_last, read_json, write_atomic, write_json,
};
pub use classifier::Classifier;
pub use devices::{Adapter, DeviceSelection, DeviceSpec, GpuBackends, WgpuApi, select_devices};
pub use options::{NormChoice, OptimizerChoice, OptionDifference, StemChoice, TrainOptions};
pub use renderer::LineRenderer;
pub use report::{EpochMetrics, RunMetrics};
pub use schedule::{Decay, Schedule};

use crate::data::{DataError, DataOptions, DatasetKind, EpochLoader, ImageBatcher, Normalization};

/// Why a run failed.
#[derive(Debug)]
pub enum TrainError {
    /// Invalid options.
    Options(String),
    /// The data could not be opened.
    Data(DataError),
    /// Pretrained weights could not be loaded.
    Weights(models::resnet::WeightsError),
    /// A file of the artifact directory could not be read or written.
    Io {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// `--resume` with options other than the saved run's.
    ResumeMismatch {
        /// The run.
        artifact_dir: PathBuf,
        /// What differs.
        differences: Vec<OptionDifference>,
    },
    /// Training stopped with an error.
    Training(String),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Options(m) => write!(f, "invalid options: {m}"),
            TrainError::Data(e) => write!(f, "data: {e}"),
            TrainError::Weights(e) => write!(f, "weights to start from: {e}"),
            TrainError::Io { path, message } => write!(f, "{}: {message}", path.display()),
            TrainError::ResumeMismatch {
                artifact_dir,
                differences,
            } => {
                write!(
                    f,
                    "cannot resume {}: options differ from its config.json:",
                    artifact_dir.display()
                )?;
                for d in differences {
                    write!(f, " {}: saved {}, given {};", d.option, d.saved, d.given)?;
                }
                write!(
                    f,
                    " a resumed run keeps its saved options (only --epochs may be raised); start \
                     a new run in another --artifact-dir to change them"
                )
            }
            TrainError::Training(m) => write!(f, "training failed: {m}"),
        }
    }
}

impl std::error::Error for TrainError {}

impl TrainError {
    pub(crate) fn io(path: &Path, err: impl std::fmt::Display) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            message: err.to_string(),
        }
    }
}

impl From<DataError> for TrainError {
    fn from(e: DataError) -> Self {
        TrainError::Data(e)
    }
}

/// Everything needed to rebuild the trained model and reproduce the run: the `config.json` of
/// the artifact directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    /// The options of the run.
    pub options: TrainOptions,
    /// The model.
    pub model: ResNetConfig,
    /// Class names, by label.
    pub classes: Vec<String>,
    /// Image side.
    pub image_size: usize,
    /// The per-channel normalization applied to images.
    pub normalization: Normalization,
    /// What the group norms split, per stage and channel count (empty for BatchNorm); written
    /// so that the effective groups of narrow layers are on record next to the requested
    /// count. Absent from the config.json of earlier versions.
    #[serde(default)]
    pub norm_groups: Vec<StageGroups>,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// Where the artifacts are.
    pub artifact_dir: PathBuf,
    /// Its metrics (also in `metrics.json`).
    pub metrics: RunMetrics,
    /// The trained network (in evaluation mode).
    pub model: ResNet,
}

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunControl {
    /// Continue the run in the artifact directory from its last complete epoch.
    pub resume: bool,
    /// Stop early when validation accuracy has not improved for this many epochs.
    pub patience: Option<usize>,
    /// Stop (resumably) after this epoch, as if the run had been killed there.
    pub stop_after: Option<usize>,
}

/// The early stops of [`RunControl`], as one burn strategy.
#[derive(Clone)]
struct Stopping {
    patience: Option<MetricEarlyStoppingStrategy>,
    stop_after: Option<usize>,
}

impl EarlyStoppingStrategy for Stopping {
    fn should_stop(&mut self, epoch: usize, store: &EventStoreClient) -> bool {
        let patience = self
            .patience
            .as_mut()
            .is_some_and(|p| p.should_stop(epoch, store));
        patience || self.stop_after.is_some_and(|last| epoch >= last)
    }
}

/// The CIFAR-10 training set's per-channel statistics.
const CIFAR10_NORMALIZATION: Normalization = Normalization {
    mean: [0.4914, 0.4822, 0.4465],
    std: [0.2470, 0.2435, 0.2616],
};

fn metric_names() -> [String; 4] {
    [
        LossMetric::new().name().to_string(),
        AccuracyMetric::new().name().to_string(),
        TopKAccuracyMetric::new(5).name().to_string(),
        LearningRateMetric::new().name().to_string(),
    ]
}

/// `GroupNorm groups per stage (channels/groups): stem 16/16*; layer1 16/16*; ...`, or `None`
/// for norms without groups.
pub fn describe_groups(norm: &Norm, stages: &[StageGroups]) -> Option<String> {
    let (threshold, rule) = match *norm {
        Norm::Group { num_groups } => (
            num_groups,
            format!("fewer channels than --groups {num_groups}: one channel per group"),
        ),
        Norm::BurnGroup => (
            Norm::BURN_GROUPS,
            format!(
                "fewer channels than burn's {} groups: one channel per group",
                Norm::BURN_GROUPS
            ),
        ),
        Norm::GroupSize(size) => (
            size,
            format!("fewer channels than --group-size {size}: one group"),
        ),
        Norm::Batch | Norm::Identity => return None,
    };
    let mut text = String::from("GroupNorm groups per stage (channels/groups):");
    let mut narrow = false;
    for (i, s) in stages.iter().enumerate() {
        let new_stage = i == 0 || stages[i - 1].stage != s.stage;
        if new_stage {
            text.push_str(if i == 0 { " " } else { "; " });
            text.push_str(&s.stage);
        }
        text.push_str(&format!(" {}/{}", s.channels, s.groups));
        if s.channels < threshold {
            text.push('*');
            narrow = true;
        }
    }
    if narrow {
        text.push_str(&format!(" (* {rule})"));
    }
    Some(text)
}

/// Trains a ResNet as `options` say, writing into `artifact_dir`: on `device`, or on the GPUs of
/// `options.devices` (see [`select_devices`]).
///
/// Opens and checks the data before anything else, so a bad dataset fails before training.
/// Prints the devices and the groups of the group norms per stage (see
/// [`Norm::groups_for`]) before it starts.
///
/// With `control.resume`, continues the run in `artifact_dir` from its last complete epoch
/// (same epoch, optimizer state, schedule and data order). `options` must then be the saved
/// ones (`config.json`), except that `epochs` may be raised and `workers` and `artifact_dir`
/// may differ (they do not change what is computed); anything else is refused with
/// [`TrainError::ResumeMismatch`]. What a raised `epochs` does to the learning rate:
/// [`Schedule`].
pub fn train(
    options: &TrainOptions,
    artifact_dir: &Path,
    control: &RunControl,
    device: &Device,
) -> Result<TrainReport, TrainError> {
    let started = Instant::now();
    let start_time = SystemTime::now();
    options.validate().map_err(TrainError::Options)?;
    let selection = select_devices(
        &options.devices,
        GpuBackends::COMPILED,
        std::env::var("BURN_DEVICE").ok().as_deref(),
    )
    .map_err(TrainError::Options)?;
    let splits = open_data(options)?;
    let model_config = options
        .model_config(splits.classes.len(), splits.image_size)
        .map_err(TrainError::Options)?;
    let norm_groups = model_config
        .norm_groups()
        .map_err(|e| TrainError::Options(e.to_string()))?;

    let checkpoint_dir = artifact_dir.join("checkpoint");
    let resume_epoch = if control.resume {
        let epoch = last_complete_epoch(artifact_dir).ok_or_else(|| {
            TrainError::io(
                artifact_dir,
                "nothing to resume: no complete epoch checkpoint in checkpoint/",
            )
        })?;
        let saved: RunConfig = read_json(&artifact_dir.join("config.json"))?;
        let mut differences = options.differences_from(&saved.options);
        if saved.classes != splits.classes {
            differences.push(OptionDifference {
                option: "the data's classes".into(),
                saved: saved.classes.join(","),
                given: splits.classes.join(","),
            });
        }
        if saved.image_size != splits.image_size {
            differences.push(OptionDifference {
                option: "the image size".into(),
                saved: saved.image_size.to_string(),
                given: splits.image_size.to_string(),
            });
        }
        if !differences.is_empty() {
            return Err(TrainError::ResumeMismatch {
                artifact_dir: artifact_dir.to_path_buf(),
                differences,
            });
        }
        // What a killed run was writing is incomplete: only whole files count.
        checkpoint::remove_temporaries(&checkpoint_dir)?;
        checkpoint::remove_temporaries(artifact_dir)?;
        checkpoint::check_epoch(&checkpoint_dir, epoch)?;
        Some(epoch)
    } else {
        None
    };
    if resume_epoch.is_none() && checkpoint_dir.exists() {
        return Err(TrainError::io(
            artifact_dir,
            "already holds a run's checkpoints: pass --resume to continue it, or choose another --artifact-dir",
        ));
    }
    let devices = selection.devices(device).map_err(TrainError::Options)?;
    let main_device = devices[0].clone();
    std::fs::create_dir_all(artifact_dir).map_err(|e| TrainError::io(artifact_dir, e))?;

    let normalization = normalization(options, &splits)?;
    let run_config = RunConfig {
        options: options.clone(),
        model: model_config.clone(),
        classes: splits.classes.clone(),
        image_size: splits.image_size,
        normalization,
        norm_groups: norm_groups.clone(),
    };
    write_json(&artifact_dir.join("config.json"), &run_config)?;
    println!(
        "training on {}",
        devices
            .iter()
            .map(|d| format!("{d:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(line) = describe_groups(&model_config.norm, &norm_groups) {
        println!("{line}");
    }

    main_device.seed(options.seed);
    // Parameters created on an autodiff device are trainable; burn-train keeps them so when it
    // moves the model to its training device.
    let ad_device = if main_device.is_autodiff() {
        main_device.clone()
    } else {
        main_device.clone().autodiff()
    };
    let mut resnet = model_config
        .try_init(&ad_device)
        .map_err(|e| TrainError::Options(e.to_string()))?;
    if let Some(path) = &options.pretrained {
        resnet = resnet
            .load_pytorch_backbone(path)
            .map_err(TrainError::Weights)?;
    } else if let Some(path) = &options.init_weights {
        resnet = resnet
            .load_pytorch_weights(path)
            .map_err(TrainError::Weights)?;
    }
    if let Some(path) = &options.save_init {
        resnet
            .save_pytorch_weights(path)
            .map_err(TrainError::Weights)?;
    }

    let schedule = schedule(options, splits.train.len());
    let optimizer = options.optimizer();

    let batcher = |augmentation| ImageBatcher {
        size: splits.image_size,
        normalization,
        augmentation,
    };
    let done = resume_epoch.unwrap_or(0);
    let train_loader: Arc<dyn DataLoader<_>> = Arc::new(
        EpochLoader::new(
            splits.train.clone(),
            batcher(options.augmentation(splits.image_size)),
            options.batch_size,
            Some(options.seed),
            options.workers,
            main_device.clone(),
        )
        .starting_at_epoch(done),
    );
    let valid_loader: Arc<dyn DataLoader<_>> = Arc::new(EpochLoader::new(
        splits.valid.clone(),
        batcher(None),
        options.batch_size,
        None,
        options.workers,
        main_device.clone(),
    ));

    // Keep the last epoch (to resume) and the best by validation accuracy.
    let checkpointing = ComposedCheckpointingStrategy::builder()
        .add(KeepLastNCheckpoints::new(1))
        .add(MetricCheckpointingStrategy::new(
            &AccuracyMetric::new(),
            Aggregate::Mean,
            Direction::Highest,
            Split::Valid,
        ))
        .build();
    let [
        model_checkpointer,
        optim_checkpointer,
        scheduler_checkpointer,
    ] = checkpoint::checkpointers(&checkpoint_dir)?;
    let mut training = SupervisedTraining::new(artifact_dir, train_loader, valid_loader)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .metric_train_numeric(TopKAccuracyMetric::new(5))
        .metric_valid_numeric(TopKAccuracyMetric::new(5))
        .metric_train_numeric(LearningRateMetric::new())
        .with_custom_checkpointers(
            model_checkpointer,
            optim_checkpointer,
            scheduler_checkpointer,
        )
        .with_checkpointing_strategy(checkpointing)
        .num_epochs(options.epochs)
        .with_application_logger(None);
    // burn's TUI in a terminal, plain lines in logs and pipes.
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        training = training.renderer(Box::new(LineRenderer::new()));
    }
    if devices.len() > 1 {
        training = training.with_training_strategy(
            ExecutionStrategy::multi(devices, MultiDeviceOptim::OptimMainDevice).into(),
        );
    }
    if let Some(epoch) = resume_epoch {
        training = training.checkpoint(epoch);
    }
    if control.patience.is_some() || control.stop_after.is_some() {
        training = training.early_stopping(Stopping {
            patience: control.patience.map(|n_epochs| {
                MetricEarlyStoppingStrategy::new(
                    &AccuracyMetric::new(),
                    Aggregate::Mean,
                    Direction::Highest,
                    Split::Valid,
                    StoppingCondition::NoImprovementSince { n_epochs },
                )
            }),
            stop_after: control.stop_after,
        });
    }
    let result = training.launch(Learner::new(Classifier { resnet }, optimizer, schedule));
    if let Some(error) = result.error {
        return Err(TrainError::Training(error.to_string()));
    }
    let model = result.model.resnet;

    // Final weights: burn's format (what `infer` loads) and PyTorch's layout.
    model
        .clone()
        .save_file(artifact_dir.join("model.bpk"))
        .map_err(|e| TrainError::io(&artifact_dir.join("model.bpk"), e))?;
    model
        .save_pytorch_weights(artifact_dir.join("model.safetensors"))
        .map_err(TrainError::Weights)?;

    let names = metric_names();
    let epochs = report::collect(
        artifact_dir,
        options.epochs,
        [&names[0], &names[1], &names[2], &names[3]],
        if resume_epoch.is_some() {
            None
        } else {
            Some(start_time)
        },
    );
    let completed: Vec<EpochMetrics> = epochs
        .into_iter()
        .filter(|e| e.valid_accuracy.is_some())
        .collect();
    let metrics = RunMetrics::new(completed, started.elapsed().as_secs_f64()).ok_or_else(|| {
        TrainError::Training("no epoch finished with a validation accuracy".into())
    })?;
    write_json(&artifact_dir.join("metrics.json"), &metrics)?;
    crate::plot::curves(&artifact_dir.join("curves.png"), &metrics.epochs)
        .map_err(|e| TrainError::io(&artifact_dir.join("curves.png"), e))?;
    Ok(TrainReport {
        artifact_dir: artifact_dir.to_path_buf(),
        metrics,
        model,
    })
}

/// The recipe's training and validation data, opened and checked.
pub(crate) fn open_data(options: &TrainOptions) -> Result<data::Splits, TrainError> {
    Ok(data::open(&DataOptions {
        kind: options.dataset,
        dir: options.data_dir.as_deref(),
        image_size: options.image_size,
        seed: options.seed,
        synthetic_train: options.synthetic_train,
        synthetic_valid: options.synthetic_valid,
        limit_train: options.limit_train,
        limit_valid: options.limit_valid,
    })?)
}

/// The recipe's learning-rate schedule over `train_len` training images: the scaled peak,
/// `--warmup-epochs` of linear warmup, then the decay to the end of `--epochs`.
pub(crate) fn schedule(options: &TrainOptions, train_len: usize) -> Schedule {
    let steps_per_epoch = options.steps_per_epoch(train_len);
    let warmup = (options.warmup_epochs * steps_per_epoch as f64).round() as usize;
    Schedule::new(
        options.scaled_lr(),
        warmup,
        steps_per_epoch * options.epochs,
        options.schedule,
    )
}

/// The per-channel statistics the batches are normalized with: CIFAR-10's published ones, or
/// estimated from up to 2000 training images.
pub(crate) fn normalization(
    options: &TrainOptions,
    splits: &data::Splits,
) -> Result<Normalization, TrainError> {
    Ok(match options.dataset {
        DatasetKind::Cifar10 => CIFAR10_NORMALIZATION,
        _ => Normalization::estimate(splits.train.as_ref(), 2000)?,
    })
}

/// The groups of the versions before config.json recorded them: `gcd(count, channels)` on
/// every layer (the same as today's rule wherever today's accepts the count).
fn legacy_groups(config: &ResNetConfig) -> Vec<StageGroups> {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let groups = |channels: usize| match config.norm {
        Norm::Group { num_groups } => gcd(num_groups, channels),
        Norm::BurnGroup => gcd(Norm::BURN_GROUPS, channels),
        Norm::GroupSize(size) => channels / gcd(size, channels),
        Norm::Batch | Norm::Identity => 1,
    };
    if !config.norm.is_grouped() {
        return Vec::new();
    }
    // One group fits every layer: its walk lists each stage's channel counts.
    let mut walk = config.clone();
    walk.norm = Norm::Group { num_groups: 1 };
    walk.norm_groups()
        .unwrap_or_default()
        .into_iter()
        .map(|stage| StageGroups {
            groups: groups(stage.channels),
            ..stage
        })
        .collect()
}

/// Loads a trained model from an artifact directory (or its `model.bpk`): the model, its
/// run configuration.
pub fn load_run(path: &Path, device: &Device) -> Result<(ResNet, RunConfig), TrainError> {
    let dir = if path.is_file() {
        path.parent().unwrap_or(Path::new("."))
    } else {
        path
    };
    let config: RunConfig = read_json(&dir.join("config.json"))?;
    let weights = if path.is_file() {
        path.to_path_buf()
    } else {
        dir.join("model.bpk")
    };
    if !weights.is_file() {
        return Err(TrainError::io(
            &weights,
            "no trained weights (model.bpk is written when a run finishes)",
        ));
    }
    let config_path = dir.join("config.json");
    let groups = config
        .model
        .norm_groups()
        .map_err(|e| TrainError::io(&config_path, format!("its model cannot be built: {e}")))?;
    // The groups are not in the weights: a model built with other groups than it was trained
    // with would load and compute something else.
    let trained = if config.norm_groups.is_empty() {
        legacy_groups(&config.model)
    } else {
        config.norm_groups.clone()
    };
    if trained != groups {
        return Err(TrainError::io(
            &config_path,
            format!(
                "the model was trained with GroupNorm groups {trained:?}, but this version \
                 builds {groups:?} for its configuration"
            ),
        ));
    }
    let model = config
        .model
        .try_init(device)
        .map_err(|e| TrainError::io(&config_path, format!("its model cannot be built: {e}")))?
        .try_load_file(&weights)
        .map_err(|e| TrainError::io(&weights, e))?;
    Ok((model, config))
}
