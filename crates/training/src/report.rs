//! `metrics.json`: the per-epoch metrics burn-train logged in the artifact directory.

use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The metrics of one epoch (accuracies in percent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: Option<f64>,
    /// Training top-1 accuracy (on augmented images).
    pub train_accuracy: Option<f64>,
    /// Training top-5 accuracy.
    pub train_top5: Option<f64>,
    /// Validation loss.
    pub valid_loss: Option<f64>,
    /// Validation top-1 accuracy.
    pub valid_accuracy: Option<f64>,
    /// Validation top-5 accuracy.
    pub valid_top5: Option<f64>,
    /// Learning rate at the end of the epoch.
    pub learning_rate: Option<f64>,
    /// Wall time of the epoch (training and validation), seconds.
    pub seconds: Option<f64>,
}

/// The whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Per-epoch metrics.
    pub epochs: Vec<EpochMetrics>,
    /// Validation top-1 accuracy of the last epoch, percent.
    pub valid_accuracy: f64,
    /// Best validation top-1 accuracy, percent.
    pub best_valid_accuracy: f64,
    /// The epoch of the best validation accuracy.
    pub best_epoch: usize,
    /// Wall time of the whole run (this process), seconds.
    pub total_seconds: f64,
}

/// The file name burn-train's file logger gives a metric.
pub(crate) fn log_name(metric: &str) -> String {
    metric.replace(' ', "_")
}

/// The epoch value of a metric: the `value,final` line the logger ends each epoch with.
fn epoch_value(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let (value, tag) = last.split_once(',')?;
    (tag.trim() == "final").then(|| value.trim().parse().ok())?
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

/// Reads the metrics of epochs `1..=epochs` from `artifact_dir`. `names` are burn's metric
/// names for loss, top-1, top-5 and learning rate; `start` is when epoch 1 began (for its
/// duration; later epochs are timed between the validation logs).
pub fn collect(
    artifact_dir: &Path,
    epochs: usize,
    names: [&str; 4],
    start: Option<SystemTime>,
) -> Vec<EpochMetrics> {
    let [loss, top1, top5, lr] = names.map(log_name);
    let file = |split: &str, epoch: usize, name: &str| {
        artifact_dir
            .join(split)
            .join(format!("epoch-{epoch}"))
            .join(format!("{name}.log"))
    };
    let mut previous_end = start;
    (1..=epochs)
        .map(|epoch| {
            let end = modified(&file("valid", epoch, &loss));
            let seconds = match (previous_end, end) {
                (Some(a), Some(b)) => b.duration_since(a).ok().map(|d| d.as_secs_f64()),
                _ => None,
            };
            previous_end = end;
            EpochMetrics {
                epoch,
                train_loss: epoch_value(&file("train", epoch, &loss)),
                train_accuracy: epoch_value(&file("train", epoch, &top1)),
                train_top5: epoch_value(&file("train", epoch, &top5)),
                valid_loss: epoch_value(&file("valid", epoch, &loss)),
                valid_accuracy: epoch_value(&file("valid", epoch, &top1)),
                valid_top5: epoch_value(&file("valid", epoch, &top5)),
                learning_rate: epoch_value(&file("train", epoch, &lr)),
                seconds,
            }
        })
        .collect()
}

impl RunMetrics {
    /// Summarizes the epochs; `None` if no epoch has a validation accuracy.
    pub fn new(epochs: Vec<EpochMetrics>, total_seconds: f64) -> Option<Self> {
        let last = epochs.iter().rev().find_map(|e| e.valid_accuracy)?;
        let (best_epoch, best) = epochs
            .iter()
            .filter_map(|e| e.valid_accuracy.map(|a| (e.epoch, a)))
            .fold((0, f64::MIN), |b, c| if c.1 > b.1 { c } else { b });
        Some(Self {
            epochs,
            valid_accuracy: last,
            best_valid_accuracy: best,
            best_epoch,
            total_seconds,
        })
    }
}
