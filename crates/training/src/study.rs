//! The batch-size study (Wu & He 2018, Figure 1 and Table 2 in miniature): the same model,
//! data, seed and epochs trained with GroupNorm and BatchNorm at decreasing images per batch,
//! through the same [`train`](crate::train) as the `train` program.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::plot::{self, StudyLine};
use crate::{NormChoice, RunControl, TrainError, TrainOptions, write_atomic, write_json};

/// The paper's ResNet-50 ImageNet top-1 validation error (%) at 32, 16, 8, 4 and 2 images per
/// GPU (Table 2).
pub const PAPER_BATCH_SIZES: [usize; 5] = [32, 16, 8, 4, 2];
/// BatchNorm's errors at [`PAPER_BATCH_SIZES`].
pub const PAPER_BN: [f64; 5] = [23.6, 23.7, 24.8, 27.3, 34.7];
/// GroupNorm's errors at [`PAPER_BATCH_SIZES`].
pub const PAPER_GN: [f64; 5] = [24.1, 24.2, 24.0, 24.2, 24.1];

/// One trained configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyEntry {
    /// `gn`, `bn` or `burn-gn`.
    pub norm: NormChoice,
    /// Images per batch (per device).
    pub batch_size: usize,
    /// The learning rate used (scaled linearly from the options' per-256 rate).
    pub learning_rate: f64,
    /// Validation error of the last epoch, percent.
    pub final_valid_error: f64,
    /// Best validation error over the epochs, percent.
    pub best_valid_error: f64,
    /// Epochs trained.
    pub epochs: usize,
    /// Wall time of the run, seconds.
    pub wall_seconds: f64,
    /// The run's artifact directory.
    pub artifact_dir: PathBuf,
    /// The PyTorch mirror's final validation error (%) on the same recipe, when its run is in
    /// `torch/<run>/` beside the study (`tools/torch_study.sh`).
    #[serde(default)]
    pub mirror_final_valid_error: Option<f64>,
    /// The mirror's best validation error (%).
    #[serde(default)]
    pub mirror_best_valid_error: Option<f64>,
}

/// The whole study: `study.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Study {
    /// The options shared by every run (batch size and norm vary).
    pub options: TrainOptions,
    /// One entry per (norm, batch size), in the order trained.
    pub entries: Vec<StudyEntry>,
    /// The paper's numbers, for comparison: `(batch size, BN error, GN error)`.
    pub paper_resnet50_imagenet: Vec<(usize, f64, f64)>,
}

/// Trains every (norm, batch size) pair with `options` into `dir/<norm>-b<batch>/`, then
/// writes `study.json`, `study.csv` and `study.png` into `dir`.
pub fn run(
    options: &TrainOptions,
    norms: &[NormChoice],
    batch_sizes: &[usize],
    dir: &Path,
    device: &Device,
) -> Result<Study, TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut study = Study {
        options: options.clone(),
        entries: Vec::new(),
        paper_resnet50_imagenet: PAPER_BATCH_SIZES
            .iter()
            .zip(PAPER_BN.iter().zip(PAPER_GN))
            .map(|(&b, (&bn, gn))| (b, bn, gn))
            .collect(),
    };
    for &norm in norms {
        for &batch_size in batch_sizes {
            let mut run_options = options.clone();
            run_options.norm = norm;
            run_options.batch_size = batch_size;
            let name = run_name(norm, batch_size);
            let run_dir = dir.join(&name);
            println!(
                "== {name}: {} epochs, learning rate {:.5}",
                run_options.epochs,
                run_options.scaled_lr()
            );
            let started = Instant::now();
            let report = crate::train(&run_options, &run_dir, &RunControl::default(), device)?;
            let entry = StudyEntry {
                norm,
                batch_size,
                learning_rate: run_options.scaled_lr(),
                final_valid_error: 100.0 - report.metrics.valid_accuracy,
                best_valid_error: 100.0 - report.metrics.best_valid_accuracy,
                epochs: report.metrics.epochs.len(),
                wall_seconds: started.elapsed().as_secs_f64(),
                artifact_dir: run_dir,
                mirror_final_valid_error: None,
                mirror_best_valid_error: None,
            };
            println!(
                "== {name}: valid error {:.2}% (best {:.2}%) in {:.0}s",
                entry.final_valid_error, entry.best_valid_error, entry.wall_seconds
            );
            study.entries.push(entry);
            // Keep what is done on disk, so an interrupted study still leaves its results.
            study = write(&study, dir)?;
        }
    }
    Ok(study)
}

/// A run's directory name in the study: `gn-b32`, `bn-b2`, ...
pub fn run_name(norm: NormChoice, batch_size: usize) -> String {
    format!("{}-b{batch_size}", norm_name(norm))
}

/// Where `tools/torch_study.sh` writes the PyTorch mirror's run of an entry:
/// `DIR/torch/<run>/` (its `metrics.json` read by [`write`]).
pub fn mirror_dir(dir: &Path, norm: NormChoice, batch_size: usize) -> PathBuf {
    dir.join("torch").join(run_name(norm, batch_size))
}

/// Redraws a finished study in `dir` from its `study.json`, with the PyTorch mirror's runs
/// that are now beside it; returns the study as written.
///
/// # Errors
///
/// [`TrainError::Io`] when `study.json` or a mirror's `metrics.json` is missing or not what
/// the study and the mirror write, or the outputs cannot be written.
pub fn replot(dir: &Path) -> Result<Study, TrainError> {
    let study: Study = crate::read_json(&dir.join("study.json"))?;
    write(&study, dir)
}

/// The mirror's final and best validation error of a run, if it has been run.
fn mirror_errors(dir: &Path, entry: &StudyEntry) -> Result<Option<(f64, f64)>, TrainError> {
    #[derive(Deserialize)]
    struct MirrorMetrics {
        valid_accuracy: f64,
        best_valid_accuracy: f64,
    }
    let path = mirror_dir(dir, entry.norm, entry.batch_size).join("metrics.json");
    if !path.exists() {
        return Ok(None);
    }
    let metrics: MirrorMetrics = crate::read_json(&path)?;
    Ok(Some((
        100.0 - metrics.valid_accuracy,
        100.0 - metrics.best_valid_accuracy,
    )))
}

fn norm_name(norm: NormChoice) -> &'static str {
    match norm {
        NormChoice::Gn => "gn",
        NormChoice::Bn => "bn",
        NormChoice::BurnGn => "burn-gn",
    }
}

/// Writes `study.json`, `study.csv` and `study.png`, with the PyTorch mirror's errors of the
/// runs that have one in `dir/torch/`; returns the study as written.
pub fn write(study: &Study, dir: &Path) -> Result<Study, TrainError> {
    let mut study = study.clone();
    for e in &mut study.entries {
        let mirror = mirror_errors(dir, e)?;
        e.mirror_final_valid_error = mirror.map(|m| m.0);
        e.mirror_best_valid_error = mirror.map(|m| m.1);
    }
    write_json(&dir.join("study.json"), &study)?;
    let mut csv = String::from(
        "norm,batch_size,learning_rate,final_valid_error,best_valid_error,epochs,wall_seconds,\
         mirror_final_valid_error,mirror_best_valid_error\n",
    );
    let optional = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
    for e in &study.entries {
        csv.push_str(&format!(
            "{},{},{},{:.4},{:.4},{},{:.1},{},{}\n",
            norm_name(e.norm),
            e.batch_size,
            e.learning_rate,
            e.final_valid_error,
            e.best_valid_error,
            e.epochs,
            e.wall_seconds,
            optional(e.mirror_final_valid_error),
            optional(e.mirror_best_valid_error),
        ));
    }
    write_atomic(&dir.join("study.csv"), csv.as_bytes())?;
    let mut lines: Vec<StudyLine> = Vec::new();
    for e in &study.entries {
        let (name, colour) = match e.norm {
            NormChoice::Gn => ("GroupNorm", 0),
            NormChoice::Bn => ("BatchNorm", 1),
            NormChoice::BurnGn => ("burn GroupNorm", 2),
        };
        let points = [
            (format!("{name}, ours"), Some(e.final_valid_error), false),
            (
                format!("{name}, PyTorch mirror"),
                e.mirror_final_valid_error,
                true,
            ),
        ];
        for (name, error, dashed) in points {
            let Some(error) = error else { continue };
            match lines.iter_mut().find(|l| l.name == name) {
                Some(line) => line.points.push((e.batch_size, error)),
                None => lines.push(StudyLine {
                    name,
                    points: vec![(e.batch_size, error)],
                    colour,
                    dashed,
                }),
            }
        }
    }
    let title = format!(
        "{} (width {}) on {:?}, {} epochs",
        study.options.model, study.options.base_width, study.options.dataset, study.options.epochs
    );
    let png = dir.join("study.png");
    plot::study(&png, &title, &lines).map_err(|e| TrainError::io(&png, e))?;
    Ok(study)
}
