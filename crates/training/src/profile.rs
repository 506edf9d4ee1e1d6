//! [`profile_steps`]: where the time of a training run goes, phase by phase, for the recipe
//! of a [`TrainOptions`] (the `step_profile` example prints it).
//!
//! The phases are the ones burn-train's learner runs for each batch, called here one at a
//! time with a clock around each: prepare the batch (read, augment, normalize, upload),
//! forward with the loss, backward, optimizer step, and the metrics the training program
//! records (loss, top-1 and top-5 accuracy, read back to the host); then validation batches
//! (prepare, forward in inference mode, metrics) and one checkpoint (model, optimizer and
//! scheduler records serialized and written durably, as after every epoch). The CPU backends
//! compute each operation when it is called, so a phase's clock holds its own work; a GPU
//! backend would queue it (the metrics' read-back then waits for everything before it).

use std::time::{Duration, Instant};

use burn::data::dataloader::DataLoader;
use burn::module::Module;
use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use burn::train::checkpoint::Checkpointer;
use serde::Serialize;

use crate::checkpoint::checkpointers;
use crate::classifier::Classifier;
use crate::data::{EpochLoader, ImageBatch, ImageBatcher};
use crate::{TrainError, TrainOptions, normalization, open_data, schedule};

/// Seconds spent in each phase, summed over the measured steps.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phases {
    /// Batch preparation: indices, image reads, augmentation, normalization, upload.
    pub data: f64,
    /// Forward pass and cross-entropy.
    pub forward: f64,
    /// Backward pass (the autodiff graph to parameter gradients).
    pub backward: f64,
    /// Optimizer step (gradients collected per parameter, weight decay, momentum, update).
    pub optimizer: f64,
    /// Loss, top-1 and top-5 accuracy read back to the host.
    pub metrics: f64,
}

impl Phases {
    /// The sum of the phases.
    pub fn total(&self) -> f64 {
        self.data + self.forward + self.backward + self.optimizer + self.metrics
    }
}

/// The measured phases of [`profile_steps`].
#[derive(Clone, Debug, Serialize)]
pub struct StepProfile {
    /// Training steps measured (after the unmeasured warm-up steps).
    pub train_steps: usize,
    /// Images per training step.
    pub batch_size: usize,
    /// Training steps of one epoch of the recipe.
    pub steps_per_epoch: usize,
    /// The training steps' phases, summed.
    pub train: Phases,
    /// Validation batches measured (a whole validation pass).
    pub valid_batches: usize,
    /// The validation pass's phases (no backward or optimizer), summed.
    pub valid: Phases,
    /// Seconds to write one checkpoint (model, optimizer, scheduler).
    pub checkpoint: f64,
}

impl StepProfile {
    /// Seconds of one epoch as the phases add up: the training steps scaled to the epoch,
    /// one validation pass and one checkpoint. Against the wall time of a real epoch, the
    /// difference is the learner's own work (events, metric files, the progress lines) and
    /// whatever the background data worker costs or saves.
    pub fn epoch_estimate(&self) -> f64 {
        self.train.total() / self.train_steps as f64 * self.steps_per_epoch as f64
            + self.valid.total()
            + self.checkpoint
    }
}

/// Times `steps` training steps (after `warmup` unmeasured ones), a validation pass and a
/// checkpoint of the recipe in `options`, on `device`, in one thread of control (batches
/// prepared in line, whatever `--workers` says, so that their cost shows). The checkpoint is
/// written to a temporary directory under `scratch` and removed.
///
/// # Errors
///
/// As [`train`](crate::train) for the options and the data; [`TrainError::Io`] when the
/// checkpoint cannot be written.
pub fn profile_steps(
    options: &TrainOptions,
    device: &Device,
    steps: usize,
    warmup: usize,
    scratch: &std::path::Path,
) -> Result<StepProfile, TrainError> {
    options.validate().map_err(TrainError::Options)?;
    let splits = open_data(options)?;
    let normalization = normalization(options, &splits)?;
    let model_config = options
        .model_config(splits.classes.len(), splits.image_size)
        .map_err(TrainError::Options)?;
    device.seed(options.seed);
    let (device, ad_device) = if device.is_autodiff() {
        (device.clone().inner(), device.clone())
    } else {
        (device.clone(), device.clone().autodiff())
    };
    let mut model = Classifier {
        resnet: model_config
            .try_init(&ad_device)
            .map_err(|e| TrainError::Options(e.to_string()))?,
    };
    let mut optimizer = options.optimizer();
    let mut schedule = schedule(options, splits.train.len());
    let batcher = |augmentation| ImageBatcher {
        size: splits.image_size,
        normalization,
        augmentation,
    };
    let loader = |dataset, augmentation, seed, device| {
        EpochLoader::new(
            dataset,
            batcher(augmentation),
            options.batch_size,
            seed,
            0,
            device,
        )
    };
    let train_loader = loader(
        splits.train.clone(),
        options.augmentation(splits.image_size),
        Some(options.seed),
        ad_device.clone(),
    );
    let valid_loader = loader(splits.valid.clone(), None, None, device.clone());

    let mut train = Phases::default();
    let (mut taken, mut measured) = (0, 0);
    let mut batches = train_loader.iter();
    while measured < steps {
        let start = Instant::now();
        let Some(batch) = batches.next() else {
            batches = train_loader.iter();
            continue;
        };
        let batch = batch.map_err(|e| TrainError::Training(e.to_string()))?;
        let data = start.elapsed();
        let lr = LrScheduler::step(&mut schedule);
        let (times, next) = train_step(model, &mut optimizer, batch, lr);
        model = next;
        taken += 1;
        // The first steps allocate the autodiff graph's and the optimizer's buffers.
        if taken > warmup {
            train.data += data.as_secs_f64();
            train.forward += times[0].as_secs_f64();
            train.backward += times[1].as_secs_f64();
            train.optimizer += times[2].as_secs_f64();
            train.metrics += times[3].as_secs_f64();
            measured += 1;
        }
    }

    let inference = model.valid();
    let mut valid = Phases::default();
    let mut valid_batches = 0;
    let mut batches = valid_loader.iter();
    loop {
        let start = Instant::now();
        let Some(batch) = batches.next() else { break };
        let batch = batch.map_err(|e| TrainError::Training(e.to_string()))?;
        let data = start.elapsed();
        let start = Instant::now();
        let output = inference.forward_classification(batch);
        let forward = start.elapsed();
        let start = Instant::now();
        read_metrics(output.loss, output.output, output.targets);
        valid.data += data.as_secs_f64();
        valid.forward += forward.as_secs_f64();
        valid.metrics += start.elapsed().as_secs_f64();
        valid_batches += 1;
    }

    let dir = scratch.join(format!("gn-burn-step-profile-{}", std::process::id()));
    let start = Instant::now();
    let [model_ckpt, optim_ckpt, schedule_ckpt] = checkpointers(&dir)?;
    let saved = Checkpointer::save(&model_ckpt, 1, model.into_record())
        .and_then(|()| Checkpointer::save(&optim_ckpt, 1, optimizer.to_record()))
        .and_then(|()| Checkpointer::save(&schedule_ckpt, 1, LrScheduler::to_record(&schedule)));
    let checkpoint = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    saved.map_err(|e| TrainError::io(&dir, e.to_string()))?;

    Ok(StepProfile {
        train_steps: steps,
        batch_size: options.batch_size,
        steps_per_epoch: options.steps_per_epoch(splits.train.len()),
        train,
        valid_batches,
        valid,
        checkpoint,
    })
}

/// One training step as burn-train's learner runs it, each phase timed: forward with the
/// loss, backward, optimizer step (gradients gathered per parameter first), metrics.
fn train_step(
    model: Classifier,
    optimizer: &mut ModuleOptimizer,
    batch: ImageBatch,
    lr: f64,
) -> ([Duration; 4], Classifier) {
    let start = Instant::now();
    let output = model.forward_classification(batch);
    let forward = start.elapsed();
    let start = Instant::now();
    let grads = output.loss.backward();
    let backward = start.elapsed();
    let start = Instant::now();
    let grads = GradientsParams::from_grads(grads, &model);
    let model = optimizer.step(lr, model, grads);
    let optimizer_time = start.elapsed();
    let start = Instant::now();
    read_metrics(output.loss, output.output, output.targets);
    ([forward, backward, optimizer_time, start.elapsed()], model)
}

/// The values the training program's metrics read: the loss, top-1 and top-5 correct counts.
fn read_metrics(loss: Tensor<1>, logits: Tensor<2>, targets: Tensor<1, Int>) -> [f64; 3] {
    let [n, classes] = logits.dims();
    let k = classes.min(5);
    let loss: f64 = loss.into_scalar();
    let top1: i64 = logits
        .clone()
        .argmax(1)
        .reshape([n])
        .equal(targets.clone())
        .int()
        .sum()
        .into_scalar();
    let top5: i64 = logits
        .argsort_descending(1)
        .narrow(1, 0, k)
        .equal(targets.reshape([n, 1]).expand([n, k]))
        .int()
        .sum()
        .into_scalar();
    [loss, top1 as f64, top5 as f64]
}
