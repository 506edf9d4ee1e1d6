//! [`TrainOptions`]: everything a training run is made of, as command-line options and as the
//! `config.json` of its artifact directory.

use std::path::PathBuf;

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
use clap::{Args, ValueEnum};
use models::resnet::{Norm, ResNetConfig, ResNetConfigError, Stem};
use serde::{Deserialize, Serialize};

use super::devices::DeviceSpec;
use super::schedule::Decay;
use crate::data::{Augmentation, DatasetKind};

fn default_flip_prob() -> f64 {
    Augmentation::FLIP_PROB
}

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
    /// Groups per GroupNorm layer (the paper's G = 32). It must divide the channels of every
    /// norm layer that has at least G; a layer with fewer channels (small --base-width) gets one
    /// channel per group. The groups of each stage are printed at the start and saved in
    /// config.json.
    #[arg(long, default_value_t = 32)]
    pub groups: usize,
    /// Channels per group instead of a group count (overrides --groups). It must divide the
    /// channels of every norm layer that has at least that many; a narrower layer is one group.
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
    /// Training epochs. With --resume it may be raised: the learning-rate schedule is then
    /// recomputed for the new total (see --resume).
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
    /// Probability of flipping each training image horizontally (0 to 1). Turn it off (0) for
    /// data whose classes are not mirror-symmetric: digits, text, many medical and
    /// remote-sensing sets.
    #[arg(long, default_value_t = Augmentation::FLIP_PROB)]
    #[serde(default = "default_flip_prob")]
    pub flip_prob: f64,
    /// Zero padding on each side of a training image before the random crop back to its size;
    /// default 1/8 of the side (4 pixels at 32x32); 0: no crop, no shift.
    #[arg(long)]
    #[serde(default)]
    pub crop_pad: Option<usize>,
    /// No augmentation at all: training images go to the network as validation images do
    /// (--flip-prob and --crop-pad are then ignored).
    #[arg(long)]
    #[serde(default)]
    pub no_augment: bool,
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
    /// Start from exactly these weights, classifier and BatchNorm statistics included
    /// (.safetensors/.pth in the torchvision layout `tools/torch_train_reference.py --save-init`
    /// writes; the same architecture and classes as this run): to train ours and the PyTorch
    /// mirror from the same initial weights. Not with --pretrained.
    #[arg(long, conflicts_with = "pretrained")]
    #[serde(default)]
    pub init_weights: Option<PathBuf>,
    /// Write the weights the run starts from to this .safetensors file (torchvision layout)
    /// before the first step: the mirror starts from them with --init-weights.
    #[arg(long)]
    #[serde(default)]
    pub save_init: Option<PathBuf>,
    /// GPUs to train on, e.g. 1 (that GPU alone) or 0,1 (data-parallel): CUDA device ordinals,
    /// or with wgpu/vulkan/metal the Nth discrete GPU; integrated:N, discrete:N and virtual:N
    /// select wgpu adapters by kind. Needs a GPU backend feature; BURN_DEVICE picks the backend
    /// when several are compiled in. Default: the default device.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<DeviceSpec>,
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

    /// The optimizer: SGD with momentum (no dampening, no Nesterov) and L2 weight decay on
    /// every parameter, or AdamW with decoupled weight decay.
    pub fn optimizer(&self) -> ModuleOptimizer {
        match self.optimizer {
            OptimizerChoice::Sgd => SgdConfig::new()
                .with_momentum(Some(
                    MomentumConfig::new()
                        .with_momentum(self.momentum)
                        .with_dampening(0.0),
                ))
                .with_weight_decay(Some(WeightDecayConfig::new(self.weight_decay as f32)))
                .init(),
            OptimizerChoice::Adamw => AdamWConfig::new()
                .with_weight_decay(self.weight_decay as f32)
                .with_epsilon(1e-8)
                .init(),
        }
    }

    /// Optimizer steps in one epoch of `train_len` images (the last batch may be short).
    pub fn steps_per_epoch(&self, train_len: usize) -> usize {
        train_len.div_ceil(self.batch_size)
    }

    /// The learning rate for the actual batch: `lr * batch_size / 256`.
    pub fn scaled_lr(&self) -> f64 {
        self.lr * self.batch_size as f64 / 256.0
    }

    /// The augmentation of training images of `image_size` (`None`: `--no-augment`).
    pub fn augmentation(&self, image_size: usize) -> Option<Augmentation> {
        (!self.no_augment).then(|| Augmentation {
            pad: self
                .crop_pad
                .unwrap_or_else(|| Augmentation::standard_pad(image_size)),
            flip_prob: self.flip_prob,
        })
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
        config.validate().map_err(|e| self.explain(&config, e))?;
        Ok(config)
    }

    /// The model's error in the options' terms.
    fn explain(&self, config: &ResNetConfig, err: ResNetConfigError) -> String {
        let ResNetConfigError::Groups {
            norm,
            layer,
            channels,
            fit_layer,
            fit_network,
        } = &err
        else {
            return err.to_string();
        };
        let list = |values: &[usize]| {
            values
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let network = format!("{} at --base-width {}", self.model, config.base_width);
        match norm {
            Norm::GroupSize(size) => format!(
                "--group-size {size} does not divide the {channels} channels of norm layer \
                 {layer}; sizes that divide {channels}: {}; sizes that fit every norm layer of \
                 {network}: {} (a layer with fewer channels than the size is one group)",
                list(fit_layer),
                list(fit_network)
            ),
            Norm::BurnGroup => format!(
                "--norm burn-gn uses burn's GroupNorm with {} groups, which do not divide the \
                 {channels} channels of norm layer {layer}; use --norm gn with --groups from: {}",
                Norm::BURN_GROUPS,
                list(fit_network)
            ),
            _ => format!(
                "--groups {} does not divide the {channels} channels of norm layer {layer}; \
                 counts that divide {channels}: {}; counts that fit every norm layer of \
                 {network}: {} (a layer with fewer channels than --groups gets one channel per \
                 group)",
                self.groups,
                list(fit_layer),
                list(fit_network)
            ),
        }
    }

    /// What differs between these options and `saved` (a run's `config.json`) that a resumed
    /// run cannot change: everything but a raised `epochs`, `workers` (it only sets how many
    /// batches are prepared ahead) and `artifact_dir` (the run may have been moved).
    pub fn differences_from(&self, saved: &TrainOptions) -> Vec<OptionDifference> {
        let (given, saved) = (fields(self), fields(saved));
        let mut differences = Vec::new();
        for (name, saved_value) in &saved {
            let given_value = given.get(name).unwrap_or(&serde_json::Value::Null);
            let allowed = match name.as_str() {
                "workers" | "artifact_dir" => true,
                "epochs" => given_value.as_u64() >= saved_value.as_u64(),
                _ => false,
            };
            if given_value != saved_value && !allowed {
                differences.push(OptionDifference {
                    option: format!("--{}", name.replace('_', "-")),
                    saved: show(saved_value),
                    given: show(given_value),
                });
            }
        }
        differences
    }

    /// These options with the fields named in `names` (their serde and clap names, such as
    /// `base_width`) taken from `given`; names that are not options are ignored. The `train`
    /// program resumes with the saved options and what was given on its command line.
    pub fn with_given<'a>(
        &self,
        given: &TrainOptions,
        names: impl IntoIterator<Item = &'a str>,
    ) -> TrainOptions {
        let mut merged = fields(self);
        let given = fields(given);
        for name in names {
            if let (Some(slot), Some(value)) = (merged.get_mut(name), given.get(name)) {
                *slot = value.clone();
            }
        }
        serde_json::from_value(serde_json::Value::Object(merged))
            .expect("fields of two TrainOptions make a TrainOptions")
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
        if !(0.0..=1.0).contains(&self.flip_prob) {
            return Err(format!(
                "--flip-prob must be a probability in [0, 1], got {}",
                self.flip_prob
            ));
        }
        if let Some(0) = self.group_size {
            return Err("--group-size must be at least 1, got 0".into());
        }
        if self.pretrained.is_some() && self.init_weights.is_some() {
            return Err(
                "--pretrained and --init-weights both give starting weights: pass one".into(),
            );
        }
        Ok(())
    }
}

/// An option a resumed run cannot change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionDifference {
    /// The option (`--base-width`), or what else differs.
    pub option: String,
    /// The value in `config.json`.
    pub saved: String,
    /// The value given.
    pub given: String,
}

fn fields(options: &TrainOptions) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(options).expect("TrainOptions serializes") {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("TrainOptions serializes to an object"),
    }
}

/// A value as it would be written on the command line.
fn show(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "(not set)".into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) if items.is_empty() => "(none)".into(),
        serde_json::Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut differences: Vec<OptionDifference>) -> Vec<(String, String, String)> {
        differences.sort_by(|a, b| a.option.cmp(&b.option));
        differences
            .into_iter()
            .map(|d| (d.option, d.saved, d.given))
            .collect()
    }

    #[test]
    fn resume_differences_name_the_option_and_both_values() {
        let saved = TrainOptions::defaults();
        let mut given = saved.clone();
        assert!(given.differences_from(&saved).is_empty());
        // What a resumed run may change.
        given.workers = 0;
        given.artifact_dir = Some("moved/run".into());
        given.epochs = saved.epochs + 4;
        assert!(given.differences_from(&saved).is_empty());

        given.base_width = 8;
        given.lr = 1.6;
        given.epochs = saved.epochs - 1;
        given.devices = vec![DeviceSpec::Gpu(1), DeviceSpec::Integrated(0)];
        given.group_size = Some(4);
        let expect = |option: &str, saved: &str, given: &str| {
            (option.to_string(), saved.to_string(), given.to_string())
        };
        assert_eq!(
            sorted(given.differences_from(&saved)),
            [
                expect("--base-width", "16", "8"),
                expect("--devices", "(none)", "1,integrated:0"),
                expect("--epochs", "6", "5"),
                expect("--group-size", "(not set)", "4"),
                expect("--lr", "0.8", "1.6"),
            ]
        );
    }

    #[test]
    fn with_given_takes_only_the_named_fields() {
        let saved = TrainOptions {
            base_width: 8,
            epochs: 3,
            ..TrainOptions::defaults()
        };
        // Parsed from a command line that gave --epochs 5 --lr 0.4: the rest are defaults.
        let given = TrainOptions {
            epochs: 5,
            lr: 0.4,
            ..TrainOptions::defaults()
        };
        let merged = saved.with_given(&given, ["epochs", "lr", "resume", "patience"]);
        assert_eq!(
            merged,
            TrainOptions {
                epochs: 5,
                lr: 0.4,
                ..saved.clone()
            }
        );
        assert_eq!(saved.with_given(&given, []), saved);
    }

    #[test]
    fn group_errors_speak_in_options() {
        let options = TrainOptions {
            groups: 3,
            ..TrainOptions::defaults()
        };
        let err = options.model_config(10, 32).unwrap_err();
        assert!(
            err.starts_with("--groups 3 does not divide the 16 channels of norm layer bn1"),
            "{err}"
        );
        assert!(
            err.contains("counts that divide 16: 1, 2, 4, 8, 16;"),
            "{err}"
        );
        assert!(
            err.contains(
                "every norm layer of resnet18 at --base-width 16: 1, 2, 4, 8, 16, 32, 64, 128"
            ),
            "{err}"
        );
        let options = TrainOptions {
            group_size: Some(3),
            ..TrainOptions::defaults()
        };
        let err = options.model_config(10, 32).unwrap_err();
        assert!(err.starts_with("--group-size 3 does not divide"), "{err}");
        let options = TrainOptions {
            norm: NormChoice::BurnGn,
            base_width: 48,
            ..TrainOptions::defaults()
        };
        let err = options.model_config(10, 32).unwrap_err();
        assert!(
            err.starts_with("--norm burn-gn uses burn's GroupNorm with 32 groups"),
            "{err}"
        );
        // The default (32 groups at width 16) is valid: the 16-channel layers get 16 groups.
        TrainOptions::defaults().model_config(10, 32).unwrap();
    }

    #[test]
    fn augmentation_options_make_the_augmentation() {
        let defaults = TrainOptions::defaults();
        // Today's behaviour by default: 1/8 of the side as padding, flips half the time.
        assert_eq!(
            defaults.augmentation(32),
            Some(Augmentation {
                pad: 4,
                flip_prob: 0.5
            })
        );
        assert_eq!(defaults.augmentation(64).unwrap().pad, 8);
        let options = TrainOptions {
            flip_prob: 0.0,
            crop_pad: Some(0),
            ..TrainOptions::defaults()
        };
        assert_eq!(
            options.augmentation(32),
            Some(Augmentation {
                pad: 0,
                flip_prob: 0.0
            })
        );
        let none = TrainOptions {
            no_augment: true,
            ..TrainOptions::defaults()
        };
        assert_eq!(none.augmentation(32), None);
        for bad in [-0.1, 1.5, f64::NAN] {
            let options = TrainOptions {
                flip_prob: bad,
                ..TrainOptions::defaults()
            };
            let err = options.validate().unwrap_err();
            assert!(
                err.starts_with("--flip-prob must be a probability"),
                "{err}"
            );
        }
    }

    #[test]
    fn augmentation_options_round_trip_through_config_json() {
        let options = TrainOptions {
            flip_prob: 0.25,
            crop_pad: Some(2),
            no_augment: true,
            ..TrainOptions::defaults()
        };
        let json = serde_json::to_string(&options).unwrap();
        let back: TrainOptions = serde_json::from_str(&json).unwrap();
        assert_eq!(back, options);
        // A config.json written before these options existed reads as today's augmentation.
        let mut old = fields(&TrainOptions::defaults());
        for name in ["flip_prob", "crop_pad", "no_augment"] {
            assert!(old.remove(name).is_some(), "{name}");
        }
        let old: TrainOptions = serde_json::from_value(serde_json::Value::Object(old)).unwrap();
        assert_eq!(old, TrainOptions::defaults());
        // A resumed run cannot change them.
        let saved = TrainOptions::defaults();
        assert_eq!(
            sorted(options.differences_from(&saved)),
            [
                ("--crop-pad".into(), "(not set)".into(), "2".into()),
                ("--flip-prob".into(), "0.5".into(), "0.25".into()),
                ("--no-augment".into(), "false".into(), "true".into()),
            ]
        );
    }
}
