//! [`ResNetConfig`] and the choices it holds.

use burn::config::Config;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::ResNet;

/// The normalization layer after each convolution.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Norm {
    /// Group Normalization from `gn_module` (fused kernels; the ReLU that follows a norm is fused
    /// into it) with this many groups. The count must divide the channels of every norm layer
    /// that has at least that many; a narrower layer gets one channel per group (see
    /// [`Norm::groups_for`]).
    Group {
        /// Groups per layer (32 in the paper).
        num_groups: usize,
    },
    /// Group Normalization from `gn_module` with this many channels per group. The size must
    /// divide the channels of every norm layer that has at least that many; a narrower layer
    /// is one group.
    GroupSize(usize),
    /// Batch Normalization (burn's `BatchNorm`, PyTorch's momentum and epsilon).
    Batch,
    /// burn's own `burn::nn::GroupNorm` with 32 groups, for comparison (the same rules as
    /// `Group { num_groups: 32 }`).
    BurnGroup,
    /// No normalization: every norm layer is removed (the ReLUs stay). Deep ResNets do not
    /// train well this way; it is the baseline that measures what normalization costs.
    Identity,
}

impl Default for Norm {
    fn default() -> Self {
        Norm::Group { num_groups: 32 }
    }
}

impl Norm {
    /// The groups burn's GroupNorm is built with ([`Norm::BurnGroup`]).
    pub const BURN_GROUPS: usize = 32;

    /// The number of groups of a norm layer of `channels` channels, or `None` when the
    /// requested count (or size) does not split them.
    ///
    /// - [`Norm::Group`] (and [`Norm::BurnGroup`], 32 groups): the requested count when it
    ///   divides `channels`. One rule for narrow layers: a layer with *fewer* channels than the
    ///   count (a small `base_width`) gets one channel per group, `channels` groups. A count
    ///   that is not above `channels` and does not divide them is `None`: nothing else is
    ///   substituted.
    /// - [`Norm::GroupSize`]: `channels / size` when the size divides `channels`; a layer with
    ///   fewer channels than the size is one group. Otherwise `None`.
    /// - [`Norm::Batch`] and [`Norm::Identity`] do not group channels: 1.
    ///
    /// A count or size of 0 is `None`.
    pub fn groups_for(&self, channels: usize) -> Option<usize> {
        match *self {
            Norm::Group { num_groups } => groups_by_count(num_groups, channels),
            Norm::BurnGroup => groups_by_count(Self::BURN_GROUPS, channels),
            Norm::GroupSize(size) => groups_by_size(size, channels),
            Norm::Batch | Norm::Identity => Some(1),
        }
    }

    /// Whether the layers are group norms (split into groups by [`groups_for`](Self::groups_for)).
    pub fn is_grouped(&self) -> bool {
        matches!(
            self,
            Norm::Group { .. } | Norm::GroupSize(_) | Norm::BurnGroup
        )
    }
}

fn groups_by_count(groups: usize, channels: usize) -> Option<usize> {
    if groups == 0 || channels == 0 {
        None
    } else if channels < groups {
        Some(channels)
    } else {
        channels.is_multiple_of(groups).then_some(groups)
    }
}

fn groups_by_size(size: usize, channels: usize) -> Option<usize> {
    if size == 0 || channels == 0 {
        None
    } else if channels < size {
        Some(1)
    } else {
        channels.is_multiple_of(size).then(|| channels / size)
    }
}

/// The divisors of `n` in increasing order.
fn divisors(n: usize) -> Vec<usize> {
    let (mut low, mut high) = (Vec::new(), Vec::new());
    let mut d = 1;
    while d <= n / d {
        if n.is_multiple_of(d) {
            low.push(d);
            if d != n / d {
                high.push(n / d);
            }
        }
        d += 1;
    }
    low.extend(high.into_iter().rev());
    low
}

/// The input stem.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Stem {
    /// 7x7 stride-2 convolution, norm, ReLU, 3x3 stride-2 max pool (ImageNet-size inputs).
    ImageNet,
    /// 3x3 stride-1 convolution, norm, ReLU, no pooling (32x32 inputs such as CIFAR).
    Cifar,
}

/// The residual block of a ResNet.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18 and -34), expansion 1.
    Basic,
    /// 1x1, 3x3 (carrying the stride, v1.5), 1x1 convolutions (ResNet-50 and deeper),
    /// expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels per unit of stage width.
    pub fn expansion(&self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// Configuration of a [`ResNet`].
///
/// ```rust
/// # use burn::tensor::{Device, Distribution, Tensor};
/// # use models::resnet::{Norm, ResNetConfig, Stem};
/// # let device = Device::flex();
/// let model = ResNetConfig::resnet18(10)
///     .with_norm(Norm::Group { num_groups: 8 })
///     .with_stem(Stem::Cifar)
///     .with_base_width(16)
///     .with_zero_init_last(true)
///     .init(&device);
/// let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
/// assert_eq!(model.forward(images).dims(), [2, 10]);
/// // A group count that does not divide a layer's channels is an error, not a substitution:
/// assert!(ResNetConfig::resnet18(10).with_norm(Norm::Group { num_groups: 3 }).validate().is_err());
/// ```
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// The residual block.
    pub block: BlockKind,
    /// Blocks in each of the four stages.
    pub layers: [usize; 4],
    /// Outputs of the classifier.
    pub num_classes: usize,
    /// The normalization layer. Default: `Norm::Group { num_groups: 32 }`.
    #[config(default = "Norm::Group { num_groups: 32 }")]
    pub norm: Norm,
    /// The input stem. Default: ImageNet.
    #[config(default = "Stem::ImageNet")]
    pub stem: Stem,
    /// Channels of the stem and of the first stage; the stages have 1, 2, 4 and 8 times this
    /// (times the block's expansion at their outputs). 64 is standard.
    #[config(default = 64)]
    pub base_width: usize,
    /// Initialize the scale (gamma) of the last norm of each residual branch to zero, so that
    /// every block starts as the identity (as the paper trains).
    #[config(default = true)]
    pub zero_init_last: bool,
    /// Epsilon of every norm layer.
    #[config(default = 1e-5)]
    pub norm_epsilon: f64,
}

/// The group count of the norm layers of one stage that have one channel count: what a group
/// norm actually splits, after [`Norm::groups_for`]'s rule for narrow layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageGroups {
    /// `stem`, `layer1`, `layer2`, `layer3` or `layer4`.
    pub stage: String,
    /// Channels of these layers.
    pub channels: usize,
    /// Groups they are split into.
    pub groups: usize,
}

/// Why a [`ResNetConfig`] cannot build a model.
#[derive(Debug, Clone, PartialEq)]
pub enum ResNetConfigError {
    /// A size that must be at least 1 is 0.
    Zero(&'static str),
    /// `norm_epsilon` is not a positive finite number.
    InvalidEpsilon(f64),
    /// A group norm's count (or size) does not split the channels of a norm layer.
    Groups {
        /// The norm asked for.
        norm: Norm,
        /// The first norm layer it does not fit, by module path (`bn1`, `layer1.0.bn2`,
        /// `layer2.0.downsample.norm`, ...).
        layer: String,
        /// That layer's channels.
        channels: usize,
        /// What would fit this layer: the divisors of `channels` (group counts, or group sizes
        /// for [`Norm::GroupSize`]).
        fit_layer: Vec<usize>,
        /// What would fit every norm layer of the network under [`Norm::groups_for`]'s rule,
        /// up to the widest layer's channels: group counts (sizes for [`Norm::GroupSize`]).
        fit_network: Vec<usize>,
    },
    /// The parameter tensors would not fit in memory's address space (the sizes overflow).
    TooLarge {
        /// The widest tensor: what its size is made of.
        what: String,
    },
}

/// `1, 2, 4, 8` (at most 24 values, then how many more).
fn list(values: &[usize]) -> String {
    const SHOWN: usize = 24;
    let mut text = values
        .iter()
        .take(SHOWN)
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if values.len() > SHOWN {
        text.push_str(&format!(" and {} more", values.len() - SHOWN));
    }
    text
}

impl core::fmt::Display for ResNetConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ResNetConfigError::Zero(what) => {
                write!(f, "ResNetConfig: {what} must be at least 1, got 0")
            }
            ResNetConfigError::InvalidEpsilon(epsilon) => write!(
                f,
                "ResNetConfig: norm_epsilon must be a positive finite number, got {epsilon}"
            ),
            ResNetConfigError::Groups {
                norm,
                layer,
                channels,
                fit_layer,
                fit_network,
            } => match norm {
                Norm::GroupSize(size) => write!(
                    f,
                    "ResNetConfig: groups of {size} channels do not divide the {channels} \
                     channels of norm layer {layer}; group sizes that divide {channels}: {}; \
                     sizes that fit every norm layer of this network: {} (a layer with fewer \
                     channels than the size is one group)",
                    list(fit_layer),
                    list(fit_network)
                ),
                Norm::BurnGroup => write!(
                    f,
                    "ResNetConfig: Norm::BurnGroup uses {} groups, which do not divide the \
                     {channels} channels of norm layer {layer}; use Norm::Group with a count \
                     that fits every norm layer of this network: {}",
                    Norm::BURN_GROUPS,
                    list(fit_network)
                ),
                _ => write!(
                    f,
                    "ResNetConfig: {} groups do not divide the {channels} channels of norm \
                     layer {layer}; group counts that divide {channels}: {}; counts that fit \
                     every norm layer of this network: {} (a layer with fewer channels than \
                     the count gets one channel per group)",
                    match norm {
                        Norm::Group { num_groups } => *num_groups,
                        _ => 0,
                    },
                    list(fit_layer),
                    list(fit_network)
                ),
            },
            ResNetConfigError::TooLarge { what } => {
                write!(f, "ResNetConfig: the network is too large to build: {what}")
            }
        }
    }
}

impl std::error::Error for ResNetConfigError {}

impl ResNetConfig {
    /// ResNet-18: basic blocks, [2, 2, 2, 2].
    pub fn resnet18(num_classes: usize) -> Self {
        Self::new(BlockKind::Basic, [2, 2, 2, 2], num_classes)
    }

    /// ResNet-34: basic blocks, [3, 4, 6, 3].
    pub fn resnet34(num_classes: usize) -> Self {
        Self::new(BlockKind::Basic, [3, 4, 6, 3], num_classes)
    }

    /// ResNet-50: bottleneck blocks, [3, 4, 6, 3].
    pub fn resnet50(num_classes: usize) -> Self {
        Self::new(BlockKind::Bottleneck, [3, 4, 6, 3], num_classes)
    }

    /// ResNet-101: bottleneck blocks, [3, 4, 23, 3].
    pub fn resnet101(num_classes: usize) -> Self {
        Self::new(BlockKind::Bottleneck, [3, 4, 23, 3], num_classes)
    }

    /// ResNet-152: bottleneck blocks, [3, 8, 36, 3].
    pub fn resnet152(num_classes: usize) -> Self {
        Self::new(BlockKind::Bottleneck, [3, 8, 36, 3], num_classes)
    }

    /// The configuration by name: `resnet18`, `resnet34`, `resnet50`, `resnet101` or
    /// `resnet152` (also without the `resnet` prefix).
    pub fn by_name(name: &str, num_classes: usize) -> Option<Self> {
        match name.trim_start_matches("resnet") {
            "18" => Some(Self::resnet18(num_classes)),
            "34" => Some(Self::resnet34(num_classes)),
            "50" => Some(Self::resnet50(num_classes)),
            "101" => Some(Self::resnet101(num_classes)),
            "152" => Some(Self::resnet152(num_classes)),
            _ => None,
        }
    }

    /// Checks everything [`init`](Self::init) needs: sizes of at least 1, a positive finite
    /// epsilon, tensor sizes that fit in memory's address space, and a group count (or size)
    /// that splits every norm layer (see [`Norm::groups_for`]).
    pub fn validate(&self) -> Result<(), ResNetConfigError> {
        if self.num_classes == 0 {
            return Err(ResNetConfigError::Zero("num_classes"));
        }
        if self.base_width == 0 {
            return Err(ResNetConfigError::Zero("base_width"));
        }
        if self.layers.contains(&0) {
            return Err(ResNetConfigError::Zero("the block count of every stage"));
        }
        match self.norm {
            Norm::Group { num_groups: 0 } => return Err(ResNetConfigError::Zero("num_groups")),
            Norm::GroupSize(0) => return Err(ResNetConfigError::Zero("the group size")),
            _ => {}
        }
        // Every norm builds with it (burn's BatchNorm and gn_module's GroupNorm panic on
        // anything else); it is checked for Identity too, which ignores it, so that a
        // configuration is valid or not whatever the norm.
        if !(self.norm_epsilon.is_finite() && self.norm_epsilon > 0.0) {
            return Err(ResNetConfigError::InvalidEpsilon(self.norm_epsilon));
        }
        self.check_sizes()?;
        self.norm_groups().map(|_| ())
    }

    /// The largest parameter tensors must have a byte size (at 8 bytes a value, f64) that
    /// fits in `isize`: past that, sizes wrap or allocation panics.
    fn check_sizes(&self) -> Result<(), ResNetConfigError> {
        let too_large = |what: String| ResNetConfigError::TooLarge { what };
        let top = self
            .base_width
            .checked_mul(8)
            .ok_or_else(|| too_large(format!("base_width {} times 8", self.base_width)))?;
        let features = top
            .checked_mul(self.block.expansion())
            .ok_or_else(|| too_large(format!("{top} channels times the block's expansion")))?;
        let fits = |values: Option<usize>| {
            values
                .and_then(|v| v.checked_mul(8))
                .is_some_and(|bytes| bytes <= isize::MAX as usize)
        };
        // The last stage's 3x3 convolution is the largest convolution of either block kind.
        if !fits(top.checked_mul(top).and_then(|v| v.checked_mul(9))) {
            return Err(too_large(format!(
                "a 3x3 convolution of {top} to {top} channels (base_width {})",
                self.base_width
            )));
        }
        if !fits(features.checked_mul(self.num_classes)) {
            return Err(too_large(format!(
                "a classifier of {features} features to {} classes",
                self.num_classes
            )));
        }
        Ok(())
    }

    /// The norm layers and their channels, by module path: the stem's, then those of the
    /// first two blocks of each stage (later blocks of a stage repeat the second's).
    fn norm_layer_channels(&self) -> Vec<(&'static str, String, usize)> {
        const STAGES: [&str; 4] = ["layer1", "layer2", "layer3", "layer4"];
        let mut layers = vec![("stem", "bn1".to_string(), self.base_width)];
        let expansion = self.block.expansion();
        let mut in_channels = self.base_width;
        for (index, stage) in STAGES.into_iter().enumerate() {
            let width = self.base_width << index;
            let out_channels = width * expansion;
            for block in 0..self.layers[index].min(2) {
                let name = |norm: &str| format!("{stage}.{block}.{norm}");
                layers.push((stage, name("bn1"), width));
                layers.push((stage, name("bn2"), width));
                if self.block == BlockKind::Bottleneck {
                    layers.push((stage, name("bn3"), out_channels));
                }
                let stride = if block == 0 && index > 0 { 2 } else { 1 };
                if stride != 1 || in_channels != out_channels {
                    layers.push((stage, name("downsample.norm"), out_channels));
                }
                in_channels = out_channels;
            }
        }
        layers
    }

    /// What the group norms split: for each stage (`stem`, `layer1`, ..., `layer4`) and each
    /// channel count of its norm layers, the number of groups. Empty for BatchNorm and no
    /// norm. The error names the first layer the count (or size) does not fit.
    pub fn norm_groups(&self) -> Result<Vec<StageGroups>, ResNetConfigError> {
        if !self.norm.is_grouped() {
            return Ok(Vec::new());
        }
        let layers = self.norm_layer_channels();
        let mut stages: Vec<StageGroups> = Vec::new();
        for (stage, layer, channels) in &layers {
            let Some(groups) = self.norm.groups_for(*channels) else {
                return Err(self.groups_error(layer, *channels, &layers));
            };
            let entry = StageGroups {
                stage: stage.to_string(),
                channels: *channels,
                groups,
            };
            if !stages.contains(&entry) {
                stages.push(entry);
            }
        }
        Ok(stages)
    }

    fn groups_error(
        &self,
        layer: &str,
        channels: usize,
        layers: &[(&'static str, String, usize)],
    ) -> ResNetConfigError {
        let widest = layers.iter().map(|l| l.2).max().unwrap_or(channels);
        // A value that fits every layer divides the widest layer or exceeds it.
        let fit_network = divisors(widest)
            .into_iter()
            .filter(|&value| {
                let norm = match self.norm {
                    Norm::GroupSize(_) => Norm::GroupSize(value),
                    _ => Norm::Group { num_groups: value },
                };
                layers.iter().all(|l| norm.groups_for(l.2).is_some())
            })
            .collect();
        ResNetConfigError::Groups {
            norm: self.norm,
            layer: layer.to_string(),
            channels,
            fit_layer: divisors(channels),
            fit_network,
        }
    }

    /// Builds the model, or says why the configuration is invalid: every configuration
    /// [`init`](Self::init) would panic on is an `Err` here.
    pub fn try_init(&self, device: &Device) -> Result<ResNet, ResNetConfigError> {
        self.validate()?;
        Ok(ResNet::new(self, device))
    }

    /// Builds the model.
    ///
    /// # Panics
    ///
    /// Panics with the [`ResNetConfigError`] message if the configuration is invalid; use
    /// [`try_init`](Self::try_init) to handle it.
    pub fn init(&self, device: &Device) -> ResNet {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }

    /// Channels at the output of the network (the classifier's input).
    pub fn feature_channels(&self) -> usize {
        8 * self.base_width * self.block.expansion()
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::*;
    use crate::resnet::NormLayer;

    #[test]
    fn groups_for_divides_or_says_none() {
        let group = |num_groups| Norm::Group { num_groups };
        assert_eq!(group(32).groups_for(64), Some(32));
        assert_eq!(group(32).groups_for(32), Some(32));
        // The one narrow-layer rule: fewer channels than groups, one channel per group.
        assert_eq!(group(32).groups_for(16), Some(16));
        assert_eq!(group(32).groups_for(24), Some(24));
        // No substitute for a count that does not divide.
        assert_eq!(group(48).groups_for(64), None);
        assert_eq!(group(3).groups_for(16), None);
        assert_eq!(group(0).groups_for(16), None);
        assert_eq!(Norm::BurnGroup.groups_for(48), None);
        assert_eq!(Norm::BurnGroup.groups_for(16), Some(16));
        assert_eq!(Norm::GroupSize(16).groups_for(64), Some(4));
        assert_eq!(Norm::GroupSize(16).groups_for(8), Some(1));
        assert_eq!(Norm::GroupSize(3).groups_for(16), None);
        assert_eq!(Norm::GroupSize(0).groups_for(16), None);
        assert_eq!(Norm::Batch.groups_for(7), Some(1));
        assert_eq!(Norm::Identity.groups_for(7), Some(1));
        assert_eq!(divisors(1), [1]);
        assert_eq!(divisors(16), [1, 2, 4, 8, 16]);
        assert_eq!(divisors(36), [1, 2, 3, 4, 6, 9, 12, 18, 36]);
    }

    /// `try_init` is an `Err` for each kind of invalid configuration, and `init` panics on
    /// exactly those.
    #[test]
    fn every_configuration_init_panics_on_is_an_error() {
        let device = Device::default();
        let small = || ResNetConfig::resnet18(10).with_base_width(8);
        let group = |num_groups| Norm::Group { num_groups };
        let cases: Vec<(&str, ResNetConfig)> = vec![
            ("epsilon 0", small().with_norm_epsilon(0.0)),
            ("epsilon < 0", small().with_norm_epsilon(-1e-5)),
            ("epsilon NaN", small().with_norm_epsilon(f64::NAN)),
            ("epsilon inf", small().with_norm_epsilon(f64::INFINITY)),
            (
                "BN epsilon 0",
                small().with_norm(Norm::Batch).with_norm_epsilon(0.0),
            ),
            (
                "burn GN epsilon NaN",
                small()
                    .with_norm(Norm::BurnGroup)
                    .with_norm_epsilon(f64::NAN),
            ),
            (
                "group size epsilon 0",
                small().with_norm(Norm::GroupSize(4)).with_norm_epsilon(0.0),
            ),
            ("zero classes", ResNetConfig::resnet18(0).with_base_width(8)),
            ("zero width", small().with_base_width(0)),
            (
                "empty stage",
                ResNetConfig::new(BlockKind::Basic, [2, 0, 2, 2], 10).with_base_width(8),
            ),
            ("zero groups", small().with_norm(group(0))),
            ("zero group size", small().with_norm(Norm::GroupSize(0))),
            ("3 groups", small().with_norm(group(3))),
            (
                "48 groups at width 64",
                ResNetConfig::resnet50(10).with_norm(group(48)),
            ),
            ("group size 3", small().with_norm(Norm::GroupSize(3))),
            (
                "burn GN at width 48",
                small().with_base_width(48).with_norm(Norm::BurnGroup),
            ),
            ("huge width", small().with_base_width(usize::MAX / 4)),
            (
                "huge classifier",
                ResNetConfig::resnet18(usize::MAX / 64).with_base_width(8),
            ),
        ];
        for (name, config) in cases {
            // As text: the epsilon errors hold NaN, which is not equal to itself.
            let err = config.try_init(&device).err().map(|e| e.to_string());
            assert!(err.is_some(), "{name}: try_init accepted it");
            assert_eq!(
                config.validate().err().map(|e| e.to_string()),
                err,
                "{name}"
            );
            let panicked = catch_unwind(AssertUnwindSafe(|| config.init(&device))).is_err();
            assert!(panicked, "{name}: init did not panic");
        }
        // And the valid neighbours build.
        for config in [
            small(),
            small().with_norm(Norm::Batch),
            small().with_norm(Norm::BurnGroup),
            small().with_norm(Norm::GroupSize(4)),
            small().with_norm(Norm::Identity),
            small().with_norm(group(32)),
        ] {
            config.try_init(&device).unwrap();
        }
    }

    #[test]
    fn group_errors_name_the_layer_and_what_fits() {
        let err = ResNetConfig::resnet18(10)
            .with_base_width(16)
            .with_norm(Norm::Group { num_groups: 3 })
            .validate()
            .unwrap_err();
        assert_eq!(
            err,
            ResNetConfigError::Groups {
                norm: Norm::Group { num_groups: 3 },
                layer: "bn1".into(),
                channels: 16,
                fit_layer: vec![1, 2, 4, 8, 16],
                fit_network: vec![1, 2, 4, 8, 16, 32, 64, 128],
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("3 groups do not divide the 16 channels of norm layer bn1"),
            "{message}"
        );
        assert!(message.contains("1, 2, 4, 8, 16, 32, 64, 128"), "{message}");

        // 48 groups: the 64 channels of the stem are not a multiple.
        let err = ResNetConfig::resnet50(10)
            .with_norm(Norm::Group { num_groups: 48 })
            .validate()
            .unwrap_err();
        match err {
            ResNetConfigError::Groups {
                layer,
                channels,
                fit_network,
                ..
            } => {
                assert_eq!((layer.as_str(), channels), ("bn1", 64));
                assert_eq!(
                    fit_network,
                    [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
                );
            }
            other => panic!("{other}"),
        }

        // 24 channels per group: the stem (8) and layer1's 8-channel layers are one group
        // each, layer1's 32-channel bn3 is not a multiple of 24.
        let err = ResNetConfig::resnet50(10)
            .with_base_width(8)
            .with_norm(Norm::GroupSize(24))
            .validate()
            .unwrap_err();
        match &err {
            ResNetConfigError::Groups {
                layer,
                channels,
                fit_layer,
                ..
            } => {
                assert_eq!((layer.as_str(), *channels), ("layer1.0.bn3", 32));
                assert_eq!(fit_layer, &[1, 2, 4, 8, 16, 32]);
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("groups of 24 channels"), "{err}");
    }

    #[test]
    fn norm_groups_per_stage() {
        let stages = |config: ResNetConfig| -> Vec<(String, usize, usize)> {
            config
                .norm_groups()
                .unwrap()
                .into_iter()
                .map(|s| (s.stage, s.channels, s.groups))
                .collect()
        };
        let expected = |rows: &[(&str, usize, usize)]| -> Vec<(String, usize, usize)> {
            rows.iter()
                .map(|&(s, c, g)| (s.to_string(), c, g))
                .collect()
        };
        assert_eq!(
            stages(ResNetConfig::resnet18(10).with_base_width(16)),
            expected(&[
                ("stem", 16, 16),
                ("layer1", 16, 16),
                ("layer2", 32, 32),
                ("layer3", 64, 32),
                ("layer4", 128, 32),
            ])
        );
        assert_eq!(
            stages(
                ResNetConfig::resnet50(10)
                    .with_base_width(8)
                    .with_norm(Norm::GroupSize(16))
            ),
            expected(&[
                ("stem", 8, 1),
                ("layer1", 8, 1),
                ("layer1", 32, 2),
                ("layer2", 16, 1),
                ("layer2", 64, 4),
                ("layer3", 32, 2),
                ("layer3", 128, 8),
                ("layer4", 64, 4),
                ("layer4", 256, 16),
            ])
        );
        assert!(
            ResNetConfig::resnet18(10)
                .with_norm(Norm::Batch)
                .norm_groups()
                .unwrap()
                .is_empty()
        );
    }

    /// `norm_groups` walks the layers as `ResNet::new` builds them.
    #[test]
    fn norm_groups_match_the_built_layers() {
        let device = Device::default();
        for config in [
            ResNetConfig::resnet18(10)
                .with_base_width(8)
                .with_norm(Norm::Group { num_groups: 16 }),
            ResNetConfig::new(BlockKind::Bottleneck, [3, 1, 2, 1], 10)
                .with_base_width(8)
                .with_norm(Norm::GroupSize(16)),
        ] {
            let model = config.init(&device);
            let mut built: Vec<StageGroups> = Vec::new();
            let mut add = |stage: &str, layer: &NormLayer| {
                let NormLayer::Group(gn) = layer else {
                    panic!("not a GroupNorm")
                };
                let entry = StageGroups {
                    stage: stage.into(),
                    channels: gn.num_channels,
                    groups: gn.num_groups,
                };
                if !built.contains(&entry) {
                    built.push(entry);
                }
            };
            add("stem", &model.bn1);
            for (stage, blocks) in [
                ("layer1", &model.layer1),
                ("layer2", &model.layer2),
                ("layer3", &model.layer3),
                ("layer4", &model.layer4),
            ] {
                for block in blocks {
                    add(stage, &block.bn1);
                    add(stage, &block.bn2);
                    if let Some(bn3) = &block.bn3 {
                        add(stage, bn3);
                    }
                    if let Some(ds) = &block.downsample {
                        add(stage, &ds.norm);
                    }
                }
            }
            assert_eq!(built, config.norm_groups().unwrap(), "{config:?}");
        }
    }
}
