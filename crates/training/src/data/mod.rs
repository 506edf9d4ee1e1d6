//! Image classification data for the training programs: the embedded synthetic dataset,
//! CIFAR-10's binary format and image-folder trees, with a batcher that augments and
//! normalizes.
//!
//! Every source is checked when it is opened: a missing directory or split, a truncated or
//! corrupt file, an empty class or an unreadable image is an error naming the file and what was
//! expected, before any training starts.

mod augment;
mod batcher;
mod cifar;
mod error;
mod folder;
mod loader;
mod rng;
mod synthetic;

use std::path::Path;
use std::sync::Arc;

use burn::data::dataset::Dataset;
use serde::{Deserialize, Serialize};

pub use augment::Augmentation;
pub use batcher::{ImageBatch, ImageBatcher};
pub use cifar::{CIFAR10_CLASSES, read_cifar10};
pub use error::DataError;
pub use folder::{ImageFolder, read_image_file};
pub use loader::EpochLoader;
pub use synthetic::{SYNTHETIC_CLASSES, SyntheticDataset};

/// One image (`3 x size x size`, channel-major, 0-255) and its class.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageItem {
    /// Pixels in `[channel][row][column]` order.
    pub pixels: Vec<u8>,
    /// Class index.
    pub label: usize,
}

/// A source of images of one size.
pub type ImageDataset = Arc<dyn Dataset<ImageItem>>;

/// Per-channel mean and standard deviation of the training images (in 0-1 units), used to
/// normalize every batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean of R, G, B.
    pub mean: [f32; 3],
    /// Standard deviation of R, G, B.
    pub std: [f32; 3],
}

impl Normalization {
    /// Estimates the statistics from up to `max_items` items spread over the dataset.
    pub fn estimate(dataset: &dyn Dataset<ImageItem>, max_items: usize) -> Result<Self, DataError> {
        let len = dataset.len();
        let step = (len / max_items.max(1)).max(1);
        let (mut sum, mut sum_sq, mut count) = ([0f64; 3], [0f64; 3], 0f64);
        for index in (0..len).step_by(step).take(max_items) {
            let item = dataset
                .get(index)
                .map_err(|e| DataError::Dataset(format!("item {index}: {e}")))?;
            let plane = item.pixels.len() / 3;
            for c in 0..3 {
                for &p in &item.pixels[c * plane..(c + 1) * plane] {
                    let v = p as f64 / 255.0;
                    sum[c] += v;
                    sum_sq[c] += v * v;
                }
            }
            count += plane as f64;
        }
        if count == 0.0 {
            return Err(DataError::Dataset(
                "no images to estimate the normalization from".into(),
            ));
        }
        let mean = sum.map(|s| s / count);
        let mut std = [0f32; 3];
        for c in 0..3 {
            // Never divide by ~0 (a constant channel).
            std[c] = ((sum_sq[c] / count - mean[c] * mean[c]).max(0.0).sqrt() as f32).max(1e-3);
        }
        Ok(Self {
            mean: mean.map(|m| m as f32),
            std,
        })
    }
}

/// The datasets the programs train on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// Procedurally drawn shapes and textures, generated in code.
    Synthetic,
    /// CIFAR-10 in its binary format.
    Cifar10,
    /// `DIR/train/<class>/*` and `DIR/valid/<class>/*` image trees.
    Folder,
}

/// Training and validation data, opened and checked.
pub struct Splits {
    /// The training images.
    pub train: ImageDataset,
    /// The validation images.
    pub valid: ImageDataset,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
    /// Side of the (square) images.
    pub image_size: usize,
}

/// How to open the data.
#[derive(Clone, Debug)]
pub struct DataOptions<'a> {
    /// Which dataset.
    pub kind: DatasetKind,
    /// Its directory (CIFAR-10 and folder).
    pub dir: Option<&'a Path>,
    /// Image side; `None` keeps the dataset's own (32 for CIFAR-10 and synthetic).
    pub image_size: Option<usize>,
    /// Seed of the synthetic data.
    pub seed: u64,
    /// Synthetic split sizes.
    pub synthetic_train: usize,
    /// Synthetic split sizes.
    pub synthetic_valid: usize,
    /// Use at most this many training items (`None`: all).
    pub limit_train: Option<usize>,
    /// Use at most this many validation items (`None`: all).
    pub limit_valid: Option<usize>,
}

/// Opens the training and validation splits and checks them.
pub fn open(options: &DataOptions<'_>) -> Result<Splits, DataError> {
    let need_dir = |what: &str| {
        options.dir.ok_or_else(|| {
            DataError::Usage(format!("--data-dir is required for the {what} dataset"))
        })
    };
    let mut splits = match options.kind {
        DatasetKind::Synthetic => {
            let size = options.image_size.unwrap_or(32);
            if size < 8 {
                return Err(DataError::Usage(format!(
                    "--image-size must be at least 8, got {size}"
                )));
            }
            Splits {
                train: Arc::new(SyntheticDataset::new(
                    options.synthetic_train,
                    size,
                    options.seed,
                    0,
                )),
                valid: Arc::new(SyntheticDataset::new(
                    options.synthetic_valid,
                    size,
                    options.seed,
                    1,
                )),
                classes: SYNTHETIC_CLASSES.iter().map(|s| s.to_string()).collect(),
                image_size: size,
            }
        }
        DatasetKind::Cifar10 => read_cifar10(need_dir("cifar10")?, options.image_size)?,
        DatasetKind::Folder => {
            let dir = need_dir("folder")?;
            let size = options.image_size.unwrap_or(64);
            ImageFolder::open_splits(dir, size)?
        }
    };
    if let Some(n) = options.limit_train {
        splits.train = limit(splits.train, n);
    }
    if let Some(n) = options.limit_valid {
        splits.valid = limit(splits.valid, n);
    }
    if splits.train.is_empty() || splits.valid.is_empty() {
        return Err(DataError::Dataset(
            "the training and validation splits must not be empty".into(),
        ));
    }
    Ok(splits)
}

/// The first `n` items, spread over the classes by taking every k-th item.
fn limit(dataset: ImageDataset, n: usize) -> ImageDataset {
    if n >= dataset.len() {
        return dataset;
    }
    let step = dataset.len() / n.max(1);
    let indices: Vec<usize> = (0..n).map(|i| i * step).collect();
    Arc::new(burn::data::dataset::transform::SelectionDataset::<
        ImageDataset,
        ImageItem,
    >::from_indices_checked(dataset, indices))
}
