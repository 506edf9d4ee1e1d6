//! [`TrainOptions`]: everything a training run is made of, as command-line options and as the
//! `config.json` of its artifact directory.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use models::resnet::{Norm, ResNetConfig, Stem};
use serde::{Deserialize, Serialize};

use super::schedule::Decay;
use crate::data::DatasetKind;

/// The normalization layers of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormChoice {
    /// This crate's GroupNorm (fused kernels).
    Gn,
    /// BatchNorm.
    Bn,
    /// burn's own GroupNorm (for comparison).
    BurnGn,
}

/// The input stem of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StemChoice {
    /// 7x7/2 convolution and 3x3/2 max pool, for images of 64 pixels and more.
    Imagenet,
    /// 3x3/1 convolution, no pooling, for 32x32 images.
    Cifar,
}

/// The optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerChoice {
    /// SGD with momentum and weight decay on every parameter (the paper's recipe).
    Sgd,
    /// AdamW (decoupled weight decay).
    Adamw,
}

/// Options of a training run (`cargo run --example train -- --help` lists them with their
/// defaults).
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Architecture: resnet18, resnet34, resnet50, resnet101 or resnet152.
    #[arg(long, default_value = "resnet18")]
    pub model: String,
    /// Normalization layers: gn (this crate's GroupNorm), bn (BatchNorm) or burn-gn (burn's GroupNorm).
    #[arg(long, value_enum, default_value = "gn")]
    pub norm: NormChoice,
    /// Groups per GroupNorm layer (the paper's G = 32).
    #[arg(long, default_value_t = 32)]
    pub groups: usize,
    /// Channels per group instead of a group count (overrides --groups).
    #[arg(long)]
    pub group_size: Option<usize>,
    /// Channels of the stem and first stage (64 is the standard ResNet; smaller trains faster).
    #[arg(long, default_value_t = 16)]
    pub base_width: usize,
    /// Input stem; default: cifar below 64 pixels, imagenet from 64.
    #[arg(long, value_enum)]
    pub stem: Option<StemChoice>,
    /// Data: synthetic (generated in code, no files), cifar10 (binary batches in --data-dir) or
    /// folder (--data-dir/train/<class>/*.png|jpg and --data-dir/valid/<class>/*).
    #[arg(long, value_enum, default_value = "synthetic")]
    pub dataset: DatasetKind,
    /// Directory of the cifar10 or folder data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Image side in pixels; default: 32 for synthetic and cifar10, 64 for folder.
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Images per batch (per device).
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Training epochs.
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Peak learning rate for 256 images per step, scaled linearly to the actual batch (0.8
    /// gives 0.1 at the default batch of 32, the usual CIFAR rate; the paper's 100-epoch
    /// ImageNet recipe uses 0.1 per 256).
    #[arg(long, default_value_t = 0.8)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Weight decay (on every parameter, gamma and beta included, as the paper).
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Optimizer: sgd or adamw.
    #[arg(long, value_enum, default_value = "sgd")]
    pub optimizer: OptimizerChoice,
    /// Learning-rate decay after the warmup: cosine, or step (/10 at 30%, 60%, 80%).
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: Decay,
    /// Epochs of linear warmup (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_epochs: f64,
    /// Seed of the model initialization, the synthetic data, the order and the augmentation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Batches prepared ahead on a background thread (0: in the training loop).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Where the run writes its checkpoints, metrics, config and plots; default runs/<timestamp>.
    #[arg(long)]
    pub artifact_dir: Option<PathBuf>,
    /// PyTorch weights (.pth/.pt/.safetensors, torchvision / timm layout) to start from; the
    /// classifier is re-initialized for the dataset's classes.
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    /// GPU indices for data-parallel training (e.g. 0,1); default: the one default device.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<usize>,
    /// Training images of the synthetic dataset.
    #[arg(long, default_value_t = 5000)]
    pub synthetic_train: usize,
    /// Validation images of the synthetic dataset.
    #[arg(long, default_value_t = 1000)]
    pub synthetic_valid: usize,
    /// Train on at most this many images (spread over the dataset).
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Validate on at most this many images (spread over the dataset).
    #[arg(long)]
    pub limit_valid: Option<usize>,
}

impl TrainOptions {
    /// The options with every default (the README's command).
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            options: TrainOptions,
        }
        <Wrapper as clap::Parser>::parse_from(["train"]).options
    }

    /// The learning rate for the actual batch: `lr * batch_size / 256`.
    pub fn scaled_lr(&self) -> f64 {
        self.lr * self.batch_size as f64 / 256.0
    }

    /// The model configuration for `num_classes` classes and images of `image_size`.
    pub fn model_config(
        &self,
        num_classes: usize,
        image_size: usize,
    ) -> Result<ResNetConfig, String> {
        let config = ResNetConfig::by_name(&self.model, num_classes).ok_or_else(|| {
            format!(
                "unknown --model {:?}: expected resnet18, resnet34, resnet50, resnet101 or resnet152",
                self.model
            )
        })?;
        let norm = match (self.norm, self.group_size) {
            (NormChoice::Gn, Some(size)) => Norm::GroupSize(size),
            (NormChoice::Gn, None) => Norm::Group {
                num_groups: self.groups,
            },
            (NormChoice::Bn, _) => Norm::Batch,
            (NormChoice::BurnGn, _) => Norm::BurnGroup,
        };
        let stem = match self.stem {
            Some(StemChoice::Imagenet) => Stem::ImageNet,
            Some(StemChoice::Cifar) => Stem::Cifar,
            None if image_size < 64 => Stem::Cifar,
            None => Stem::ImageNet,
        };
        let config = config
            .with_norm(norm)
            .with_stem(stem)
            .with_base_width(self.base_width);
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// Checks what the parser cannot.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--batch-size", self.batch_size),
            ("--epochs", self.epochs),
            ("--base-width", self.base_width),
            ("--groups", self.groups),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be at least 1, got 0"));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("--lr must be a positive number, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!(
                "--momentum must be in [0, 1), got {}",
                self.momentum
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(format!(
                "--weight-decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs.is_finite()) {
            return Err(format!(
                "--warmup-epochs must be >= 0, got {}",
                self.warmup_epochs
            ));
        }
        if let Some(0) = self.group_size {
            return Err("--group-size must be at least 1, got 0".into());
        }
        Ok(())
    }
}
