//! [`ResNetConfig`] and the choices it holds.

use burn::config::Config;
use burn::tensor::Device;

use super::ResNet;

/// The normalization layer after each convolution.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Norm {
    /// Group Normalization from `gn_module` (fused kernels; the ReLU that follows a norm is fused
    /// into it) with this many groups.
    Group {
        /// Groups per layer (32 in the paper).
        num_groups: usize,
    },
    /// Group Normalization from `gn_module` with this many channels per group.
    GroupSize(usize),
    /// Batch Normalization (burn's `BatchNorm`, PyTorch's momentum and epsilon).
    Batch,
    /// burn's own `burn::nn::GroupNorm` with 32 groups, for comparison.
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
    /// The number of groups for a layer of `channels` channels, for the group norms.
    ///
    /// Standard widths (multiples of 64) always get the requested count. A narrow layer whose
    /// channel count is not a multiple (small `base_width` for tests and small data) uses the
    /// largest count that divides it, `gcd(num_groups, channels)`, instead of failing.
    pub fn groups_for(&self, channels: usize) -> usize {
        match *self {
            Norm::Group { num_groups } => gcd(num_groups, channels),
            Norm::GroupSize(size) => channels / gcd(size, channels),
            Norm::BurnGroup => gcd(32, channels),
            Norm::Batch | Norm::Identity => 1,
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
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
/// ```rust,ignore
/// let model = ResNetConfig::resnet50(10)
///     .with_norm(Norm::Group { num_groups: 32 })
///     .with_stem(Stem::Cifar)
///     .with_base_width(64)
///     .with_zero_init_last(true)
///     .init(&device);
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

/// Why a [`ResNetConfig`] cannot build a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResNetConfigError {
    /// A size that must be at least 1 is 0.
    Zero(&'static str),
}

impl core::fmt::Display for ResNetConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ResNetConfigError::Zero(what) => {
                write!(f, "ResNetConfig: {what} must be at least 1, got 0")
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

    /// Checks the sizes.
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
            Norm::Group { num_groups: 0 } => Err(ResNetConfigError::Zero("num_groups")),
            Norm::GroupSize(0) => Err(ResNetConfigError::Zero("the group size")),
            _ => Ok(()),
        }
    }

    /// Builds the model, or says why the configuration is invalid.
    pub fn try_init(&self, device: &Device) -> Result<ResNet, ResNetConfigError> {
        self.validate()?;
        Ok(ResNet::new(self, device))
    }

    /// Builds the model.
    ///
    /// # Panics
    ///
    /// Panics with the [`ResNetConfigError`] message if the configuration is invalid.
    pub fn init(&self, device: &Device) -> ResNet {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }

    /// Channels at the output of the network (the classifier's input).
    pub fn feature_channels(&self) -> usize {
        8 * self.base_width * self.block.expansion()
    }
}
